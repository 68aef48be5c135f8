"""connection: a connection's rules on bytes, no socket: when it stays open and says for how long,
when it is recycled, and that a draining server closes after each answer. The request corpus
(tests/test_hostile.py) runs through the same Conversation."""

from __future__ import annotations

import dataclasses
import io
import time

import pytest

import settings
from connection import Conversation, Site, keep_alive_header, too_many_connections
from metrics import Metrics
from service import Service, Serving, TokenKeeper
from testkit import BytesWriter, EmptyStore

pytestmark = pytest.mark.inprocess

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def conversation(data: bytes, **options) -> tuple[Conversation, BytesWriter]:
    opts = dataclasses.replace(settings.defaults(), **options)
    service = Service(EmptyStore(), TokenKeeper(EmptyStore(), refresh=60), Metrics(), b"{}")
    writer = BytesWriter()
    return Conversation(io.BufferedReader(io.BytesIO(data)), writer, Site(service, opts)), writer


def heads(written: bytes | bytearray) -> list[str]:
    return [part.split("\r\n\r\n")[0] for part in written.decode().split("HTTP/1.1 ")[1:]]


def run(conv: Conversation) -> None:
    while not conv.closing:
        conv.step()


@pytest.mark.parametrize(
    "idle, header",
    [
        (75, b"Keep-Alive: timeout=74\r\n"),
        (3, b"Keep-Alive: timeout=2\r\n"),
        (2.5, b"Keep-Alive: timeout=1\r\n"),
        (1.5, b""),
    ],
)
def test_the_keep_alive_hint_is_a_second_under_the_idle_timeout(idle, header):
    assert keep_alive_header(idle) == header


def test_a_keep_alive_answer_says_how_long_the_connection_may_idle():
    conv, writer = conversation(
        HEALTHZ * 2 + b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", idle_timeout=75
    )
    run(conv)
    answers = heads(writer.written)
    assert len(answers) == 3
    assert all("\r\nKeep-Alive: timeout=74" in a and "Connection: close" not in a for a in answers[:2])
    assert "\r\nConnection: keep-alive\r\nKeep-Alive: timeout=74" in answers[2]


def test_an_answer_that_closes_does_not_announce_a_timeout():
    conv, writer = conversation(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + HEALTHZ)
    run(conv)
    [answer] = heads(writer.written)
    assert "Connection: close" in answer and "Keep-Alive" not in answer


def test_the_last_of_max_requests_per_connection_closes_the_connection():
    conv, writer = conversation(HEALTHZ * 10, max_requests_per_connection=4)
    run(conv)
    answers = heads(writer.written)
    assert len(answers) == 4
    assert ["Connection: close" in a for a in answers] == [False, False, False, True]


def test_no_limit_on_requests_when_it_is_zero():
    conv, writer = conversation(HEALTHZ * 1500, max_requests_per_connection=0, max_connection_age=0)
    run(conv)
    assert writer.written.count(b"200 OK") == 1500 and b"Connection: close" not in writer.written


def test_the_first_answer_past_the_connection_age_closes_it():
    conv, writer = conversation(HEALTHZ * 3, max_connection_age=0.05)
    assert time.monotonic() + 0.045 <= conv.retire_at <= time.monotonic() + 0.05  # spread downward, 10% at most
    conv.step()
    assert not conv.closing
    time.sleep(0.06)
    run(conv)
    answers = heads(writer.written)
    assert ["Connection: close" in a for a in answers] == [False, True]


def test_while_draining_every_answer_closes_its_connection_and_readiness_fails():
    conv, writer = conversation(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n" + HEALTHZ)
    drain = conv.site.drain
    assert isinstance(drain, Serving)
    drain.draining = True  # as server.Connections says after SIGTERM
    run(conv)
    [answer] = heads(writer.written)
    assert answer.startswith("503 ") and "Connection: close" in answer
    assert b"shutting down" in writer.written


def test_the_connection_caps_503_is_an_answer_like_the_others():
    """Its Date (the site's, renewed by the watchdog), Retry-After, no-store and Connection: close."""
    conv, _ = conversation(b"", retry_after=3)
    head, _, body = too_many_connections(conv.site).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 503 Service Unavailable"
    assert conv.site.date_header.rstrip(b"\r\n") in lines and conv.site.date_header.startswith(b"Date: ")
    assert {b"Retry-After: 3", b"Cache-Control: no-store", b"Connection: close"} <= set(lines)
    assert b"too many connections" in body and int(head.split(b"Content-Length: ")[1].split(b"\r")[0]) == len(body)
