"""Turns: a lock that requests of an embedded store take one at a time (see server.py).

``Turn`` is cheap when free and fair under contention: past its patience a
waiter lines up (``Line``) and turns go in arrival order.
"""

from __future__ import annotations

import collections
import threading


class Line:
    """A lock that lets its waiters in in the order they came."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiters: collections.deque = collections.deque()
        self.busy = False

    def __enter__(self) -> None:
        with self._mutex:
            if not self.busy:
                self.busy = True
                return
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        waiter.acquire()  # released by __exit__, which hands the lock over directly

    def __exit__(self, *exc: object) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self.busy = False


class Turn:
    """Requests take turns (see server.py). A request takes a free turn
    at once, which is cheap; but a plain lock lets newcomers overtake waiters
    without limit, and under 512 connections some requests then waited over
    300 ms. So once a request has waited ``patience``, it lines up, newcomers
    line up behind it, and turns go in arrival order until the line is empty."""

    def __init__(self, patience: float):
        self._lock = threading.Lock()
        self._line = Line()
        self._patience = patience

    def __enter__(self) -> None:
        if not self._line.busy and self._lock.acquire(timeout=self._patience):
            return
        with self._line:
            self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
