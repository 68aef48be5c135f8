"""The Couchbase store's view of its key-value nodes, and so how its gets go.

No SDK here: what the background pings find (the nodes that answered, the nodes
lost and why) and what the gets themselves saw go in; out come the flags the
gets read (``healthy``, ``degraded``, ``hedging``) and a log line for each change.

- A lookup is refused as unavailable only when no node answers: not one of several.
- A lost node sends gets to every copy at once (``degraded``), with replica reads on.
- Many gets waiting out the replica delay while every node answers means a slow
  cluster, not a lost node: asking every copy would only add to its load, so
  hedging pauses for a while.
"""

from __future__ import annotations

import threading
import time

from logs import log

# More gets than this share waiting out the replica delay while every node answers
# its ping: the cluster (or this machine) is slow, not a node lost; hedging pauses
# for HEDGE_PAUSE seconds.
HEDGE_SHARE, HEDGE_PAUSE = 0.05, 5.0
# This many hedged gets since the last ping call the next ping at once: a node
# frozen since then is found in the time of a ping, not of the health interval.
HEDGES_TO_PING = 10


class NodeHealth:
    # Fixed: a test or a caller that sets a misspelt flag fails instead of changing nothing.
    __slots__ = (
        "replica_reads",
        "healthy",
        "degraded",
        "hedging",
        "answered",
        "gets",
        "lost",
        "_hedges",
        "_hedges_lock",
        "_hedging_from",
        "_logged",
        "_logged_at",
    )

    def __init__(self, replica_reads: bool):
        self.replica_reads = replica_reads
        self.healthy = False  # a node answered the last ping, or a lookup since
        self.degraded = False  # the last ping found a node lost: gets ask every copy at once
        self.hedging = replica_reads  # the active copy gets the replica delay, then every copy is asked
        self.answered = False  # a lookup was answered since the last ping (by any copy)
        self.gets = 0  # since the last ping; unlocked: an estimate is enough
        self.lost: dict[str, str] = {}  # node -> why, as the last ping found it
        self._hedges = 0  # since the last ping
        self._hedges_lock = threading.Lock()
        self._hedging_from = 0.0  # no hedging before this (time.monotonic)
        self._logged: tuple[dict[str, str], bool] = ({}, True)  # (lost, healthy) as last logged
        self._logged_at = 0.0

    def hedged(self) -> bool:
        """Count a get that waited out the replica delay; True when that calls for a ping now."""
        with self._hedges_lock:
            self._hedges += 1
            return self._hedges == HEDGES_TO_PING

    def after_ping(self, answered: set[str], lost: dict[str, str]) -> None:
        """Act on a ping. No node answering refuses lookups, unless a lookup was answered
        since the last ping: a ping may list only the lost node."""
        self.degraded = self.replica_reads and bool(lost)
        self.healthy = bool(answered) or (bool(lost) and self.answered)
        self.answered = False
        self.lost = lost
        self._log(answered)
        with self._hedges_lock:
            gets, hedges, self.gets, self._hedges = self.gets, self._hedges, 0, 0
        now = time.monotonic()
        if self.replica_reads and not lost and hedges > max(10, gets * HEDGE_SHARE):
            if self.hedging:
                log(
                    f"couchbase: {hedges} of {gets} gets waited over the replica delay while every node "
                    f"answers: the cluster is slow, not a node lost; no hedged reads for {HEDGE_PAUSE:g}s"
                )
            self.hedging, self._hedging_from = False, now + HEDGE_PAUSE
        elif self.replica_reads and now >= self._hedging_from:
            self.hedging = True

    def _log(self, answered: set[str]) -> None:
        """Each change once, at most a line a second: changes in between are in the next line."""
        logged_lost, logged_healthy = self._logged
        now = time.monotonic()
        if (self.lost.keys() == logged_lost.keys() and self.healthy == logged_healthy) or now - self._logged_at < 1:
            return
        parts = [f"key-value node {node} lost ({why})" for node, why in self.lost.items() if node not in logged_lost]
        parts += [
            f"key-value node {node} answers again" if node in answered else f"key-value node {node} is gone"
            for node in logged_lost
            if node not in self.lost
        ]  # gone: no longer in the cluster's map (replaced, or a connection to another cluster)
        if self.healthy != logged_healthy:
            parts.append("lookups resume" if self.healthy else "no key-value node answers: lookups refused")
        elif self.lost and self.replica_reads:
            parts.append("its documents are read from replicas")
        log("couchbase: " + "; ".join(parts))
        self._logged, self._logged_at = (dict(self.lost), self.healthy), now
