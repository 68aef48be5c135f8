"""Turn: the lock that lets one request at a time from routing to its first write, fairly
(after its patience, waiters go in arrival order), without a server or a socket."""

from __future__ import annotations

import threading
import time

import pytest

from turns import Turn

pytestmark = pytest.mark.inprocess


def test_a_turn_is_held_by_one_thread_at_a_time():
    turn, inside, most = Turn(patience=0.001), [0], [0]

    def work():
        for _ in range(50):
            with turn:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                time.sleep(0.0002)
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert most[0] == 1 and inside[0] == 0


def arrival_order(turn) -> list[str]:
    """Who gets the turn when three waiters have waited past their patience and
    a newcomer asks at the very moment the turn is free (a plain lock lets the
    newcomer go first)."""
    order = []
    turn.__enter__()  # hold the turn while waiters arrive one by one

    def wait(name):
        with turn:
            order.append(name)

    waiters = []
    for name in "abc":
        waiters.append(threading.Thread(target=wait, args=(name,)))
        waiters[-1].start()
        time.sleep(0.1)  # each has waited past its patience before the next comes
    turn.__exit__(None, None, None)
    with turn:
        order.append("newcomer")
    for t in waiters:
        t.join(10)
    return order


def test_after_patience_turns_go_in_arrival_order_and_newcomers_wait():
    assert arrival_order(Turn(patience=0.05)) == ["a", "b", "c", "newcomer"]
