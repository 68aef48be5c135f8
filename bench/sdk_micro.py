"""What one Couchbase SDK get costs in CPU, in process, without HTTP.

N threads call ``get`` on random profile ids for a fixed time; the figure is
the whole process's CPU (every Python thread and the SDK's own I/O thread)
divided by the gets done, in microseconds. Each variant has a cluster of its
own, because tracing, metrics and the transcoder are cluster options.

    taskset -c 0 .venv/bin/python bench/sdk_micro.py --caves
    taskset -c 0 .venv/bin/python bench/sdk_micro.py --connstr couchbase://127.0.0.1:PORT store sdk-core

The cluster must hold the profiles ``loaddata.py --count`` wrote; ``--caves``
starts CAVES (testkit/caves.py) on core 1 and loads it. Pin this process to the
other core so that the figure is not CAVES's. CAVES answers ~11,000 gets/s
at most: gets/s is its limit, not ours; the CPU per get is the figure.

Variants:
  sdk-default           the SDK's defaults (tracing and metrics on), a GetOptions per call
  sdk-obs-off           tracing and metrics off, a GetOptions per call
  sdk-cluster-opts      tracing and metrics off, transcoder and timeout set once on the cluster
  sdk-obs-on-cluster-opts   the same with tracing and metrics on: their cost alone
  store                 cbconn.CouchbaseStore.get_profile as the service runs it
  store-obs-on          the same with COUCHBASE_SDK_OBSERVABILITY=true
  sdk-core              the SDK's C++ binding called directly, skipping its Python wrapper
                        (what cbsdk.DirectCalls does for the service's gets)

The variants measured and rejected (a semaphore, batching, callbacks) are
bench/experiments/sdk_rejected.py, with their decision note.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from datetime import timedelta

from couchbase.auth import PasswordAuthenticator
from couchbase.cluster import Cluster
from couchbase.options import ClusterOptions, ClusterTimeoutOptions, GetOptions

import cbconn  # the service's own store (the project is installed: make)
import settings
from testkit import caves as emulator

# COUCHBASE_USER and COUCHBASE_PASSWORD from the environment (--connstr), else the emulator's (--caves).
CREDENTIALS = {name: os.environ.get(name, value) for name, value in emulator.CREDENTIALS.items()}

KV_TIMEOUT = timedelta(seconds=2.5)


def cluster(connstr: str, observability: bool, on_cluster: bool) -> Cluster:
    extra = {"transcoder": cbconn.RAW} if on_cluster else {}
    options = ClusterOptions(
        PasswordAuthenticator(CREDENTIALS["COUCHBASE_USER"], CREDENTIALS["COUCHBASE_PASSWORD"]),
        timeout_options=ClusterTimeoutOptions(kv_timeout=KV_TIMEOUT),
        enable_tracing=observability,
        enable_metrics=observability,
        **extra,
    )
    c = Cluster(connstr, options)
    c.wait_until_ready(timedelta(seconds=10))
    return c


def sdk(observability: bool, on_cluster: bool):
    """A get through the SDK's public API, options per call or set once on the cluster."""

    def make(connstr, bucket, scope):
        coll = cluster(connstr, observability, on_cluster).bucket(bucket).scope(scope).collection("user_data")
        if on_cluster:
            return lambda key: coll.get(key).value
        return lambda key: coll.get(key, GetOptions(transcoder=cbconn.RAW, timeout=KV_TIMEOUT)).value

    return make


def open_store(connstr, bucket, scope, observability: str = "false") -> cbconn.CouchbaseStore:
    store = cbconn.CouchbaseStore.from_environ(
        {
            "COUCHBASE_HOST": connstr,
            **CREDENTIALS,
            "COUCHBASE_BUCKET": bucket,
            "COUCHBASE_SCOPE": scope,
            "COUCHBASE_SDK_OBSERVABILITY": observability,
        }
    )
    store.wait_connected(15)
    return store


def store(observability: str = "false"):
    def make(connstr, bucket, scope):
        s = open_store(connstr, bucket, scope, observability)
        return lambda key: s.get_profile(key.partition(":")[2])

    return make


def core_op(connstr, bucket, scope):
    """The C++ binding's get, and a request for a key: what the SDK's wrapper builds per call."""
    from couchbase.logic.operation_types import KeyValueOperationCode
    from couchbase.logic.pycbc_core import pycbc_kv_request

    code = KeyValueOperationCode.Get.value
    coll = open_store(connstr, bucket, scope).collections["user_data"]
    op = coll._impl._client_adapter._binding_map.kv_ops[code]

    def request(key):
        req = pycbc_kv_request()
        req.opcode, req.bucket, req.scope, req.collection, req.key = code, bucket, scope, "user_data", key
        return req

    return op, request


def sdk_core(connstr, bucket, scope):
    op, request = core_op(connstr, bucket, scope)
    return lambda key: op(request(key)).raw_result["value"]


VARIANTS = {
    "sdk-default": sdk(observability=True, on_cluster=False),
    "sdk-obs-off": sdk(observability=False, on_cluster=False),
    "sdk-cluster-opts": sdk(observability=False, on_cluster=True),
    "sdk-obs-on-cluster-opts": sdk(observability=True, on_cluster=True),
    "store": store(),
    "store-obs-on": store("true"),
    "sdk-core": sdk_core,
}


def measure(start, stop) -> tuple[float, float, int, int]:
    t0, c0 = time.monotonic(), os.times()
    start()
    done, errors = stop()
    t1, c1 = time.monotonic(), os.times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    return cpu / done * 1e6, done / (t1 - t0), errors, done


def run_threads(get, threads: int, seconds: float, count: int):
    """(us CPU per get, gets per second, errors) of ``threads`` callers for ``seconds``."""
    stopping = threading.Event()
    done, errors = [0] * threads, [0] * threads

    def worker(i: int) -> None:
        rnd = random.Random(i)
        n = e = 0
        while not stopping.is_set():
            try:
                if get(f"user_data:{rnd.randint(1, count)}") is None:
                    e += 1
            except Exception:
                e += 1
            n += 1
        done[i], errors[i] = n, e

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]

    def start():
        for w in workers:
            w.start()
        time.sleep(seconds)

    def stop():
        stopping.set()
        for w in workers:
            w.join()
        return sum(done), sum(errors)

    return measure(start, stop)[:3]


def start_caves(count: int):
    from testkit.caves import Caves

    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {1})  # gocaves inherits it: off this benchmark's core
    try:
        caves = Caves().start()
    finally:
        os.sched_setaffinity(0, cores)
    caves.loaded("--count", str(count), "--seed", "1")
    return caves


def main(argv=None, variants: dict | None = None, runners: dict | None = None, doc: str | None = None) -> int:
    """Run ``variants`` (name: maker of a get), each by its runner in ``runners`` (default run_threads)."""
    variants = VARIANTS if variants is None else variants
    runners = runners or {}
    p = argparse.ArgumentParser(description=doc or __doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connstr", help="a cluster holding the profiles; else --caves")
    p.add_argument("--caves", action="store_true", help="start CAVES on core 1 and load it")
    p.add_argument("--bucket", default=emulator.BUCKET)
    p.add_argument("--scope", default=settings.defaults().couchbase_scope)
    p.add_argument("--count", type=int, default=10000, help="profile ids 1..N to pick from")
    p.add_argument("--threads", type=int, default=32, help="callers (gets in flight for callback variants)")
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--rounds", type=int, default=3, help="variants run in turn, this many times")
    p.add_argument("variants", nargs="*", default=list(variants), help="a subset, by name")
    args = p.parse_args(argv)
    unknown = set(args.variants) - set(variants)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}: of {', '.join(variants)}")
    caves = start_caves(args.count) if args.caves else None
    connstr = caves.connstr if caves else args.connstr
    if not connstr:
        p.error("--connstr or --caves")
    try:
        calls = {name: variants[name](connstr, args.bucket, args.scope) for name in args.variants}

        def run(name, seconds):
            runner = runners.get(name, run_threads)
            return runner(calls[name], args.threads, seconds, args.count)

        for name in calls:
            run(name, 1)  # warm up: connections, code paths
        print(
            f"{'variant':24} {'us CPU/get':>10} {'gets/s':>8} {'errors':>6}   ({args.threads} threads, "
            f"{args.seconds:g} s each, {args.rounds} rounds)",
            flush=True,
        )
        figures: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.rounds):
            for name in calls:
                us, rate, errors = run(name, args.seconds)
                figures[name].append(us)
                print(f"{name:24} {us:10.1f} {rate:8.0f} {errors:6d}", flush=True)
        print(
            "median us CPU/get: " + ", ".join(f"{name} {sorted(v)[len(v) // 2]:.1f}" for name, v in figures.items()),
            flush=True,
        )
    finally:
        if caves:
            caves.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
