#!/usr/bin/env python3
"""userprofile-service: user-profile lookups over HTTP, in front of Couchbase.

This is the entry point: start-up (signals, the store, the token, the server)
and, with WORKERS above 1, the processes sharing the port. The other modules, by job:
the README's design section (tests/test_readme.py keeps it naming every one).

Stored documents arrive as bytes and leave as bytes, never decoded and re-encoded.
"""

from __future__ import annotations

import io
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

import auth
import settings
from logs import log
from metricsport import MetricsServer
from options import Options
from server import UserProfileServer
from service import TokenKeeper
from stores import open_store
from tracecontext import Traces


def raise_fd_limit() -> None:
    """Each connection is a file descriptor: allow as many as the hard limit does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def traces_for(options: Options) -> Traces:
    """``Traces``, or with an OTLP endpoint configured ``otelexport.Exporting``, which needs the
    optional OpenTelemetry packages (requirements-tracing.txt)."""
    endpoint = options.otel_traces_endpoint or options.otel_endpoint
    if not endpoint or options.otel_sdk_disabled:
        return Traces()
    try:
        import otelexport  # only now: a service that does not export loads no OpenTelemetry module
    except ImportError as exc:
        log(
            f"traces: export to {endpoint} is configured, but OpenTelemetry is not installed ({exc}): "
            "pip install -r requirements-tracing.txt, or unset OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        raise SystemExit(2) from None
    return otelexport.Exporting(options)


def serve(options: Options, reuse_port: bool = False) -> int:
    """Run one server process until SIGTERM or SIGINT; exit 0 after draining."""
    # The handlers come first: as PID 1 in a container, a SIGTERM that arrives before
    # them is dropped by the kernel, and the pod would wait for its SIGKILL.
    server: UserProfileServer | None = None
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        log(f"{signal.Signals(signum).name}: draining: not ready, every answer closes its connection")
        stopping.set()
        if server is not None:
            server.begin_drain(options.shutdown_grace)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    raise_fd_limit()
    if options.access_log and isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    traces = traces_for(options)  # in each worker: the exporter's thread does not survive a fork
    store = open_store(options, traces.store_tracing())
    tokens = TokenKeeper(store, options.token_refresh)
    if options.auth_mode != auth.JWT:  # in jwt mode the static token is not accepted, so not read
        tokens.read()
        tokens.start()
    verifier = auth.verifier(options)  # None in token mode: PyJWT is not even imported
    try:
        server = UserProfileServer(
            (options.host, options.port), store, tokens, options, reuse_port, verifier=verifier, traces=traces
        )
    except OSError as exc:
        log(f"cannot listen on {options.host}:{options.port}: {exc}")
        return 1
    if verifier is not None:
        verifier.keys.start()  # fetched in the background: /readyz says 503 until the first key set
    metrics_server = None
    if options.metrics_port is not None:  # /metrics on its own port (metricsport.py), not on the service's
        try:
            metrics_server = MetricsServer((options.host, options.metrics_port), server.metrics.render, reuse_port)
        except OSError as exc:
            log(f"cannot listen on {options.host}:{options.metrics_port} (METRICS_PORT): {exc}")
            server.server_close()
            return 1
        metrics_server.start()
    if not stopping.is_set():  # else stopped during start-up
        metrics = f"; /metrics on port {metrics_server.server_port}" if metrics_server else ""
        log(f"serving on http://{options.host}:{server.port} (pid {os.getpid()}, store: {store}{metrics})")
        server.serve_forever(poll_interval=0.5)  # until the drain has no connection left
    server.finish_drain(options.shutdown_grace)
    if verifier is not None:
        verifier.keys.stop()
    if metrics_server is not None:
        metrics_server.stop()
    tokens.stop()
    store.close()
    traces.close()
    log("stopped")
    return 0


def serve_workers(options: Options) -> int:
    """N processes on one port (SO_REUSEPORT): the kernel spreads connections.
    Each opens its own store after the fork; the parent only supervises."""
    children: set[int] = set()
    stopping = False
    started = [0.0]
    exit_code = 0

    def spawn() -> None:
        started[0] = time.monotonic()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = serve(options, reuse_port=True)
            finally:
                os._exit(code)
        children.add(pid)

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(options.workers):
        spawn()
    while children:
        pid, status = os.wait()
        children.discard(pid)
        if stopping:
            continue
        code = os.waitstatus_to_exitcode(status)
        if code != 0 and time.monotonic() - started[0] < 5:
            log(f"worker {pid} failed at start-up ({code}); stopping")  # e.g. the port is taken
            stop(signal.SIGTERM, None)
            exit_code = 1
            continue
        log(f"worker {pid} exited ({code}); starting another")
        time.sleep(1)
        spawn()
    return exit_code


def main(argv: Sequence[str] | None = None) -> int:
    options = settings.load(argv)
    problem = auth.config_problem(options)
    if problem is not None:
        log(f"cannot start: {problem}")
        return 2
    return serve_workers(options) if options.workers > 1 else serve(options)


if __name__ == "__main__":
    code = main()
    # Out without the interpreter's finalization, as a forked worker leaves: a SIGTERM
    # during start-up can leave the Couchbase SDK's connection attempt running in its
    # C++ core, and finalizing around it can abort the process (SIGABRT, not exit 0).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
