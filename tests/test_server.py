"""server: the rules over the open connections, alone: the watchdog's sweep, the connection cap
and the drain's deadline, with fake handlers and a clock the test moves (no socket, no sleep)."""

from __future__ import annotations

import dataclasses
import io

import pytest

import settings
from connection import BUSY, HEADERS, IDLE, WRITING, Conversation, Site
from metrics import Metrics
from server import CLOSING_TIME, Connections
from service import Service, TokenKeeper
from testkit import BytesWriter, EmptyStore

pytestmark = pytest.mark.inprocess

OPTIONS = dataclasses.replace(settings.defaults(), idle_timeout=75, drain_idle=6, max_connections=3)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeHandler:
    """A connection's handler as the watchdog sees it: a real Conversation (no socket), and
    ``expire`` recorded instead of shutting a socket down."""

    def __init__(self, phase: str, deadline: float) -> None:
        service = Service(EmptyStore(), TokenKeeper(EmptyStore(), refresh=60), Metrics(), b"{}")
        self.conversation = Conversation(io.BufferedReader(io.BytesIO(b"")), BytesWriter(), Site(service, OPTIONS))
        self.conversation.phase, self.conversation.deadline = phase, deadline
        self.expired = 0

    def expire(self) -> None:
        self.expired += 1


def connections_of(clock: Clock, **handlers: FakeHandler) -> Connections:
    table = Connections(OPTIONS, clock)
    for name, handler in handlers.items():
        assert table.admit(name)
        table.started(name, handler)
    return table


def test_the_watchdog_ends_every_phase_past_its_deadline_but_never_a_store_call():
    clock = Clock()
    due, later = clock.now - 0.01, clock.now + 5
    handlers = {
        f"{phase}-{when}": FakeHandler(phase, deadline)
        for phase in (IDLE, HEADERS, WRITING, BUSY)
        for when, deadline in (("due", due), ("later", later))
    }
    table = Connections(dataclasses.replace(OPTIONS, max_connections=100), clock)
    for name, handler in handlers.items():
        table.admit(name)
        table.started(name, handler)
    table.sweep()
    expired = {name for name, handler in handlers.items() if handler.expired}
    assert expired == {"idle-due", "headers-due", "write-due"}
    clock.now += 10  # every deadline passed, and the store call still has none of its own here
    table.sweep()
    assert {name for name, h in handlers.items() if h.expired} == {n for n in handlers if not n.startswith(BUSY)}


def test_while_draining_a_connection_idle_drain_idle_seconds_is_ended_and_a_newer_one_is_not():
    clock = Clock()
    # An idle connection's deadline is when it went idle plus the idle timeout.
    old = FakeHandler(IDLE, clock.now - OPTIONS.drain_idle + OPTIONS.idle_timeout)
    new = FakeHandler(IDLE, clock.now - OPTIONS.drain_idle + 1 + OPTIONS.idle_timeout)
    table = connections_of(clock, old=old, new=new)
    table.sweep()
    assert (old.expired, new.expired) == (0, 0)  # not draining: the idle timeout is far off
    table.begin_drain(OPTIONS.shutdown_grace)
    table.sweep()
    assert (old.expired, new.expired) == (1, 0)
    clock.now += 1
    table.sweep()
    assert new.expired == 1


def test_the_cap_refuses_a_connection_beyond_it_until_one_closes():
    table = Connections(OPTIONS, Clock())
    assert [table.admit(n) for n in "abcd"] == [True, True, True, False]
    assert len(table) == 3
    table.closed("b")
    assert table.admit("d") and not table.admit("e")
    assert table.handlers() == []  # admitted, their threads not started yet: nothing for the watchdog


def test_the_drain_ends_when_no_connection_is_left_or_at_its_deadline():
    clock = Clock()
    busy = FakeHandler(BUSY, float("inf"))
    table = connections_of(clock, a=busy)
    assert not table.quiet()  # no drain yet: its deadline is never
    table.begin_drain(grace=20)
    assert table.drain_deadline == clock.now + 20 - CLOSING_TIME
    assert not table.quiet()
    clock.now = table.drain_deadline - 0.001
    assert not table.quiet()
    clock.now = table.drain_deadline
    assert table.quiet()
    clock.now -= 10
    table.closed("a")
    assert table.quiet()  # the last connection closed: no need to wait for the deadline


def test_a_short_grace_keeps_three_quarters_of_it_for_the_connections():
    clock = Clock()
    table = Connections(OPTIONS, clock)
    table.begin_drain(grace=1)
    assert table.drain_deadline == clock.now + 0.75


def test_in_flight_counts_the_connections_not_idle():
    clock = Clock()
    table = connections_of(clock, a=FakeHandler(IDLE, 0), b=FakeHandler(BUSY, 0), c=FakeHandler(WRITING, 0))
    assert table.in_flight() == 2
