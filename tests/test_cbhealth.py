"""cbhealth, in-process: what pings and lookups say about the key-value nodes, and the
flags the Couchbase store's gets read from it (the gets themselves: test_cbconn.py)."""

from __future__ import annotations

import pytest

from cbhealth import HEDGE_SHARE, HEDGES_TO_PING, NodeHealth

pytestmark = pytest.mark.inprocess

LOST = {"b:2": "timeout"}


def test_a_lookup_is_refused_only_when_no_node_answers():
    health = NodeHealth(replica_reads=True)
    health.after_ping({"a:1"}, LOST)  # one node of two: lookups go on, from every copy
    assert health.healthy and health.degraded
    health.after_ping(set(), LOST)  # the ping listed only the lost node...
    assert not health.healthy  # ...and no lookup had been answered since
    health.after_ping({"a:1"}, {})
    assert health.healthy and not health.degraded
    health.answered = True  # a lookup was answered through the replicas since the last ping
    health.after_ping(set(), LOST)
    assert health.healthy
    health.after_ping(set(), {"a:1": "timeout", "b:2": "timeout"})  # and nothing answered since
    assert not health.healthy


def test_with_replica_reads_off_a_lost_node_changes_no_get():
    health = NodeHealth(replica_reads=False)
    health.after_ping({"a:1"}, LOST)
    assert health.healthy and not health.degraded and not health.hedging


def test_a_lost_node_and_its_return_are_logged_once_at_most_a_line_a_second(capsys):
    health = NodeHealth(replica_reads=True)
    for _ in range(50):  # pings in quick succession, the node lost
        health.after_ping({"a:1"}, {"b:2": "timeout: code=14, message=unambiguous_timeout"})
    health._logged_at -= 1  # a second later
    for _ in range(5):
        health.after_ping({"a:1"}, LOST)
        health.after_ping({"a:1", "b:2"}, {})
        health.after_ping({"a:1"}, LOST)
    health._logged_at -= 1
    health.after_ping({"a:1", "b:2"}, {})
    health.after_ping({"a:1", "b:2"}, {})
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    assert "key-value node b:2 lost (timeout: code=14, message=unambiguous_timeout)" in lines[0]
    assert "read from replicas" in lines[0]
    assert "key-value node b:2 answers again" in lines[1]


def test_a_lost_node_no_longer_pinged_is_gone_not_back(capsys):
    """Every node of a cluster lost, then a connection to another (its records moved): the lost
    nodes are no longer pinged, and the log says they are gone, not that they answer."""
    health = NodeHealth(replica_reads=True)
    health.after_ping({"a:1"}, {"b:2": "timeout"})
    health._logged_at -= 1
    health.after_ping({"m:3", "n:4"}, {})
    lines = capsys.readouterr().err.splitlines()
    assert "key-value node b:2 is gone" in lines[-1] and "answers again" not in lines[-1], lines


def test_no_node_answering_and_its_end_are_logged(capsys):
    health = NodeHealth(replica_reads=True)
    health.after_ping(set(), {"a:1": "timeout", "b:2": "timeout"})
    health._logged_at -= 1
    health.after_ping({"a:1", "b:2"}, {})
    first, second = capsys.readouterr().err.splitlines()
    assert "no key-value node answers: lookups refused" in first
    assert "lookups resume" in second


def test_a_ping_is_called_for_at_the_tenth_hedged_get():
    health = NodeHealth(replica_reads=True)
    assert [health.hedged() for _ in range(HEDGES_TO_PING + 2)] == [False] * (HEDGES_TO_PING - 1) + [True, False, False]
    health.after_ping({"a:1", "b:2"}, {})  # the count starts again
    assert [health.hedged() for _ in range(HEDGES_TO_PING)][-1]


def test_many_slow_gets_with_every_node_answering_pause_hedging(capsys):
    health = NodeHealth(replica_reads=True)
    health.gets = 100
    for _ in range(int(100 * HEDGE_SHARE) + 10):  # over the share, and over 10
        health.hedged()
    health.after_ping({"a:1", "b:2"}, {})
    assert not health.hedging
    assert "15 of 100 gets waited over the replica delay" in capsys.readouterr().err
    health.after_ping({"a:1", "b:2"}, {})  # the pause is not over
    assert not health.hedging
    health._hedging_from = 0
    health.after_ping({"a:1", "b:2"}, {})
    assert health.hedging


def test_a_few_slow_gets_do_not_pause_hedging():
    health = NodeHealth(replica_reads=True)
    health.gets = 1000
    for _ in range(11):  # over 10, but not over 5% of 1,000
        health.hedged()
    health.after_ping({"a:1", "b:2"}, {})
    assert health.hedging
