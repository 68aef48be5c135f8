"""The server: the listener, a thread per connection, the connection cap, the watchdog, the drain.

``UserProfileServer`` accepts connections and runs each as a ``connection.Handler``
in its own thread. A watchdog thread enforces every connection phase's deadline
and renews the Date header. On SIGTERM the drain loses nothing (``begin_drain``,
``finish_drain``): readiness fails at once, the listener keeps accepting while
connections are open, every answer from then on closes its connection, an idle
connection is closed once it has idled DRAIN_IDLE_SECONDS, and at
SHUTDOWN_GRACE_SECONDS whatever is left is closed.
"""

from __future__ import annotations

import socket
import socketserver
import sys
import threading
import time
from pathlib import Path

from connection import BUSY, IDLE, Handler, Site, too_many_connections
from metrics import Metrics
from service import Service, TokenKeeper, log, where
from store import Store
from turns import Turn

OPENAPI = Path(__file__).resolve().parent / "openapi.json"  # openapi.yaml as JSON, served as it is
# The drain closes what is left this long before the grace period ends, so the process has
# exited by then (a kubelet's SIGKILL follows at terminationGracePeriodSeconds).
CLOSING_TIME = 0.5


class UserProfileServer(socketserver.ThreadingTCPServer):
    """A thread per connection, with a deep listen backlog, a connection cap, a deadline
    on every phase of a connection, metrics, and a drain that loses no request."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, store: Store, tokens: TokenKeeper, options, reuse_port: bool = False):
        self.options = options
        self.metrics = Metrics()
        self.service = Service(store, tokens, self.metrics, OPENAPI.read_bytes(), self.render_metrics, options)
        self.too_many = too_many_connections(self.service)
        # An embedded store's lookup is this process's CPU, not a wait, so its requests take
        # turns from routing to the first write of the answer: threads that all hold a request
        # would otherwise contend for the interpreter lock at each of its releases, and the
        # unlucky ones wait many rounds (bench/README.md has the figures). Reading a request,
        # and whatever the socket does not take at once, stay outside the turn: a slow client
        # never holds it. A network store's lookups wait on the network and must overlap.
        turn = Turn(patience=options.turn_patience) if store.serial else None
        self.site = Site(self.service, options, turn, sys.stdout if options.access_log else None)
        self.request_queue_size = options.backlog  # the standard library's 5 drops connections under load
        self.allow_reuse_port = reuse_port
        self.connections: dict[socket.socket, Handler | None] = {}  # dict ops are atomic under the GIL
        self.drain_deadline = float("inf")
        self._stopped = threading.Event()
        super().__init__(address, Handler)
        threading.Thread(target=self._watch, name="watchdog", daemon=True).start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def process_request(self, request, client_address):
        if len(self.connections) >= self.options.max_connections:
            self.metrics.connection_rejected()
            try:
                request.setblocking(False)
                request.send(self.too_many)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        self.connections[request] = None
        super().process_request(request, client_address)

    def close_request(self, request):
        self.connections.pop(request, None)
        super().close_request(request)

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if exc is not None:
            log(f"error: connection from {client_address[0]}: {type(exc).__name__}: {exc} at {where(exc)}")

    # -- the watchdog -------------------------------------------------------
    def _watch(self):
        options = self.options
        while not self._stopped.wait(options.watchdog_interval):
            self.site.tick()
            now = time.monotonic()
            # While draining, an idle connection whose idle deadline is before this has idled drain_idle.
            idled_out = now + options.idle_timeout - options.drain_idle if self.service.draining else -1.0
            for handler in list(self.connections.values()):
                if handler is None:
                    continue
                conversation = handler.conversation
                if conversation.phase != BUSY and conversation.deadline < now or (
                        conversation.phase == IDLE and conversation.deadline <= idled_out):
                    handler.expire()

    # -- the drain ----------------------------------------------------------
    def begin_drain(self, grace: float) -> None:
        """On SIGTERM; returns at once. serve_forever() returns once no connection is open."""
        if self.service.draining:
            return
        self.service.draining = True
        self.drain_deadline = time.monotonic() + grace - min(CLOSING_TIME, grace / 4)
        threading.Thread(target=self._wait_for_quiet, name="drain", daemon=True).start()

    def _wait_for_quiet(self) -> None:
        # Connections still open may be joined by more while balancers move clients away:
        # keep accepting (and answering with Connection: close) until there are none.
        while self.connections and time.monotonic() < self.drain_deadline:
            time.sleep(0.05)
        self.shutdown()

    def finish_drain(self, grace: float) -> None:
        """After serve_forever(): answer the connections still in the accept queue, close the
        listener, wait for open connections until the deadline, then close the rest."""
        if not self.service.draining:  # stopped before serving
            self.service.draining = True
            self.drain_deadline = time.monotonic() + grace - min(CLOSING_TIME, grace / 4)
        self.socket.setblocking(False)
        while True:
            try:
                request, client_address = self.socket.accept()
            except OSError:
                break
            request.setblocking(True)
            self.process_request(request, client_address)
        self.server_close()
        while self.connections and time.monotonic() < self.drain_deadline:
            time.sleep(0.05)
        if self.connections:
            log(f"shutdown: {len(self.connections)} connections still open after {grace:g}s; closing them")
            for handler in list(self.connections.values()):
                if handler is not None:
                    handler.expire()
            until = time.monotonic() + min(CLOSING_TIME, grace / 4)
            while self.connections and time.monotonic() < until:
                time.sleep(0.01)
        self._stopped.set()

    # -- reporting ----------------------------------------------------------
    def render_metrics(self) -> bytes:
        handlers = list(self.connections.values())
        in_flight = sum(1 for h in handlers if h is not None and h.conversation.phase != IDLE)
        return self.metrics.render(len(handlers), in_flight, self.service.store.counters())
