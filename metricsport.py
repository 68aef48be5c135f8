"""`/metrics` on a port of its own (METRICS_PORT), so that a NetworkPolicy can let every client reach
the service port and only the scraper reach the metrics (k8s/base/networkpolicy.yaml).

A plain ``http.server``: a scrape is one small GET every few seconds, from one client, and never on
the service's request path. The exposition is the service's own (``metrics.Metrics.render``),
rendered when asked. Idle or slow connections are closed after ``TIMEOUT`` seconds, so nothing holds
a thread for long. Without METRICS_PORT, `/metrics` stays on the service port (routes.py).
"""

from __future__ import annotations

import http.server
import socketserver
import threading
from collections.abc import Callable

from service import TEXT_METRICS

TIMEOUT = 10.0  # seconds a connection may idle, or take to send a request or read an answer


class MetricsHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Prometheus scrapes
    timeout = TIMEOUT
    server: MetricsServer

    def do_GET(self) -> None:
        if self.path.partition("?")[0] != "/metrics":
            self.send_error(404)
            return
        body = self.server.render()
        self.send_response(200)
        self.send_header("Content-Type", TEXT_METRICS.decode())
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a scrape every few seconds is not worth a log line (errors are answered, not raised)."""


class MetricsServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], render: Callable[[], bytes], reuse_port: bool = False) -> None:
        self.render = render
        self.allow_reuse_port = reuse_port  # WORKERS above 1: each process answers with its own counters
        super().__init__(address, MetricsHandler)

    def server_bind(self) -> None:
        # TCPServer's bind without HTTPServer's reverse DNS lookup of the address (as server.py does).
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def start(self) -> MetricsServer:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.5}, name="metrics", daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
