"""The server: the listener, a thread per connection, the connection cap, the watchdog, the drain.

``UserProfileServer``, an ``http.server.ThreadingHTTPServer``, accepts connections and runs
each as a ``connection.Handler`` in its own thread. ``Connections`` holds the open ones and
the rules over them, without a socket: the cap, the watchdog's sweep, which ends every phase
past its deadline (``Conversation.overdue``), and the drain, whose flag the service reads
(``service.Drain``) and whose deadline it keeps. On SIGTERM the drain
loses nothing (``begin_drain``, ``finish_drain``): readiness fails at once, the listener
keeps accepting while connections are open, every answer from then on closes its
connection, an idle connection is closed once it has idled DRAIN_IDLE_SECONDS, and at
SHUTDOWN_GRACE_SECONDS whatever is left is closed.
"""

from __future__ import annotations

import http.server
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from connection import IDLE, Conversation, Handler, Site, too_many_connections
from logs import log
from metrics import Metrics
from options import Options
from service import Service, TokenKeeper, where
from store import Store
from tracecontext import Traces
from turns import Turn

if TYPE_CHECKING:
    from accesstoken import Verifier

OPENAPI = Path(__file__).resolve().parent / "openapi.json"  # openapi.yaml as JSON, served as it is
# The drain closes what is left this long before the grace period ends, so the process has
# exited by then (a kubelet's SIGKILL follows at terminationGracePeriodSeconds).
CLOSING_TIME = 0.5


class Connected(Protocol):
    """What the rules need of a connection's handler (``connection.Handler``)."""

    conversation: Conversation

    def expire(self) -> None: ...


class Connections:
    """The open connections, by socket, and the rules over them, without a socket: the cap,
    the watchdog's sweep and the drain's deadline, on a clock of its own (tests/test_server.py)."""

    def __init__(self, options: Options, clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options
        self.clock = clock
        self.open: dict[Any, Connected | None] = {}  # None until its thread starts; dict ops are atomic under the GIL
        self.draining = False  # set on SIGTERM (begin_drain), for good
        self.drain_deadline = float("inf")

    def __len__(self) -> int:
        return len(self.open)

    def admit(self, sock: Any) -> bool:
        """Count a new connection in, unless the cap is reached (then it gets a 503 and is closed)."""
        if len(self.open) >= self.options.max_connections:
            return False
        self.open[sock] = None
        return True

    def started(self, sock: Any, handler: Connected) -> None:
        self.open[sock] = handler

    def closed(self, sock: Any) -> None:
        self.open.pop(sock, None)

    def handlers(self) -> list[Connected]:
        return [handler for handler in list(self.open.values()) if handler is not None]

    def sweep(self) -> None:
        """The watchdog's round: end each connection past its phase's deadline, and, while
        draining, each one idle DRAIN_IDLE_SECONDS."""
        now = self.clock()
        # An idle connection whose idle deadline is before this has idled drain_idle.
        idled_out = now + self.options.idle_timeout - self.options.drain_idle if self.draining else -1.0
        for handler in self.handlers():
            if handler.conversation.overdue(now, idled_out):
                handler.expire()

    def begin_drain(self, grace: float) -> None:
        self.draining = True
        self.drain_deadline = self.clock() + grace - min(CLOSING_TIME, grace / 4)

    def quiet(self) -> bool:
        """The drain can end: no connection is open, or its deadline has passed."""
        return not self.open or self.clock() >= self.drain_deadline

    def in_flight(self) -> int:
        return sum(1 for handler in self.handlers() if handler.conversation.phase != IDLE)


class UserProfileServer(http.server.ThreadingHTTPServer):
    """A thread per connection, with a deep listen backlog, a connection cap, a deadline
    on every phase of a connection, metrics, and a drain that loses no request."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        store: Store,
        tokens: TokenKeeper,
        options: Options,
        reuse_port: bool = False,
        verifier: Verifier | None = None,
        traces: Traces | None = None,
    ) -> None:
        self.options = options
        self.connections = Connections(options)
        self.metrics = Metrics(self.connections, store)
        self.service = Service(
            store, tokens, self.metrics, OPENAPI.read_bytes(), options, verifier=verifier, drain=self.connections
        )
        # An embedded store's lookup is this process's CPU, not a wait, so its requests take
        # turns from routing to the first write of the answer: threads that all hold a request
        # would otherwise contend for the interpreter lock at each of its releases, and the
        # unlucky ones wait many rounds (docs/decisions/2026-11-27-turns.md has the figures). Reading a request,
        # and whatever the socket does not take at once, stay outside the turn: a slow client
        # never holds it. A network store's lookups wait on the network and must overlap.
        turn = Turn(patience=options.turn_patience) if store.serial else None
        self.site = Site(self.service, options, turn, sys.stdout if options.access_log else None, traces)
        self.request_queue_size = options.backlog  # the standard library's 5 drops connections under load
        self.allow_reuse_port = reuse_port
        self._stopped = threading.Event()
        super().__init__(address, Handler)
        threading.Thread(target=self._watch, name="watchdog", daemon=True).start()

    def server_bind(self) -> None:
        # TCPServer's bind without HTTPServer's getfqdn(): a reverse DNS lookup, seconds at
        # start-up where DNS is slow, for a name only http.server's own CGI handlers use.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    @property
    def port(self) -> int:
        return self.server_port

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.connections.admit(request):
            self.metrics.connection_rejected()
            try:
                request.setblocking(False)
                request.send(too_many_connections(self.site))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def close_request(self, request: Any) -> None:
        self.connections.closed(request)
        super().close_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if exc is not None:
            log(f"error: connection from {client_address[0]}: {type(exc).__name__}: {exc} at {where(exc)}")

    def _watch(self) -> None:
        while not self._stopped.wait(self.options.watchdog_interval):
            self.site.tick()
            self.connections.sweep()

    # -- the drain ----------------------------------------------------------
    def begin_drain(self, grace: float) -> None:
        """On SIGTERM; returns at once. serve_forever() returns once no connection is open."""
        if self.connections.draining:
            return
        self.connections.begin_drain(grace)
        threading.Thread(target=self._wait_for_quiet, name="drain", daemon=True).start()

    def _wait_for_quiet(self) -> None:
        # Connections still open may be joined by more while balancers move clients away:
        # keep accepting (and answering with Connection: close) until there are none.
        while not self.connections.quiet():
            time.sleep(0.05)
        self.shutdown()

    def finish_drain(self, grace: float) -> None:
        """After serve_forever(): answer the connections still in the accept queue, close the
        listener, wait for open connections until the deadline, then close the rest."""
        if not self.connections.draining:  # stopped before serving
            self.connections.begin_drain(grace)
        self.socket.setblocking(False)
        while True:
            try:
                request, client_address = self.socket.accept()
            except OSError:
                break
            request.setblocking(True)
            self.process_request(request, client_address)
        self.server_close()
        while not self.connections.quiet():
            time.sleep(0.05)
        if self.connections:
            log(f"shutdown: {len(self.connections)} connections still open after {grace:g}s; closing them")
            for handler in self.connections.handlers():
                handler.expire()
            until = time.monotonic() + min(CLOSING_TIME, grace / 4)
            while self.connections and time.monotonic() < until:
                time.sleep(0.01)
        self._stopped.set()
