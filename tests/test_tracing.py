"""Traces received by a real OpenTelemetry Collector (tools/install_otelcol.sh builds it from
the Go module proxy, a few minutes the first time; testkit/otelcol.py runs it): the real
service's spans arrive with the caller's trace id and parent; on CAVES, the Couchbase SDK's
spans under the service's; nothing for a caller that does not record, nothing at all with
export off; and a collector that does not answer costs requests nothing."""

from __future__ import annotations

import itertools
import socket
import time

import pytest
from conftest import TOKEN

from testkit import ServiceProcess, free_port, run_loaddata
from testkit.caves import Caves
from testkit.otelcol import Collector

pytestmark = pytest.mark.integration

SDK_SCOPE = "com.couchbase.client/python"  # the Couchbase SDK's instrumentation scope
SERVER, CLIENT = 2, 3  # OTLP's span kinds
NAMES = itertools.count(1)
TRACE_IDS = (f"{n:032x}" for n in itertools.count(0x4BF92F3577B34DA6A3CE929D0E0E4736))


def traceparent(trace_id: str, sampled: bool = True, parent: str = "00f067aa0ba902b7") -> dict:
    return {"traceparent": f"00-{trace_id}-{parent}-{'01' if sampled else '00'}"}


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    with Collector(tmp_path_factory.mktemp("otelcol")) as running:
        yield running


def exporting(collector: Collector, **env: str) -> dict:
    """A service's environment exporting to the collector, under a service name of its own (the
    tests share the collector), its batch sent every 50 ms."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_SERVICE_NAME": f"userprofile-test-{next(NAMES)}",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        **env,
    }


def spans_of(collector: Collector, name: str, count: int) -> list[dict]:
    """The spans of the service named ``name``, once ``count`` have arrived (or 20 s passed)."""
    deadline = time.monotonic() + 20
    while True:
        found = [s for s in collector.spans() if s["resource"].get("service.name") == name]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def logged_trace_id(svc: ServiceProcess, request_id: str) -> str:
    """The trace id of the access log's line for the request of that request id."""
    [line] = [line for line in svc.log().splitlines() if f" request_id={request_id} " in line]
    return line.rsplit(" trace_id=", 1)[1]


def test_a_request_s_span_continues_the_caller_s_trace(collector, seeded_db, tmp_path):
    env = exporting(collector, USERPROFILE_DB=str(seeded_db))
    svc = ServiceProcess(env, log_path=tmp_path / "service.log").start("/readyz")
    recorded, unrecorded, probe = next(TRACE_IDS), next(TRACE_IDS), next(TRACE_IDS)
    try:
        status, headers, _ = svc.get("/api/v1/id/1", TOKEN, headers={**traceparent(recorded), "X-Request-Id": "rq-1"})
        assert status == 200 and headers["X-Request-Id"] == "rq-1"
        assert svc.get("/api/v1/id/2", TOKEN, headers=traceparent(unrecorded, sampled=False))[0] == 200
        _, new_headers, _ = svc.get("/api/v1/nickname/shadowGecko", TOKEN)
        assert svc.get("/api/v1/id/999999", TOKEN, headers=traceparent(recorded, parent="1111111111111111"))[0] == 404
        assert svc.get("/healthz", headers=traceparent(probe))[0] == 200
    finally:
        assert svc.stop() == 0
    spans = spans_of(collector, env["OTEL_SERVICE_NAME"], 3)
    by_trace = {trace: [s for s in spans if s["traceId"] == trace] for trace in {s["traceId"] for s in spans}}
    assert unrecorded not in by_trace and probe not in by_trace, "a caller that does not record, a probe: no span"
    assert len(spans) == 3 and len(by_trace) == 2, spans

    found, not_found = sorted(by_trace.pop(recorded), key=lambda s: s["startTimeUnixNano"])
    assert found["parentSpanId"] == "00f067aa0ba902b7" and not_found["parentSpanId"] == "1111111111111111"
    assert (found["name"], found["kind"]) == ("GET /api/v1/id", SERVER)
    assert found["attributes"]["http.route"] == "/api/v1/id"
    assert int(found["attributes"]["http.response.status_code"]) == 200
    assert int(not_found["attributes"]["http.response.status_code"]) == 404
    assert found["attributes"]["http.request.method"] == "GET" and found["attributes"]["url.scheme"] == "http"
    assert found["scope"] == "userprofile-service"
    assert logged_trace_id(svc, "rq-1") == recorded, "the log line and the caller's trace meet"

    [(new_trace, [new])] = by_trace.items()  # no traceparent: a new trace, its id logged
    assert "parentSpanId" not in new or not new["parentSpanId"]
    assert new["name"] == "GET /api/v1/nickname"
    assert logged_trace_id(svc, new_headers["X-Request-Id"]) == new_trace
    assert "Traceback" not in svc.log() and TOKEN not in svc.log()


def test_the_couchbase_sdk_s_spans_are_children_of_the_service_s(collector, tmp_path):
    with Caves(log_path=tmp_path / "caves.log") as caves:
        caves.add_bucket()
        store = caves.env(COUCHBASE_CONNECT_TIMEOUT="3")
        run_loaddata(store, "--count", "20", "--token", TOKEN)
        env = exporting(collector, **store, COUCHBASE_HEALTH_INTERVAL="0.2")
        svc = ServiceProcess(env, "--token-refresh", "0.5", log_path=tmp_path / "service.log").start("/readyz")
        id_trace, picture_trace, unrecorded = next(TRACE_IDS), next(TRACE_IDS), next(TRACE_IDS)
        try:
            time.sleep(2)  # pings and token re-reads, which must start no trace of their own
            assert svc.get("/api/v1/id/1", TOKEN, headers=traceparent(id_trace))[0] == 200
            assert svc.get("/api/v1/picture/raw/2", TOKEN, headers=traceparent(picture_trace))[0] == 200
            assert svc.get("/api/v1/id/3", TOKEN, headers=traceparent(unrecorded, sampled=False))[0] == 200
            time.sleep(1)
        finally:
            assert svc.stop() == 0
    spans = spans_of(collector, env["OTEL_SERVICE_NAME"], 6)
    assert {s["traceId"] for s in spans} == {id_trace, picture_trace}, "only the recorded requests' traces"
    for trace in (id_trace, picture_trace):
        in_trace = {s["spanId"]: s for s in spans if s["traceId"] == trace}
        [server] = [s for s in in_trace.values() if s["scope"] == "userprofile-service"]
        assert server["kind"] == SERVER and server["parentSpanId"] == "00f067aa0ba902b7"
        gets = [s for s in in_trace.values() if s["parentSpanId"] == server["spanId"]]
        assert [(g["name"], g["scope"]) for g in gets] == [("get", SDK_SCOPE)], in_trace
        assert gets[0]["attributes"]["db.system.name"] == "couchbase"
        assert gets[0]["attributes"]["couchbase.collection.name"] in ("user_data", "user_images")
        dispatches = [s for s in in_trace.values() if s["parentSpanId"] == gets[0]["spanId"]]
        assert [d["name"] for d in dispatches] == ["dispatch_to_server"]
        assert int(server["startTimeUnixNano"]) <= int(gets[0]["startTimeUnixNano"])
        assert int(gets[0]["endTimeUnixNano"]) <= int(server["endTimeUnixNano"])
    assert "Traceback" not in svc.log()


def test_nothing_is_sent_with_export_off(collector, seeded_db, tmp_path):
    """Disabled with the collector named, and with no endpoint at all: no span; then a service
    that exports shows the collector was receiving all along."""
    silent = next(TRACE_IDS)
    off = [
        exporting(collector, USERPROFILE_DB=str(seeded_db), OTEL_SDK_DISABLED="true"),
        {"USERPROFILE_DB": str(seeded_db), "OTEL_SERVICE_NAME": "userprofile-test-no-endpoint"},
    ]
    for n, env in enumerate(off):
        svc = ServiceProcess(env, log_path=tmp_path / f"off-{n}.log").start("/readyz")
        try:
            for k, path in enumerate(("/api/v1/id/1", "/api/v1/nickname/shadowGecko", "/api/v1/openapi.json")):
                assert svc.get(path, TOKEN, headers={**traceparent(silent), "X-Request-Id": f"off-{n}-{k}"})[0] == 200
        finally:
            assert svc.stop() == 0
        assert "traces: exporting" not in svc.log()
        assert logged_trace_id(svc, f"off-{n}-0") == silent, "the caller's trace id is logged all the same"
    on = exporting(collector, USERPROFILE_DB=str(seeded_db))
    svc = ServiceProcess(on, log_path=tmp_path / "on.log").start("/readyz")
    try:
        assert svc.get("/api/v1/id/1", TOKEN, headers=traceparent(next(TRACE_IDS)))[0] == 200
    finally:
        assert svc.stop() == 0
    assert len(spans_of(collector, on["OTEL_SERVICE_NAME"], 1)) == 1
    names = {env.get("OTEL_SERVICE_NAME") for env in off}
    assert [s for s in collector.spans() if s["traceId"] == silent or s["resource"].get("service.name") in names] == []


@pytest.mark.parametrize("collector_is", ["refusing", "silent"])
def test_a_collector_that_does_not_answer_costs_requests_nothing(collector_is, seeded_db, tmp_path):
    """Nothing listens (refused), or a listener that never reads (the exporter waits out its
    timeout): every request is answered at once, the log says so once a second at most, and
    the service still exits within its bound after SIGTERM."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        if collector_is == "silent":
            listener.listen(1000)  # connections complete in the kernel; nothing is ever read
        port = listener.getsockname()[1] if collector_is == "silent" else free_port()
        env = {
            "USERPROFILE_DB": str(seeded_db),
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }
        svc = ServiceProcess(env, log_path=tmp_path / "service.log").start("/readyz")
        started = time.monotonic()
        try:
            slowest = 0.0
            for n in range(300):
                asked = time.monotonic()
                assert svc.get(f"/api/v1/id/{n % 300 + 1}", TOKEN, headers=traceparent(next(TRACE_IDS)))[0] == 200
                slowest = max(slowest, time.monotonic() - asked)
            serving = time.monotonic() - started
        finally:
            stopping = time.monotonic()
            assert svc.stop(timeout=30) == 0
            stopped_after = time.monotonic() - stopping
    assert slowest < 1.0, f"a request waited {slowest:.2f} s on the collector"
    assert stopped_after < 10, f"SIGTERM to exit: {stopped_after:.1f} s (at most 3 s of it for the spans)"
    complaints = [line for line in svc.log().splitlines() if " traces: " in line and "exporting to" not in line]
    assert len(complaints) <= serving + stopped_after + 2, complaints
    assert "Traceback" not in svc.log()
