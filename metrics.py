"""Prometheus text exposition for the service, without a client library.

One lock guards the counters: it is taken once per request, for a few
dictionary updates, and keeps the counts exact (a lost increment would make
the metrics disagree with what a load generator sent). The gauges of the open
connections and the store's own counters are read from their owners when
scraped (``Metrics(connections, store)``), never pushed on the request path.
"""

from __future__ import annotations

import bisect
import os
import resource
import threading
from pathlib import Path
from typing import Protocol

import buildinfo
from connection import DEADLINES

# Request latency bucket bounds, in seconds.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# What a store counts (Store.counters), as /metrics explains it.
STORE_COUNTERS = {
    "replica_reads": "Key-value lookups answered from a replica copy (its active copy did not answer in time,"
    " or its node was lost); such an answer may be stale by the replication lag.",
}


def empty_histogram() -> list:
    """Requests in each latency bucket, then above the last bound, then the sum of seconds."""
    return [0] * (len(BUCKETS) + 1) + [0.0]


class Gauged(Protocol):
    """The open connections (``server.Connections``)."""

    def __len__(self) -> int: ...

    def in_flight(self) -> int: ...


class Counted(Protocol):
    """A store (``Store.counters``)."""

    def counters(self) -> dict[str, int]: ...


class Metrics:
    def __init__(self, connections: Gauged | None = None, store: Counted | None = None) -> None:
        self.connections = connections  # None: a service outside a server, no connection open
        self.store = store
        self._lock = threading.Lock()
        # (route, status) -> its latency histogram (empty_histogram's layout):
        # one lookup a request; the totals by route and status are added up when rendered.
        self._requests: dict[tuple[str, int], list] = {}
        self._store_errors: dict[str, int] = {"timeout": 0, "unavailable": 0}
        self._rejected = 0
        self._timed_out: dict[str, int] = dict.fromkeys(DEADLINES, 0)
        self._auth_refusals: dict[str, int] = {}  # by reason (auth.REASONS)
        self._key_set_fetches: dict[str, int] = {}  # by outcome, in the JWT modes (jwks.py)

    def observe(self, route: str, status: int, seconds: float) -> None:
        bucket = bisect.bisect_left(BUCKETS, seconds)
        with self._lock:
            hist = self._requests.get((route, status))
            if hist is None:
                hist = self._requests[route, status] = empty_histogram()
            hist[bucket] += 1
            hist[-1] += seconds

    def store_error(self, kind: str) -> None:
        with self._lock:
            self._store_errors[kind] = self._store_errors.get(kind, 0) + 1

    def timed_out(self, phase: str) -> None:
        with self._lock:
            self._timed_out[phase] = self._timed_out.get(phase, 0) + 1

    def expect_auth_refusals(self, reasons: tuple[str, ...]) -> None:
        """Show these reasons from the start, at 0 (a counter that appears late hides its first rise)."""
        with self._lock:
            for reason in reasons:
                self._auth_refusals.setdefault(reason, 0)

    def auth_refused(self, reason: str) -> None:
        with self._lock:
            self._auth_refusals[reason] = self._auth_refusals.get(reason, 0) + 1

    def key_set_fetch(self, outcome: str) -> None:
        with self._lock:
            self._key_set_fetches[outcome] = self._key_set_fetches.get(outcome, 0) + 1

    def connection_rejected(self) -> None:
        with self._lock:
            self._rejected += 1

    def render(self) -> bytes:
        connections = self.connections
        connections_open, in_flight = (len(connections), connections.in_flight()) if connections is not None else (0, 0)
        store_counters = self.store.counters() if self.store is not None else {}
        with self._lock:
            by_status = {key: list(hist) for key, hist in self._requests.items()}
            store_errors = sorted(self._store_errors.items())
            rejected = self._rejected
            timed_out = sorted(self._timed_out.items())
            auth_refusals = sorted(self._auth_refusals.items())
            key_set_fetches = sorted(self._key_set_fetches.items())
        requests = sorted((key, sum(hist[:-1])) for key, hist in by_status.items())
        latency: dict[str, list] = {}
        for (route, _), hist in by_status.items():
            total = latency.setdefault(route, empty_histogram())
            for i, n in enumerate(hist):
                total[i] += n
        out = [
            "# HELP userprofile_requests_total HTTP requests answered, by route and status.",
            "# TYPE userprofile_requests_total counter",
        ]
        out += [f'userprofile_requests_total{{route="{r}",status="{s}"}} {n}' for (r, s), n in requests]
        out += [
            "# HELP userprofile_request_duration_seconds Time from request line to answer written.",
            "# TYPE userprofile_request_duration_seconds histogram",
        ]
        for route in sorted(latency):
            hist = latency[route]
            cumulative = 0
            for bound, n in zip(BUCKETS, hist, strict=False):
                cumulative += n
                out.append(f'userprofile_request_duration_seconds_bucket{{route="{route}",le="{bound}"}} {cumulative}')
            cumulative += hist[len(BUCKETS)]
            out.append(f'userprofile_request_duration_seconds_bucket{{route="{route}",le="+Inf"}} {cumulative}')
            out.append(f'userprofile_request_duration_seconds_sum{{route="{route}"}} {hist[-1]:.6f}')
            out.append(f'userprofile_request_duration_seconds_count{{route="{route}"}} {cumulative}')
        out += [
            "# HELP userprofile_requests_in_flight Requests being answered now.",
            "# TYPE userprofile_requests_in_flight gauge",
            f"userprofile_requests_in_flight {in_flight}",
            "# HELP userprofile_connections_open Client connections open now.",
            "# TYPE userprofile_connections_open gauge",
            f"userprofile_connections_open {connections_open}",
            "# HELP userprofile_connections_rejected_total Connections refused with 503 at the connection cap.",
            "# TYPE userprofile_connections_rejected_total counter",
            f"userprofile_connections_rejected_total {rejected}",
            "# HELP userprofile_connections_timed_out_total Connections closed at a deadline, by phase"
            f" ({'; '.join(f'{phase}: {meaning}' for phase, meaning in DEADLINES.items())}).",
            "# TYPE userprofile_connections_timed_out_total counter",
        ]
        out += [f'userprofile_connections_timed_out_total{{phase="{p}"}} {n}' for p, n in timed_out]
        out += [
            "# HELP userprofile_store_errors_total Requests answered 503 or 504 because the store failed, by kind.",
            "# TYPE userprofile_store_errors_total counter",
        ]
        out += [f'userprofile_store_errors_total{{kind="{k}"}} {n}' for k, n in store_errors]
        out += [
            "# HELP userprofile_auth_refusals_total API requests refused by the token check, by reason (docs/auth.md).",
            "# TYPE userprofile_auth_refusals_total counter",
        ]
        out += [f'userprofile_auth_refusals_total{{reason="{r}"}} {n}' for r, n in auth_refusals]
        if key_set_fetches:
            out += [
                "# HELP userprofile_auth_key_set_fetches_total Fetches of the identity provider's key set, by outcome.",
                "# TYPE userprofile_auth_key_set_fetches_total counter",
            ]
            out += [f'userprofile_auth_key_set_fetches_total{{outcome="{o}"}} {n}' for o, n in key_set_fetches]
        for name, n in sorted(store_counters.items()):
            out += [
                f"# HELP userprofile_store_{name}_total {STORE_COUNTERS[name]}",
                f"# TYPE userprofile_store_{name}_total counter",
                f"userprofile_store_{name}_total {n}",
            ]
        out += build_info_lines() + process_lines()
        return ("\n".join(out) + "\n").encode()


# -- what the process is and costs: read when scraped, never on the request path ----------------
def build_info_lines() -> list[str]:
    """The version and what it runs on, as Prometheus' `*_build_info` convention has it: a gauge of 1."""
    labels = f'version="{buildinfo.VERSION}",python="{buildinfo.PYTHON}",sdk="{buildinfo.SDK}"'
    return [
        "# HELP userprofile_build_info The service's version, its Python and its Couchbase SDK; always 1.",
        "# TYPE userprofile_build_info gauge",
        f"userprofile_build_info{{{labels}}} 1",
    ]


PROC = Path("/proc/self")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_start_time() -> float | None:
    """Seconds since the epoch when this process started: the boot time plus its start in clock ticks,
    as the Prometheus client libraries compute it; None without /proc."""
    try:
        boot = next(
            int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime ")
        )
        # The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
        after_name = (PROC / "stat").read_text().rpartition(")")[2].split()
        return boot + int(after_name[19]) / CLOCK_TICKS  # field 22, starttime
    except (OSError, StopIteration, IndexError, ValueError):
        return None


START_TIME = process_start_time()  # fixed for the process's life: read once


def process_lines() -> list[str]:
    """The process metrics every Prometheus client library exports, by their names, from /proc and
    getrusage; on a system without /proc only those that need none."""
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    out = [
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.",
        "# TYPE process_cpu_seconds_total counter",
        f"process_cpu_seconds_total {cpu.ru_utime + cpu.ru_stime:.6f}",
        "# HELP process_max_fds Maximum number of open file descriptors.",
        "# TYPE process_max_fds gauge",
        f"process_max_fds {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}",
    ]
    try:
        virtual, resident = (int(n) * PAGE_BYTES for n in (PROC / "statm").read_text().split()[:2])
        open_fds = len(os.listdir(PROC / "fd"))
    except OSError:
        return out
    out += [
        "# HELP process_virtual_memory_bytes Virtual memory size in bytes.",
        "# TYPE process_virtual_memory_bytes gauge",
        f"process_virtual_memory_bytes {virtual}",
        "# HELP process_resident_memory_bytes Resident memory size in bytes.",
        "# TYPE process_resident_memory_bytes gauge",
        f"process_resident_memory_bytes {resident}",
        "# HELP process_open_fds Number of open file descriptors.",
        "# TYPE process_open_fds gauge",
        f"process_open_fds {open_fds}",
    ]
    if START_TIME is not None:
        out += [
            "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.",
            "# TYPE process_start_time_seconds gauge",
            f"process_start_time_seconds {START_TIME:.2f}",
        ]
    return out
