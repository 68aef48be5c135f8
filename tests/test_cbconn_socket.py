"""cbconn with the real SDK and a real socket to a port nothing listens on: the
start-up does not wait for an absent cluster. (The rest of cbconn at the SDK
boundary, without a socket: test_cbconn.py; against CAVES: test_caves.py.)"""

from __future__ import annotations

import time

import pytest

import cbconn
from store import StoreUnavailable

pytestmark = pytest.mark.socket


def test_start_up_does_not_wait_for_an_absent_cluster(capfd):
    """Nothing listens on port 1: from_environ returns at once, lookups fail fast,
    and each failed attempt is one stderr line that does not show the password."""
    started = time.monotonic()
    store = cbconn.CouchbaseStore.from_environ({
        "COUCHBASE_HOST": "couchbase://127.0.0.1:1", "COUCHBASE_PASSWORD": "pw-9c1e77",
        "COUCHBASE_CONNECT_TIMEOUT": "0.5",
    })
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
        while "failed (attempt 1)" not in err and time.monotonic() < deadline:
            time.sleep(0.1)
            err += capfd.readouterr().err
    finally:
        store.close()
    lines = [line for line in err.splitlines() if "failed (attempt" in line]
    assert lines, err
    assert "retrying in" in lines[0] and "127.0.0.1:1" in lines[0]
    assert "pw-9c1e77" not in err
