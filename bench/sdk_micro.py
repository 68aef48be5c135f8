"""What one Couchbase SDK get costs in CPU, in process, without HTTP.

N threads call ``get`` on random profile ids for a fixed time; the figure is
the whole process's CPU (every Python thread and the SDK's own I/O threads)
divided by the gets done, in microseconds. Each variant gets a cluster of its
own, because tracing and metrics are cluster options.

    .venv/bin/python bench/sdk_micro.py --connstr couchbase://127.0.0.1:PORT

The cluster must hold the profiles ``loaddata.py --count`` wrote (CAVES: see
tests/caves.py; ``--caves`` starts one on core 1 and loads it). Pin this
process to a core of its own (``taskset -c 0``) so the figure is not CAVES's.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

from couchbase.auth import PasswordAuthenticator
from couchbase.cluster import Cluster
from couchbase.options import ClusterOptions, ClusterTimeoutOptions, GetOptions

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cbconn  # noqa: E402  # the service's own store, for the variant it ships

KV_TIMEOUT = timedelta(seconds=2.5)


def cluster(connstr: str, observability: bool, on_cluster: bool) -> Cluster:
    extra = {"transcoder": cbconn.RAW} if on_cluster else {}
    options = ClusterOptions(PasswordAuthenticator("Administrator", "password"),
                             timeout_options=ClusterTimeoutOptions(kv_timeout=KV_TIMEOUT),
                             enable_tracing=observability, enable_metrics=observability, **extra)
    c = Cluster(connstr, options)
    c.wait_until_ready(timedelta(seconds=10))
    return c


def sdk_variant(observability: bool, on_cluster: bool):
    """A get through the SDK's public API, options per call or set once on the cluster."""
    def make(connstr, bucket, scope):
        coll = cluster(connstr, observability, on_cluster).bucket(bucket).scope(scope).collection("user_data")
        if on_cluster:
            return lambda key: coll.get(key).value
        return lambda key: coll.get(key, GetOptions(transcoder=cbconn.RAW, timeout=KV_TIMEOUT)).value
    return make


def store_variant(observability: str):
    """The service's store as it stands (cbconn.CouchbaseStore.get_profile)."""
    def make(connstr, bucket, scope):
        env = {"COUCHBASE_HOST": connstr, "COUCHBASE_BUCKET": bucket, "COUCHBASE_SCOPE": scope}
        if observability:
            env["COUCHBASE_SDK_OBSERVABILITY"] = observability
        store = cbconn.CouchbaseStore.from_environ(env)
        store.wait_connected(15)
        return lambda key: store.get_profile(key.split(":", 1)[1])
    return make


VARIANTS = {
    "sdk-default": sdk_variant(observability=True, on_cluster=False),
    "sdk-obs-off": sdk_variant(observability=False, on_cluster=False),
    "sdk-obs-off-cluster-opts": sdk_variant(observability=False, on_cluster=True),
    "sdk-obs-on-cluster-opts": sdk_variant(observability=True, on_cluster=True),
    "store": store_variant(""),
    "store-obs-on": store_variant("true"),
}


def run(get, threads: int, seconds: float, count: int) -> tuple[float, float, int]:
    """(us CPU per get, gets per second, errors) over ``seconds`` of ``threads`` callers."""
    stop = threading.Event()
    done = [0] * threads
    errors = [0] * threads

    def worker(i: int) -> None:
        rnd = random.Random(i)
        n = e = 0
        while not stop.is_set():
            try:
                if get(f"user_data:{rnd.randint(1, count)}") is None:
                    e += 1
            except Exception:
                e += 1
            n += 1
        done[i], errors[i] = n, e

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    t0, c0 = time.monotonic(), os.times()
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    t1, c1 = time.monotonic(), os.times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    total = sum(done)
    return cpu / total * 1e6, total / (t1 - t0), sum(errors)


def start_caves(count: int) -> tuple[object, str]:
    sys.path.insert(0, str(ROOT / "tests"))
    from caves import Caves

    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {1})  # gocaves inherits it: off this benchmark's core
    try:
        caves = Caves().start()
    finally:
        os.sched_setaffinity(0, cores)
    caves.add_bucket("sample_app")
    subprocess.run([sys.executable, str(ROOT / "loaddata.py"), "--count", str(count), "--seed", "1"],
                   env={**os.environ, "COUCHBASE_HOST": caves.connstr}, cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return caves, caves.connstr


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--connstr", help="a cluster holding the profiles; else --caves")
    p.add_argument("--caves", action="store_true", help="start CAVES on core 1 and load it")
    p.add_argument("--bucket", default="sample_app")
    p.add_argument("--scope", default="profiles")
    p.add_argument("--count", type=int, default=10000, help="profile ids 1..N to pick from")
    p.add_argument("--threads", type=int, default=32)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--rounds", type=int, default=3, help="variants run in turn, this many times")
    p.add_argument("variants", nargs="*", default=list(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    args = p.parse_args(argv)
    caves = None
    if args.caves:
        caves, args.connstr = start_caves(args.count)
    if not args.connstr:
        p.error("--connstr or --caves")
    try:
        gets = {name: VARIANTS[name](args.connstr, args.bucket, args.scope) for name in args.variants}
        for get in gets.values():
            run(get, args.threads, 1, args.count)  # warm up: connections, code paths
        print(f"{'variant':28} {'us CPU/get':>10} {'gets/s':>8} {'errors':>6}   ({args.threads} threads, "
              f"{args.seconds:g}s each, {args.rounds} rounds)", flush=True)
        for _ in range(args.rounds):
            for name, get in gets.items():
                us, rate, errors = run(get, args.threads, args.seconds, args.count)
                print(f"{name:28} {us:10.1f} {rate:8.0f} {errors:6d}", flush=True)
    finally:
        if caves:
            caves.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
