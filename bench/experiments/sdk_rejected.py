#!/usr/bin/env python3
"""The Couchbase get's variants measured and rejected: what one get costs with each, in process.

The same measurement as bench/sdk_micro.py (its harness: threads, CPU per get, CAVES), on the
ways tried to make the service's get cheaper that did not pay (the decision:
docs/decisions/2026-11-28-sdk-get-path.md). "store" and "sdk-core" are the live paths, for the
comparison.

    taskset -c 0 .venv/bin/python bench/experiments/sdk_rejected.py --caves

Variants:
  store                 cbconn.CouchbaseStore.get_profile as the service runs it
  sdk-core              the SDK's C++ get under its per-call wrapper, as cbsdk.DirectCalls does
  store-bounded-8       at most 8 gets inside the SDK at once (a semaphore)
  store-batched         concurrent gets combined: one get_multi in flight carries every key queued
  sdk-core-callbacks    no thread waits: 32 gets in flight, each answer's callback (on the SDK's
                        I/O thread) sends the next: the floor without thread wake-ups
"""

from __future__ import annotations

import random
import sys
import threading
import time

from testkit import ROOT

sys.path.insert(0, str(ROOT / "bench"))  # an experiment beside bench's harness: sdk_micro's measurement
import sdk_micro


def store_bounded(limit: int):
    def make(connstr, bucket, scope):
        s, inside = sdk_micro.open_store(connstr, bucket, scope), threading.BoundedSemaphore(limit)

        def get(key):
            with inside:
                return s.get_profile(key.partition(":")[2])

        return get

    return make


class Batcher:
    """Flat combining: a get that finds no get_multi in flight sends one with every key
    queued meanwhile; when it returns, the first get queued since sends the next."""

    class Slot:
        def __init__(self, key):
            self.key, self.value, self.error, self.lead = key, None, None, False
            self.done = threading.Lock()
            self.done.acquire()

    def __init__(self, coll):
        self.coll, self.mutex, self.queue, self.busy = coll, threading.Lock(), [], False

    def get(self, key):
        slot = self.Slot(key)
        with self.mutex:
            lead = not self.busy
            self.busy = True
            if not lead:
                self.queue.append(slot)
        if not lead:
            slot.done.acquire()  # answered, or made the next to send
            if not slot.lead:
                if slot.error:
                    raise slot.error
                return slot.value
        with self.mutex:
            batch, self.queue = [slot, *self.queue], []
        try:
            found = self.coll.get_multi(list({s.key for s in batch}), return_exceptions=True).results
            for s in batch:
                s.value = found[s.key].value if s.key in found else None
        except Exception as exc:
            for s in batch:
                s.error = exc
        for s in batch[1:]:
            s.done.release()
        with self.mutex:
            following = self.queue.pop(0) if self.queue else None
            self.busy = following is not None
        if following is not None:
            following.lead = True
            following.done.release()
        if slot.error:
            raise slot.error
        return slot.value


def store_batched(connstr, bucket, scope):
    return Batcher(sdk_micro.open_store(connstr, bucket, scope).collections["user_data"]).get


def sdk_core_callbacks(connstr, bucket, scope):
    """A sender, not a get: see run_callbacks."""
    op, request = sdk_micro.core_op(connstr, bucket, scope)

    def send(key, done):
        req = request(key)
        req.callback = req.errback = done
        op(req)

    return send


def run_callbacks(send, in_flight: int, seconds: float, count: int):
    """The same figures with ``in_flight`` gets kept going by their own callbacks."""
    rnd = random.Random(0)
    state = {"done": 0, "errors": 0, "live": in_flight, "stopping": False}
    finished = threading.Event()

    def done(result):
        state["done"] += 1
        if not hasattr(result, "raw_result"):
            state["errors"] += 1
        if state["stopping"]:
            state["live"] -= 1
            if state["live"] == 0:
                finished.set()
            return
        send(f"user_data:{rnd.randint(1, count)}", done)

    def start():
        for _ in range(in_flight):
            send(f"user_data:{rnd.randint(1, count)}", done)
        time.sleep(seconds)

    def stop():
        state["stopping"] = True
        finished.wait(10)
        return state["done"], state["errors"]

    return sdk_micro.measure(start, stop)[:3]


VARIANTS = {
    "store": sdk_micro.store(),
    "sdk-core": sdk_micro.sdk_core,
    "store-bounded-8": store_bounded(8),
    "store-batched": store_batched,
    "sdk-core-callbacks": sdk_core_callbacks,
}

if __name__ == "__main__":
    sys.exit(sdk_micro.main(variants=VARIANTS, runners={"sdk-core-callbacks": run_callbacks}, doc=__doc__))
