"""GET /metrics, read with Prometheus' own parser, moves exactly as requests are made.

The service counts a request just after writing its answer, so a scrape that races the
last answer may not see it yet: scrapes poll briefly until the expected count arrives,
and then the count must be exact (never more).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import sqlite3
import time

import pytest
from conftest import TOKEN
from prometheus_client.parser import text_string_to_metric_families

import buildinfo
from testkit import LAYOUT, ServiceProcess

pytestmark = pytest.mark.socket

ID = "/api/v1/id"
FAMILIES = {  # family name as the parser gives it (counters lose _total) -> type
    "userprofile_requests": "counter",
    "userprofile_request_duration_seconds": "histogram",
    "userprofile_requests_in_flight": "gauge",
    "userprofile_store_errors": "counter",
    "userprofile_build_info": "gauge",
    "process_cpu_seconds": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_start_time_seconds": "gauge",
}


class Scrape:
    def __init__(self, svc: ServiceProcess):
        status, headers, body = svc.get("/metrics")  # no token: scrapers have none
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain")
        self.types = {}
        self.samples: dict[tuple[str, tuple], float] = {}
        for family in text_string_to_metric_families(body.decode()):
            self.types[family.name] = family.type
            for s in family.samples:
                self.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def get(self, name: str, **labels) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def requests(self, route: str, status: int) -> float:
        return self.get("userprofile_requests_total", route=route, status=str(status))

    def by_status(self, status: int) -> float:
        """Requests answered with this status, on every route."""
        return sum(
            v
            for (n, lbl), v in self.samples.items()
            if n == "userprofile_requests_total" and dict(lbl)["status"] == str(status)
        )

    def labels(self, name: str) -> list[dict]:
        return [dict(lbl) for (n, lbl) in self.samples if n == name]


def settle(svc: ServiceProcess, done, timeout: float = 3.0) -> Scrape:
    """Scrape until done(scrape) holds (the last answers are counted), or give the last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        now = Scrape(svc)
        if done(now) or time.monotonic() > deadline:
            return now
        time.sleep(0.02)


def test_exposition_has_the_documented_families(server):
    scrape = Scrape(server)
    for name, kind in FAMILIES.items():
        assert scrape.types.get(name) == kind, f"{name}: {scrape.types.get(name)}"
    kinds = {lbl["kind"] for lbl in scrape.labels("userprofile_store_errors_total")}
    assert kinds >= {"unavailable", "timeout"}


def test_request_counts_move_by_route_and_status(server):
    nickname = json.loads(server.get(f"{ID}/1", TOKEN)[2])[0]["nickname"]
    before = Scrape(server)
    plan = [  # (path, token, method, route label, status)
        *[(f"{ID}/{i}", TOKEN, "GET", ID, 200) for i in (1, 2, 3, 4, 5)],
        *[(f"{ID}/{i}", TOKEN, "GET", ID, 404) for i in (987654, 987655, 987656)],  # no such id
        (f"{ID}/1", None, "GET", ID, 401),
        (f"{ID}/2", "not-the-token", "GET", ID, 401),
        (f"/api/v1/nickname/{nickname}", TOKEN, "GET", "/api/v1/nickname", 200),
        ("/no/such/route/424242", TOKEN, "GET", "other", 404),
        ("/healthz", None, "GET", "/healthz", 200),
    ]
    expected: dict[tuple[str, int], int] = {}
    for path, token, method, route, status in plan:
        assert server.get(path, token, method=method)[0] == status, path
        expected[(route, status)] = expected.get((route, status), 0) + 1

    def delta(scrape, route, status):
        return scrape.requests(route, status) - before.requests(route, status)

    after = settle(server, lambda s: all(delta(s, r, st) >= n for (r, st), n in expected.items()))
    for (route, status), n in expected.items():
        assert delta(after, route, status) == n, (route, status)
    # Another method on a route is counted too, as a 405 (under whichever route label it gets).
    assert server.get(f"{ID}/1", TOKEN, method="DELETE")[0] == 405
    settled = settle(server, lambda s: s.by_status(405) > before.by_status(405))
    assert settled.by_status(405) == before.by_status(405) + 1
    # Route labels are the route, never the requested value: the label set stays bounded.
    for lbl in after.labels("userprofile_requests_total"):
        assert not any(v in lbl["route"] for v in ("987654", "424242", nickname)), lbl


def test_latency_histogram_counts_every_request(server):
    before = Scrape(server)
    for i in range(1, 11):
        assert server.get(f"{ID}/{i}", TOKEN)[0] == 200
    count = "userprofile_request_duration_seconds_count"
    after = settle(server, lambda s: s.get(count, route=ID) - before.get(count, route=ID) >= 10)
    assert after.get(count, route=ID) - before.get(count, route=ID) == 10
    # Every answer on the route is in the histogram, whatever its status.
    total = sum(
        v for (n, lbl), v in after.samples.items() if n == "userprofile_requests_total" and dict(lbl)["route"] == ID
    )
    assert after.get(count, route=ID) == total
    assert after.get("userprofile_request_duration_seconds_sum", route=ID) > before.get(
        "userprofile_request_duration_seconds_sum", route=ID
    )
    buckets = sorted(
        (
            (float(dict(lbl)["le"]), v)
            for (n, lbl), v in after.samples.items()
            if n == "userprofile_request_duration_seconds_bucket" and dict(lbl)["route"] == ID
        )
    )
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), "buckets are cumulative"
    assert buckets[-1] == (float("inf"), after.get(count, route=ID))


def test_in_flight_gauge_follows_a_request(server):
    gauge = "userprofile_requests_in_flight"
    idle = Scrape(server).get(gauge)  # the scrape itself is in flight while it renders
    assert idle >= 1
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(f"GET {ID}/1 HTTP/1.1\r\nHost: test\r\n".encode())  # headers not finished
        assert settle(server, lambda s: s.get(gauge) == idle + 1).get(gauge) == idle + 1
        sock.sendall(f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200")
    assert settle(server, lambda s: s.get(gauge) == idle).get(gauge) == idle


def test_store_errors_are_counted(seeded_db, tmp_path):
    """A lookup the store cannot answer is a 503 (or 504) and one store error; then it recovers."""
    db = tmp_path / "broken.db"
    shutil.copy(seeded_db, db)
    svc = ServiceProcess({"USERPROFILE_DB": str(db)}, log_path=tmp_path / "service.log").start("/readyz")
    try:
        before = Scrape(svc)
        # Take the profiles away from under the running service (another process, as a fault would).
        admin = sqlite3.connect(db, isolation_level=None)
        admin.execute(f"ALTER TABLE {LAYOUT.profiles} RENAME TO {LAYOUT.profiles}_away")
        try:
            assert svc.get(f"{ID}/1", TOKEN)[0] in (503, 504)
        finally:
            admin.execute(f"ALTER TABLE {LAYOUT.profiles}_away RENAME TO {LAYOUT.profiles}")
            admin.close()

        def failed(scrape):
            return sum(scrape.requests(ID, code) - before.requests(ID, code) for code in (503, 504))

        def store_errors(scrape):
            name = "userprofile_store_errors_total"
            kinds = ("unavailable", "timeout")
            return sum(scrape.get(name, kind=k) - before.get(name, kind=k) for k in kinds)

        after = settle(svc, lambda s: failed(s) >= 1)
        assert failed(after) == 1
        assert store_errors(after) == 1
        # It recovers by itself once the store answers again.
        assert svc.get(f"{ID}/1", TOKEN)[0] == 200
    finally:
        assert svc.stop() == 0
    assert TOKEN not in svc.log()


def test_process_metrics_describe_the_service_process(server):
    """The names Prometheus client libraries give them, with the values /proc has for the service's pid."""
    pid = server.proc.pid
    before = Scrape(server)
    for _ in range(300):  # some work, so its CPU seconds move
        server.get("/api/v1/id/1", token=TOKEN)
    after = Scrape(server)
    with open(f"/proc/{pid}/statm") as statm:
        resident = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    assert 0.5 * resident < after.get("process_resident_memory_bytes") < 2 * resident
    assert 3 <= after.get("process_open_fds") <= len(os.listdir(f"/proc/{pid}/fd")) + 5
    assert after.get("process_max_fds") == resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # raised to the hard limit
    started = os.stat(f"/proc/{pid}").st_mtime  # /proc/<pid> is made when the process starts
    assert abs(after.get("process_start_time_seconds") - started) < 5
    assert before.get("process_start_time_seconds") == after.get("process_start_time_seconds")
    assert 0 < before.get("process_cpu_seconds_total") < after.get("process_cpu_seconds_total")
    (info,) = after.labels("userprofile_build_info")
    assert info["version"] == buildinfo.VERSION and after.get("userprofile_build_info", **info) == 1
