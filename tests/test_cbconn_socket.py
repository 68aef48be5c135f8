"""cbconn over real sockets: with the real SDK and a port nothing listens on, the
start-up does not wait for an absent cluster; the probe of a lost node. (The rest of cbconn at the SDK
boundary, without a socket: test_cbconn.py; against CAVES: test_caves.py.)"""

from __future__ import annotations

import socket
import threading
import time

import pytest

import cbconn
import cbsdk
from store import StoreUnavailable

pytestmark = pytest.mark.socket


def test_start_up_does_not_wait_for_an_absent_cluster(capfd):
    """Nothing listens on port 1: from_environ returns at once, lookups fail fast,
    and each failed attempt is one stderr line that does not show the password."""
    started = time.monotonic()
    store = cbconn.CouchbaseStore.from_environ(
        {
            "COUCHBASE_HOST": "couchbase://127.0.0.1:1",
            "COUCHBASE_USER": "app",
            "COUCHBASE_PASSWORD": "pw-9c1e77",
            "COUCHBASE_CONNECT_TIMEOUT": "0.5",
        }
    )
    try:
        assert time.monotonic() - started < 0.5
        with pytest.raises(StoreUnavailable):
            store.get_profile("1")
        with pytest.raises(StoreUnavailable):
            store.ping()
        with pytest.raises(StoreUnavailable):
            store.wait_connected(0.1)
        assert time.monotonic() - started < 1
        deadline = time.monotonic() + 10
        err = ""
        while "(attempt 1)" not in err and time.monotonic() < deadline:
            time.sleep(0.1)
            err += capfd.readouterr().err
    finally:
        store.close()
    lines = [line for line in err.splitlines() if "(attempt 1)" in line]
    assert lines, err
    assert "retrying in" in lines[0] and "127.0.0.1:1" in lines[0]
    assert "pw-9c1e77" not in err


def test_a_node_answers_a_noop_on_a_new_connection():
    """The probe of a lost node: a real socket each, answering, silent (a frozen process:
    the kernel still accepts), and closed."""

    def listener(answer: bytes | None):
        server = socket.create_server(("127.0.0.1", 0))

        def serve():
            conn, _ = server.accept()
            with conn:
                if conn.recv(24) == cbsdk.NOOP and answer is not None:
                    conn.sendall(answer)
                time.sleep(0.5)

        threading.Thread(target=serve, daemon=True).start()
        return server, f"127.0.0.1:{server.getsockname()[1]}"

    refusal = bytes([0x81, 0x0A]) + bytes(4) + b"\x00\x24" + bytes(16)  # NOOP's answer: no access
    answering, answering_node = listener(refusal)
    silent, silent_node = listener(None)
    with answering, silent:
        assert cbsdk.answers_noop(answering_node, 1)
        started = time.monotonic()
        assert not cbsdk.answers_noop(silent_node, 0.2)
        assert time.monotonic() - started < 1
    assert not cbsdk.answers_noop(answering_node, 0.2)  # closed now
    assert not cbsdk.answers_noop("unnamed", 0.2)


def first_attempt(capfd, password: str) -> tuple[str, str]:
    """The real SDK against a port nothing listens on: the first failed attempt's log line (its
    stamp cut) and what the store's ping, /readyz's answer, says then."""
    store = cbconn.CouchbaseStore.from_environ(
        {
            "COUCHBASE_HOST": "couchbase://127.0.0.1:1",
            "COUCHBASE_USER": "app",
            "COUCHBASE_PASSWORD": password,
            "COUCHBASE_CONNECT_TIMEOUT": "0.5",
        }
    )
    try:
        err, deadline = "", time.monotonic() + 10
        while "(attempt 1)" not in err and time.monotonic() < deadline:
            time.sleep(0.05)
            err += capfd.readouterr().err
        with pytest.raises(StoreUnavailable) as raised:
            store.ping()
    finally:
        store.close()
    (line,) = [line.split(" ", 1)[1] for line in err.splitlines() if "(attempt 1)" in line]
    return line, str(raised.value)


def test_a_password_of_one_letter_or_a_word_masks_nothing_in_what_the_store_says(capfd):
    """No message is made with the password, so none is masked: with `x`, `password` or `timeout`
    the attempt's line and /readyz's cause are word for word those of a random password."""
    reference = first_attempt(capfd, "Zq8-unguessable-41c0")
    line, why = reference
    assert "***" not in line and "Exception" in line, line
    assert why.split("couchbase: not connected: ", 1)[1] in line
    for password in ("x", "password", "timeout"):
        assert first_attempt(capfd, password) == reference, password
