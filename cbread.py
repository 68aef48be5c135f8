"""The Couchbase store's key-value reads: a profile, an image, the token.

Mixed into ``cbconn.CouchbaseStore``, which connects and keeps the SDK's objects; this is
what a lookup does with them. Replica reads (COUCHBASE_REPLICA_READS): a get gives the
active copy COUCHBASE_REPLICA_DELAY, then asks every copy (``get_any_replica``) and takes
the first answer. While a ping finds a node lost (``cbhealth``), gets ask every copy at once;
while many gets are slow and every node answers, hedging pauses. A replica's answer may be
stale by the replication lag; they are counted (``counters``, on /metrics). How a get reaches
the SDK (``cbsdk.DirectCalls``) is set up by the connection (cbconn.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from couchbase import exceptions as cbe
from couchbase.options import GetAnyReplicaOptions, GetOptions

from cbhealth import NodeHealth
from cbsdk import ACTIVE, ANY_COPY, TIMEOUTS, DirectCalls, describe, every_copy_missing, mapped
from store import MAX_KEY_BYTES, Layout, StoreTimeout, StoreUnavailable, token_of


class Reading:
    """Mixed into ``cbconn.CouchbaseStore``: the lookups of ``store.Store`` that are key-value gets.
    What they use of the store, which sets it:"""

    layout: Layout
    direct: DirectCalls
    health: NodeHealth
    _ping_now: threading.Event
    _collection: Callable[[str], Any]

    def _plan_reads(self, replica_reads: bool, replica_delay: float, kv_timeout: timedelta) -> None:
        """The gets' options, made once: with replica reads the active copy gets the delay, the
        copies the rest of the kv timeout."""
        self.replica_reads = replica_reads
        delay = min(timedelta(seconds=replica_delay), kv_timeout)
        self._hedge_options = (GetOptions(timeout=delay),)
        self._hedge_timeout_ms = max(1, round(delay.total_seconds() * 1000))
        self._hedge_seconds = delay.total_seconds()
        self._after_delay = GetAnyReplicaOptions(timeout=max(kv_timeout - delay, timedelta(milliseconds=1)))
        self._any_copy_options = GetAnyReplicaOptions(timeout=kv_timeout)
        self._replica_reads = 0
        self._count_lock = threading.Lock()

    def counters(self) -> dict[str, int]:
        with self._count_lock:
            return {"replica_reads": self._replica_reads}

    def _active(self, collection: str, coll: Any, key: str, hedge: bool) -> bytes:
        """The active copy, within the replica delay when hedging, else the kv timeout."""
        if hedge:
            return self.direct.get(ACTIVE, collection, key, self._hedge_timeout_ms, coll.get, *self._hedge_options)[0]
        return self.direct.get(ACTIVE, collection, key, 0, coll.get)[0]

    def _first_copy(self, collection: str, coll: Any, key: str, options: Any) -> tuple[bytes, bool]:
        return self.direct.get(
            ANY_COPY, collection, key, round(options["timeout"].total_seconds() * 1000), coll.get_any_replica, options
        )

    def _any_copy(self, collection: str, coll: Any, key: str, options: Any) -> bytes | None:
        """The first copy to answer, active or replica."""
        started = time.monotonic()
        try:
            value, from_replica = self._first_copy(collection, coll, key, options)
        except cbe.DocumentUnretrievableException as exc:
            # The SDK's answer both when every copy said "not found" and when none answered (or
            # each failed at once: connections refused). Its context tells them apart; without
            # one, only an answer before the deadline is a "not found".
            early = time.monotonic() - started < options["timeout"].total_seconds() * 0.9
            missing = every_copy_missing(exc)
            if missing or (missing is None and early):
                self.health.answered = True
                return None
            error = StoreUnavailable if early else StoreTimeout
            raise error(f"couchbase: no copy of {key} answered: {describe(exc)}") from exc
        except Exception as exc:
            raise mapped(exc) from exc
        self.health.answered = True
        if from_replica:
            with self._count_lock:
                self._replica_reads += 1
        return value

    def _get(self, collection: str, key: str) -> bytes | None:
        if len(key.encode()) > MAX_KEY_BYTES:
            return None  # Couchbase refuses such a key: it cannot exist
        coll = self._collection(collection)
        health = self.health
        if health.degraded:
            return self._any_copy(collection, coll, key, self._any_copy_options)
        health.gets += 1
        hedge = health.hedging
        started = 0.0 if hedge else time.monotonic()
        try:
            found = self._active(collection, coll, key, hedge)
            # A node answers, whatever the next ping finds (on a busy machine it can time out on every node).
            health.answered = True
            return found
        except cbe.DocumentNotFoundException:
            health.answered = True
            return None
        except Exception as exc:
            # Unhedged (paused: a busy machine), a timeout has used the whole budget; an error
            # within the replica delay (a node just killed: its connection reset) leaves the
            # replicas time to answer.
            if not hedge and (
                not self.replica_reads or isinstance(exc, TIMEOUTS) or time.monotonic() - started > self._hedge_seconds
            ):
                raise mapped(exc) from exc
        if health.hedged():
            self._ping_now.set()
        return self._any_copy(collection, coll, key, self._after_delay)

    def get_profile(self, record_id: str) -> bytes | None:
        profiles = self.layout.profiles
        return self._get(profiles, f"{profiles}:{record_id}")

    def get_image(self, record_id: str) -> bytes | None:
        images = self.layout.images
        return self._get(images, f"{images}:{record_id}")

    def read_token(self) -> str | None:
        # The whole (small) document, so that a lost node's token is read from a replica too.
        return token_of(self._get(self.layout.auth, self.layout.token_key))
