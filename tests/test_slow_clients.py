"""Slow and greedy clients: slowloris, idle keep-alive, the connection cap, and
thousands of idle connections, against the real service with short timeouts."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import re
import resource
import selectors
import socket
import sqlite3
import threading
import time

import pytest
from conftest import TOKEN

from testkit import LAYOUT, ServiceProcess, scrape

pytestmark = pytest.mark.socket

HEADER_TIMEOUT = 1.0
IDLE_TIMEOUT = 2.0
TICK = 0.25  # the watchdog's period: a timeout is enforced within it
SLACK = 0.75  # scheduling on a busy 2-core machine


def open_files_limit(pid: int) -> tuple[int, int]:
    """The soft and hard RLIMIT_NOFILE of a process, from /proc/<pid>/limits."""
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no 'Max open files' line")


def threads_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        found = re.search(r"^Threads:\s+(\d+)", f.read(), re.M)
    assert found, f"no Threads line for process {pid}"
    return int(found.group(1))


def get_when_admitted(svc: ServiceProcess, path: str, timeout: float = 5) -> bytes:
    """GET a path, polling while the connection cap answers 503 (a place frees when a close is processed)."""
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = svc.get(path)
        if status == 200:
            return body
        assert status == 503 and time.monotonic() < deadline, (status, body[:200])
        time.sleep(0.05)


def metric(svc: ServiceProcess, name: str) -> float:
    """The value of one sample, named as /metrics writes it: ``name`` or ``name{label="value",...}``."""
    text = get_when_admitted(svc, "/metrics").decode()
    bare, _, labels = name.partition("{")
    wanted = dict(scrape.LABEL.findall(labels))
    found = [value for sample, have, value in scrape.samples(text) if sample == bare and have == wanted]
    assert found, f"no {name} in /metrics"
    return found[0]


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


@contextlib.contextmanager
def fd_soft_limit(soft: int):
    """Set this test process's soft open-file limit; a child started inside inherits it."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


@pytest.fixture(scope="module")
def short_timeouts(seeded_db, tmp_path_factory):
    log = tmp_path_factory.mktemp("slow") / "service.log"
    svc = ServiceProcess(
        {"USERPROFILE_DB": str(seeded_db)},
        "--header-timeout",
        str(HEADER_TIMEOUT),
        "--idle-timeout",
        str(IDLE_TIMEOUT),
        log_path=log,
    ).start(wait_for="/readyz")
    yield svc
    svc.stop()
    assert "Traceback" not in svc.log() and TOKEN not in svc.log()


def test_slowloris_is_cut_off_after_the_header_timeout_while_others_are_served(short_timeouts):
    svc = short_timeouts
    trickle = b"GET /api/v1/id/1 HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: a\r\n" * 1000
    slow = [socket.create_connection((svc.host, svc.port), timeout=5) for _ in range(20)]
    started = time.monotonic()
    cut_at: dict[int, float] = {}
    answers: dict[int, bytes] = {}
    sel = selectors.DefaultSelector()
    for i, s in enumerate(slow):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)

    def attack():
        sent = 0
        while len(cut_at) < len(slow) and time.monotonic() - started < HEADER_TIMEOUT + 5:
            for i, s in enumerate(slow):
                if i not in cut_at:
                    with contextlib.suppress(OSError):
                        s.send(trickle[sent : sent + 3])  # 3 bytes each 50 ms: always progressing, never done
            sent += 3
            for key, _ in sel.select(timeout=0.05):
                i = key.data
                try:
                    chunk = slow[i].recv(65536)  # key.fileobj, as the socket it is
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    chunk = b""
                answers[i] = answers.get(i, b"") + chunk
                if not chunk:
                    cut_at[i] = time.monotonic() - started
                    sel.unregister(key.fileobj)

    attacker = threading.Thread(target=attack)
    attacker.start()
    # Meanwhile a normal client is served at full speed on a keep-alive connection.
    conn = svc.connection(timeout=5)
    latencies: list[float] = []
    while attacker.is_alive() and len(latencies) < 2000:
        t = time.monotonic()
        conn.request("GET", f"/api/v1/id/{len(latencies) % 300 + 1}", headers={"Authorization": f"Bearer {TOKEN}"})
        resp = conn.getresponse()
        assert resp.status == 200
        resp.read()
        latencies.append(time.monotonic() - t)
    attacker.join()
    conn.close()
    for s in slow:
        s.close()

    assert len(cut_at) == len(slow), f"{len(slow) - len(cut_at)} slowloris connections were never cut off"
    assert min(cut_at.values()) >= HEADER_TIMEOUT - 0.05
    assert max(cut_at.values()) <= HEADER_TIMEOUT + TICK + SLACK, sorted(cut_at.values())
    # Each was answered 408; the answer may be lost to the reset (the client was still sending).
    assert metric(svc, 'userprofile_connections_timed_out_total{phase="headers"}') == len(slow)
    for data in answers.values():  # when the answer arrived before the reset, it is a 408 in JSON
        if data:
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 "), data[:200]
            assert json.loads(body)["status"] == "failure"
    assert len(latencies) >= 20, "the normal client was starved"
    assert max(latencies) < 0.5, f"slowest normal request took {max(latencies):.3f}s"
    latencies.sort()
    assert latencies[len(latencies) // 2] < 0.05


def test_idle_keep_alive_connections_are_closed_after_the_idle_timeout(short_timeouts):
    svc = short_timeouts
    silent = socket.create_connection((svc.host, svc.port), timeout=10)  # never sends a byte
    silent_opened = time.monotonic()
    idle = socket.create_connection((svc.host, svc.port), timeout=10)
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle.recv(65536).startswith(b"HTTP/1.1 200 ")
    answered = time.monotonic()

    # Meanwhile a connection in use is not idle: a request every half timeout keeps it open past it.
    busy = svc.connection(timeout=5)
    busy_statuses = []

    def keep_busy():
        for _ in range(3):
            busy.request("GET", "/healthz")
            resp = busy.getresponse()
            resp.read()
            busy_statuses.append(resp.status)
            time.sleep(IDLE_TIMEOUT / 2)  # pacing, the point of this client

    busy_thread = threading.Thread(target=keep_busy)
    busy_thread.start()
    assert read_until_closed(idle, timeout=IDLE_TIMEOUT + 5) == b""  # closed cleanly, no stray answer
    closed_after = time.monotonic() - answered
    # A connection that never sent a byte was closed after the idle timeout too.
    assert read_until_closed(silent, timeout=IDLE_TIMEOUT + 5) == b""
    silent_closed_after = time.monotonic() - silent_opened
    busy_thread.join()
    assert silent_closed_after <= IDLE_TIMEOUT + TICK + SLACK, silent_closed_after
    assert IDLE_TIMEOUT - 0.05 <= closed_after <= IDLE_TIMEOUT + TICK + SLACK, closed_after
    sock = busy.sock
    busy.request("GET", "/healthz")
    assert busy.getresponse().read() == b'{"status":"ok"}' and busy.sock is sock, "the busy connection was closed"
    assert busy_statuses == [200] * 3
    busy.close()


def test_connections_beyond_the_cap_get_503_and_no_thread(seeded_db, tmp_path):
    cap = 50
    svc = ServiceProcess(
        {"USERPROFILE_DB": str(seeded_db)}, "--max-connections", str(cap), log_path=tmp_path / "log"
    ).start(wait_for="/readyz")
    assert svc.proc is not None  # started
    held: list[socket.socket] = []
    try:
        for _ in range(cap):
            s = socket.create_connection((svc.host, svc.port), timeout=5)
            held.append(s)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # admitted: answered, and kept open
            assert s.recv(4096).startswith(b"HTTP/1.1 200 "), f"connection {len(held)} was not admitted"
        # Now every place is taken by an idle connection: the next ones are refused with a 503.
        threads_at_cap = threads_of(svc.proc.pid)
        for _ in range(30):
            with socket.create_connection((svc.host, svc.port), timeout=5) as extra:
                answer = read_until_closed(extra, timeout=5)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503 "), answer[:200]
            assert b"Connection: close" in head
            assert b"\r\nRetry-After: 1\r\n" in head and b"\r\nCache-Control: no-store\r\n" in head
            assert b"\r\nX-Content-Type-Options: nosniff\r\n" in head
            assert b"\r\nDate: " in head  # like every other answer
            assert json.loads(body) == {
                "status": "failure",
                "message": {"error": "Service Unavailable: too many connections"},
            }
        assert threads_of(svc.proc.pid) <= threads_at_cap + 2, "a refused connection got a thread"
        # One place freed: a new client is served again.
        held.pop().close()
        assert get_when_admitted(svc, "/healthz") == b'{"status":"ok"}'
        assert metric(svc, "userprofile_connections_rejected_total") >= 30
    finally:
        for s in held:
            s.close()
        assert svc.stop() == 0
    assert "Traceback" not in svc.log()


@pytest.fixture(scope="module")
def low_fd_start(seeded_db, tmp_path_factory):
    """A service started with a soft open-file limit far below its hard limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    low = min(1024, hard // 2)
    log = tmp_path_factory.mktemp("fds") / "service.log"
    with fd_soft_limit(low):
        svc = ServiceProcess({"USERPROFILE_DB": str(seeded_db)}, log_path=log)
        svc.start(wait_for="/readyz")
    yield svc, low, hard
    svc.stop()
    assert "Traceback" not in svc.log() and TOKEN not in svc.log()


def test_the_open_file_soft_limit_is_raised_to_the_hard_limit(low_fd_start):
    svc, low, hard = low_fd_start
    assert open_files_limit(svc.proc.pid) == (hard, hard), f"started with a soft limit of {low}"


def test_two_thousand_idle_connections_do_not_stop_a_normal_client(low_fd_start):
    svc, _low, hard = low_fd_start
    count = 2000
    if hard < count + 200:
        pytest.fail(f"the hard open-file limit ({hard}) is below {count + 200}: raise it (ulimit -Hn)")
    idle: list[socket.socket] = []
    with fd_soft_limit(hard):  # this test process needs 2,000 sockets too
        try:
            for _ in range(count):
                s = socket.create_connection((svc.host, svc.port), timeout=10)
                idle.append(s)
            deadline = time.monotonic() + 30
            while metric(svc, "userprofile_connections_open") < count:
                assert time.monotonic() < deadline, "the idle connections were not all accepted"
                time.sleep(0.1)
            # The 2,000 are open and idle (past the service's own start limit of 1024 files):
            # a normal client is still served within a second, on a new connection each time.
            for i in range(1, 21):
                t = time.monotonic()
                status, _, body = svc.get(f"/api/v1/id/{i}", TOKEN)
                assert status == 200 and json.loads(body)[0]["record_id"] == i
                assert time.monotonic() - t < 1.0
            # The idle ones are still open and usable: no one was dropped to make room.
            for s in idle[:: count // 10]:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert s.recv(4096).startswith(b"HTTP/1.1 200 ")
        finally:
            for s in idle:
                s.close()
    assert svc.proc.poll() is None


# -- the write deadline ---------------------------------------------------------------
WRITE_TIMEOUT = 4.0


@pytest.fixture
def short_write_timeout(seeded_db, tmp_path):
    # No recycling: the write deadline is what is tested, and a client that pipelines without
    # reading is otherwise released after its MAX_REQUESTS_PER_CONNECTION answers (below).
    svc = ServiceProcess(
        {"USERPROFILE_DB": str(seeded_db)},
        "--write-timeout",
        str(WRITE_TIMEOUT),
        "--header-timeout",
        "2",
        "--idle-timeout",
        "30",
        "--max-requests-per-connection",
        "0",
        log_path=tmp_path / "service.log",
    ).start(wait_for="/readyz")
    yield svc
    svc.stop()
    assert "Traceback" not in svc.log() and TOKEN not in svc.log()
    assert " error: " not in svc.log(), svc.log()[-2000:]


def never_reading_client(svc: ServiceProcess, seeded_db, receive_buffer: int | None = 4096) -> socket.socket:
    """Pipeline requests for the largest answer (with a tiny receive buffer, or the system's)
    and never read: the server's writes to it block once every buffer on the way is full."""
    with sqlite3.connect(seeded_db) as conn:
        (nickname,) = conn.execute(
            f"SELECT nickname FROM {LAYOUT.profiles} GROUP BY nickname ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()
    request = f"GET /api/v1/nickname/{nickname} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    s = socket.socket()
    if receive_buffer is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    s.connect((svc.host, svc.port))
    s.settimeout(0.5)
    # In batches: sent one by one, the megabytes the buffers hold took 20 clients on a busy
    # machine longer than the write timeout, which then cut them off while they still sent.
    batch = request.encode() * 500
    try:
        for _ in range(200):
            s.sendall(batch)
    except TimeoutError:
        return s  # the server stopped reading: its writes to us are blocked
    raise AssertionError("the answers never filled the buffers")


def test_clients_that_never_take_their_answers_are_cut_off_after_the_write_timeout(short_write_timeout, seeded_db):
    svc = short_write_timeout
    threads_before = threads_of(svc.proc.pid)
    with concurrent.futures.ThreadPoolExecutor(20) as pool:  # all at once: well within the deadline
        greedy = list(pool.map(lambda _: never_reading_client(svc, seeded_db), range(20)))
    started = time.monotonic()
    try:
        assert metric(svc, "userprofile_connections_open") >= 20
        # Others are served throughout, and promptly.
        served = 0
        while time.monotonic() - started < WRITE_TIMEOUT + 3 * TICK + SLACK:
            t = time.monotonic()
            assert svc.get("/api/v1/id/7", TOKEN)[0] == 200
            assert time.monotonic() - t < 1
            served += 1
        assert served > 10
        # By now every greedy connection was closed by the server, and its thread freed.
        freed = wait_until_value(lambda: metric(svc, "userprofile_connections_open"), 1, timeout=5)
        assert freed <= 1, (freed, svc.get("/metrics")[2].decode()[-900:])  # 1: the /metrics request itself
        assert metric(svc, 'userprofile_connections_timed_out_total{phase="write"}') == 20
        assert threads_of(svc.proc.pid) <= threads_before + 1
        for s in greedy:  # the client sees its connection end, after what was sent before it
            s.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                while s.recv(1 << 20):
                    pass
    finally:
        for s in greedy:
            s.close()


def pipeline_and_never_read(svc: ServiceProcess, request: bytes, count: int) -> socket.socket:
    """Send ``count`` copies of a request at once, as far as the buffers take them, and never read."""
    s = socket.create_connection((svc.host, svc.port), timeout=10)
    s.setblocking(False)
    data = memoryview(request * count)
    with contextlib.suppress(BlockingIOError):
        while data:
            data = data[s.send(data) :]
    return s


def test_thirty_pipelining_never_readers_at_once_are_all_released_within_the_write_timeout(
    short_write_timeout, seeded_db
):
    """A connection whose client has not taken its earlier answers is not served the requests it
    queued behind them (the bytes written but unread are bounded), so its write blocks and the
    deadline bites soon after it starts: however many do it at once, each is released within
    the write timeout and 2 s. (Served all the thousands of requests the buffers hold before
    the write could block, 30 such connections outlasted the deadline by far.)"""
    svc = short_write_timeout
    with sqlite3.connect(seeded_db) as conn:
        (nickname,) = conn.execute(
            f"SELECT nickname FROM {LAYOUT.profiles} GROUP BY nickname ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()
    request = f"GET /api/v1/nickname/{nickname} HTTP/1.1\r\nHost: x\r\nx-access-token: {TOKEN}\r\n\r\n".encode()
    started = time.monotonic()
    greedy = [pipeline_and_never_read(svc, request, 20_000) for _ in range(30)]
    try:
        served = 0
        while (still_open := metric(svc, "userprofile_connections_open") - 1) > 0:  # 1: the /metrics request
            assert time.monotonic() - started < WRITE_TIMEOUT + 2, (
                f"{still_open:.0f} of 30 still open {time.monotonic() - started:.1f} s after they connected"
            )
            t = time.monotonic()
            assert svc.get("/api/v1/id/7", TOKEN)[0] == 200  # others are served meanwhile, promptly
            assert time.monotonic() - t < 1
            served += 1
        assert metric(svc, 'userprofile_connections_timed_out_total{phase="write"}') == 30
        assert served > 0
    finally:
        for s in greedy:
            s.close()


def test_a_client_that_never_reads_its_answers_does_not_stall_others(short_write_timeout, seeded_db):
    server = short_write_timeout
    greedy = never_reading_client(server, seeded_db)
    try:
        for i in range(1, 21):
            started = time.monotonic()
            assert server.get(f"/api/v1/id/{i}", TOKEN)[0] == 200
            assert time.monotonic() - started < 1
    finally:
        greedy.close()


def test_a_slow_reader_that_keeps_taking_its_answer_is_not_cut_off(short_write_timeout):
    """The deadline is for a client that takes nothing: each answer is written within it."""
    svc = short_write_timeout
    s = socket.create_connection((svc.host, svc.port), timeout=10)
    request = f"GET /api/v1/picture/raw/2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    s.sendall(request * 3)
    received = b""
    deadline = time.monotonic() + 5
    while received.count(b"HTTP/1.1 200 OK") < 3 or not received.endswith(b"\x82"):  # a PNG ends IEND..\xae\x42\x60\x82
        assert time.monotonic() < deadline, received[:200]
        received += s.recv(512)
        time.sleep(0.01)  # about 50 KB/s: slow, but never stalled for the whole deadline
    s.close()
    assert metric(svc, 'userprofile_connections_timed_out_total{phase="write"}') == 0


def wait_until_value(read, target: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    value = read()
    while value > target and time.monotonic() < deadline:
        time.sleep(0.1)
        value = read()
    return value


def test_a_client_that_pipelines_without_reading_gets_its_answers_then_a_clean_close(seeded_db, tmp_path):
    """After MAX_REQUESTS_PER_CONNECTION answers the server closes, however many requests were
    sent, and lingers: the answers already sent are not destroyed by a reset."""
    svc = ServiceProcess(
        {"USERPROFILE_DB": str(seeded_db)}, "--max-requests-per-connection", "100", log_path=tmp_path / "service.log"
    ).start()
    try:
        s = socket.create_connection((svc.host, svc.port), timeout=10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 500)
        released = wait_until_value(lambda: metric(svc, "userprofile_connections_open"), 1, timeout=6)
        assert released <= 1  # the /metrics request's own
        received = b""
        while chunk := s.recv(1 << 20):  # a reset would raise here
            received += chunk
        assert received.count(b"HTTP/1.1 200 OK") == 100
        assert received.count(b"Connection: close") == 1 and received.rstrip(b"}").endswith(b'{"status":"ok"')
    finally:
        svc.stop()
