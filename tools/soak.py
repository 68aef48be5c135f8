#!/usr/bin/env python3
"""Soak: sustained load on the real service with the store frozen in the middle.

    python tools/soak.py [--duration 60] [--fault-at 25] [--fault-for 5] [--rate 300] [--threads 8]

The service runs on Couchbase's cluster emulator CAVES (testkit/caves.py, built by
tools/install_caves.sh), seeded by loaddata.py. A bounded pool of client threads
sends a paced stream of key-value lookups (/api/v1/id and /api/v1/picture/record)
for ``--duration`` seconds; at ``--fault-at`` CAVES is stopped with SIGSTOP (its
sockets stay open and nothing answers: a hung node) and after ``--fault-for``
seconds it is resumed with SIGCONT. Without gocaves (``--store sqlite``), the
embedded store's file is overwritten in place for the fault instead: a broken
disk rather than a hung node.

Passes (exit 0) when:
  - no request waits past the configured store timeout + 1 s;
  - every answer is a 200, except 503/504 during the fault (and its recovery window);
  - the errors return to zero after the fault: none in the last part of the run;
  - the service process is alive at the end, with no traceback and no token in its log.
A summary, second by second, is printed either way. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from testkit import ServiceProcess, run_loaddata, wait_until

TOKEN = "soak-token-3c9e51d07a"
COUNT = 500  # profiles (and images) loaded


class Service(ServiceProcess):
    """The service on the store under test, ready once a lookup answers 200."""

    def __init__(self, env: dict, log_path: Path):
        super().__init__({**env, "ACCESS_LOG": "false"}, log_path=log_path)

    def wait_ready(self, timeout: float = 60) -> None:
        try:
            self.start(wait_for="/readyz", timeout=timeout)
        except RuntimeError as exc:
            raise SystemExit(f"soak: {exc}") from None
        if wait_until(lambda: self.get("/api/v1/id/1", TOKEN, timeout=5)[0] == 200, timeout) is not True:
            raise SystemExit(f"soak: no lookup answered 200 in {timeout}s:\n{self.log()[-2000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        return super().stop(sig, timeout)


# -- the store and its fault ---------------------------------------------------------
class CavesStore:
    """CAVES, frozen with SIGSTOP for the fault."""

    description = "Couchbase (CAVES), frozen with SIGSTOP"

    def __init__(self, workdir: Path, timeout: float):
        from testkit.caves import Caves

        self.caves = Caves(log_path=workdir / "caves.log").start().loaded("--count", str(COUNT), "--token", TOKEN)
        self.env = self.caves.env(
            COUCHBASE_KV_TIMEOUT=str(timeout),
            COUCHBASE_QUERY_TIMEOUT=str(timeout),
            COUCHBASE_HEALTH_INTERVAL="0.5",
        )

    def fault(self) -> None:
        self.caves.freeze()

    def heal(self) -> None:
        self.caves.thaw()

    def close(self) -> None:
        self.caves.stop()


class SQLiteFileStore:
    """The embedded store, its file overwritten in place for the fault (no gocaves)."""

    description = "embedded SQLite, its file overwritten with zeros (gocaves is not installed)"

    def __init__(self, workdir: Path, timeout: float):
        self.db = workdir / "soak.db"
        self.env = {"USERPROFILE_DB": str(self.db)}
        run_loaddata(self.env, "--count", str(COUNT), "--token", TOKEN)
        self.healthy = b""

    def fault(self) -> None:
        self.healthy = self.db.read_bytes()
        self.db.write_bytes(b"\0" * len(self.healthy))

    def heal(self) -> None:
        self.db.write_bytes(self.healthy)

    def close(self) -> None:
        pass


# -- the load --------------------------------------------------------------------------
class Load:
    def __init__(
        self, port: int, threads: int, rate: float, limit: float, started: float, duration: float, max_requests: int
    ):
        self.port, self.threads, self.rate, self.limit = port, threads, rate, limit
        self.started, self.duration, self.max_requests = started, duration, max_requests
        self.results: list[tuple[float, float, int | str]] = []  # (sent at, seconds, status or error)
        self.lock = threading.Lock()

    def run(self) -> None:
        workers = [threading.Thread(target=self.worker, args=(i,), daemon=True) for i in range(self.threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(self.duration + self.limit + 30)

    def worker(self, index: int) -> None:
        rng = random.Random(index)
        interval = self.threads / self.rate
        next_at = self.started + index * interval / self.threads
        conn: http.client.HTTPConnection | None = None
        end = self.started + self.duration
        while True:
            now = time.monotonic()
            if now >= end or len(self.results) >= self.max_requests:
                break
            if next_at > now:
                time.sleep(next_at - now)
            next_at = max(next_at + interval, time.monotonic() - interval)  # no burst to catch up
            record_id = rng.randint(1, COUNT)
            path = f"/api/v1/id/{record_id}" if rng.random() < 0.8 else f"/api/v1/picture/record/{record_id}"
            if conn is None:
                # The client waits longer than the bound, so that a request past it is seen, not cut.
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.limit + 5)
            sent = time.monotonic()
            try:
                conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
                resp = conn.getresponse()
                resp.read()
                outcome: int | str = resp.status
                closing = resp.will_close
            except (OSError, http.client.HTTPException) as exc:
                outcome, closing = type(exc).__name__, True
            if closing:
                conn.close()
                conn = None
            with self.lock:
                self.results.append((sent - self.started, time.monotonic() - sent, outcome))
        if conn is not None:
            conn.close()


# -- the verdict -----------------------------------------------------------------------------
def summarize(results, args, fault_window, store_description) -> list[str]:
    fault_start, fault_end = fault_window
    recovered_at = fault_end + args.recovery
    failures = []
    print(
        f"\nsoak: {len(results)} requests in {args.duration:g}s, {args.threads} threads, target "
        f"{args.rate:g} req/s; store: {store_description}"
    )
    print(
        f"soak: fault from {fault_start:.1f}s to {fault_end:.1f}s; errors allowed until {recovered_at:.1f}s; "
        f"bound on any wait: {args.timeout:g}s store timeout + 1s = {args.timeout + 1:g}s\n"
    )
    print(f"{'second':>6} {'sent':>5} {'200':>5} {'503':>5} {'504':>5} {'other':>5} {'p50 ms':>8} {'max ms':>8}")
    by_second: dict[int, list] = {}
    for sent, seconds, outcome in results:
        by_second.setdefault(int(sent), []).append((seconds, outcome))
    for second in range(int(args.duration) + 1):
        rows = by_second.get(second, [])
        if not rows:
            continue
        counts = {200: 0, 503: 0, 504: 0}
        other = 0
        for _, outcome in rows:
            if outcome in counts:
                counts[outcome] += 1
            else:
                other += 1
        lat = [s for s, _ in rows]
        mark = " <- fault" if fault_start - 1 < second < fault_end else ""
        print(
            f"{second:>6} {len(rows):>5} {counts[200]:>5} {counts[503]:>5} {counts[504]:>5} {other:>5} "
            f"{statistics.median(lat) * 1000:>8.1f} {max(lat) * 1000:>8.1f}{mark}"
        )

    slow = [(sent, seconds) for sent, seconds, _ in results if seconds > args.timeout + 1]
    if slow:
        failures.append(
            f"{len(slow)} requests waited past {args.timeout + 1:g}s (longest "
            f"{max(s for _, s in slow):.2f}s, sent at {slow[0][0]:.1f}s)"
        )
    bad = [(sent, outcome) for sent, _, outcome in results if outcome not in (200, 503, 504)]
    if bad:
        failures.append(f"{len(bad)} answers other than 200/503/504, e.g. {bad[:5]}")
    outside = [
        (round(sent, 2), outcome)
        for sent, seconds, outcome in results
        if outcome != 200 and not (fault_start - args.timeout - 0.5 <= sent <= recovered_at)
    ]
    if outside:
        failures.append(f"{len(outside)} errors outside the fault and its recovery window, e.g. {outside[:5]}")
    during = [o for sent, _, o in results if fault_start <= sent <= fault_end and o in (503, 504)]
    if not during:
        failures.append("no 503/504 during the fault: was the store really frozen?")
    tail = [o for sent, _, o in results if sent > recovered_at]
    if not tail or any(o != 200 for o in tail):
        failures.append("the errors did not return to zero after the fault")
    lat = sorted(s for _, s, _ in results)
    print(
        f"\nsoak: latency p50 {lat[len(lat) // 2] * 1000:.1f} ms, p99 {lat[int(len(lat) * 0.99)] * 1000:.1f} ms, "
        f"max {lat[-1] * 1000:.1f} ms; {len(during)} 503/504 during the fault; "
        f"{len(tail)} requests after {recovered_at:.1f}s, {sum(o != 200 for o in tail)} errors among them"
    )
    return failures


CHECKS = 9


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=60, help="seconds of load")
    p.add_argument("--fault-at", type=float, default=25, help="second at which the store is frozen")
    p.add_argument("--fault-for", type=float, default=5, help="seconds the store stays frozen")
    p.add_argument("--rate", type=float, default=300, help="requests per second, all threads together")
    p.add_argument("--threads", type=int, default=16, help="client threads (connections)")
    p.add_argument("--timeout", type=float, default=2.5, help="the store operation timeout given to the service")
    p.add_argument(
        "--recovery", type=float, default=8, help="seconds after the fault within which the errors must be gone"
    )
    p.add_argument("--max-requests", type=int, default=100_000, help="a bound on the requests sent")
    p.add_argument("--store", choices=["auto", "caves", "sqlite"], default="auto")
    args = p.parse_args(argv)
    if not 0 < args.fault_at < args.fault_at + args.fault_for + args.recovery < args.duration:
        p.error("the fault and its recovery must end before the load does")

    kind = args.store
    if kind == "auto":
        from testkit.caves import GOCAVES

        kind = "caves" if os.access(os.environ.get("GOCAVES", GOCAVES), os.X_OK) else "sqlite"
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    store = (CavesStore if kind == "caves" else SQLiteFileStore)(workdir, args.timeout)
    service = None
    try:
        service = Service(store.env, workdir / "service.log")
        service.wait_ready()
        started = time.monotonic()
        load = Load(service.port, args.threads, args.rate, args.timeout, started, args.duration, args.max_requests)
        loader = threading.Thread(target=load.run)
        loader.start()
        time.sleep(max(0.0, started + args.fault_at - time.monotonic()))  # the schedule of the fault
        fault_start = time.monotonic() - started
        store.fault()
        time.sleep(args.fault_for)
        store.heal()
        fault_end = time.monotonic() - started
        loader.join()
        failures = summarize(load.results, args, (fault_start, fault_end), store.description)
        assert service.proc is not None  # started
        if service.proc.poll() is not None:
            failures.append(f"the service died ({service.proc.returncode})")
        code = service.stop()
        if code != 0:
            failures.append(f"the service did not stop cleanly ({code})")
        log = service.log()
        if "Traceback" in log:
            failures.append("a traceback in the service log")
        if TOKEN in log:
            failures.append("the token in the service log")
    finally:
        if service is not None:
            service.stop()
        store.close()
    for failure in failures:
        print(f"soak: FAIL: {failure}")
    if not failures:
        print("soak: PASS")
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"soak: logs kept in {workdir}")
    # The checks: summarize()'s five, then alive, clean stop, no traceback, no token.
    # Each failed check adds one line to failures.
    print(f"soak: {max(CHECKS - len(failures), 0)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
