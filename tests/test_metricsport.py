"""METRICS_PORT: /metrics answered on its own port alone, with the service's own counts, over real
sockets (k8s/base/networkpolicy.yaml lets only the scraper's namespace reach that port)."""

from __future__ import annotations

import http.client
import socket
import time

import pytest
from conftest import TOKEN

from testkit import ServiceProcess, free_port, wait_until

pytestmark = pytest.mark.socket


@pytest.fixture
def split(seeded_db, tmp_path):
    """The service with /metrics on a port of its own, and that port."""
    port = free_port()
    env = {"USERPROFILE_DB": str(seeded_db), "METRICS_PORT": str(port)}
    svc = ServiceProcess(env, log_path=tmp_path / "service.log").start(wait_for="/readyz")
    yield svc, port
    assert svc.stop() == 0
    assert "Traceback" not in svc.log() and TOKEN not in svc.log()


def scrape(port: int, path: str = "/metrics") -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


ID_200 = 'userprofile_requests_total{route="/api/v1/id",status="200"} '


def count_200(body: bytes) -> float:
    lines = [line for line in body.decode().splitlines() if line.startswith(ID_200)]
    return float(lines[0].split()[-1]) if lines else 0.0


def test_metrics_are_on_their_port_alone_and_count_the_service(split):
    svc, port = split
    status, _, body = svc.get("/metrics")
    assert status == 404, "the service port must not answer /metrics when METRICS_PORT is set"
    assert scrape(port, "/api/v1/id/1")[0] == 404 and scrape(port, "/healthz")[0] == 404
    for _ in range(3):
        assert svc.get("/api/v1/id/1", token=TOKEN)[0] == 200
    assert wait_until(lambda: count_200(scrape(port)[2]) == 3, 5), scrape(port)[2].decode()[:2000]
    status, headers, body = scrape(port)
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert headers["Cache-Control"] == "no-store" and int(headers["Content-Length"]) == len(body)
    assert b"userprofile_build_info{" in body and b"process_open_fds " in body
    assert f"/metrics on port {port}" in svc.log()


def test_an_idle_scraper_connection_is_closed_and_the_port_keeps_answering(split):
    """A connection that sends nothing is let go (metricsport.TIMEOUT), never holding the port."""
    _, port = split
    idle = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        started = time.monotonic()
        assert scrape(port)[0] == 200, "another scrape waits for no idle connection"
        assert idle.recv(1) == b"", "the idle connection was answered rather than closed"
        assert time.monotonic() - started < 20
    finally:
        idle.close()


def test_a_taken_metrics_port_stops_the_start_with_its_name(seeded_db, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        svc = ServiceProcess({"USERPROFILE_DB": str(seeded_db), "METRICS_PORT": str(port)}, log_path=tmp_path / "s.log")
        with pytest.raises(RuntimeError, match="METRICS_PORT"):
            svc.start()
        assert svc.proc is not None and svc.proc.wait(10) == 1
