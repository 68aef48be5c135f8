"""otelexport without a collector: the server span a request gets (its parent, name, attributes,
status), which requests get none, the sampler the settings name, and the SDK's warnings as the
service's log lines. The spans are read from an in-memory exporter added beside the service's own
(whose collector is never reached here: nothing is sent before the batch's delay); the real
collector is tests/test_tracing.py's."""

from __future__ import annotations

import io
import logging
from typing import Any, NamedTuple

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode

import otelexport
import settings
from httpparse import read_request
from tracecontext import NO_TRACE, TraceParent, request_id_of

pytestmark = pytest.mark.inprocess

TRACE_ID, PARENT_ID = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


@pytest.fixture(autouse=True)
def nothing_sent(monkeypatch):
    """The service's own batch is sent after an hour or 100,000 spans (the SDK reads these
    itself): no socket here."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "3600000")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "100000")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "100000")


def exporting(**env: str) -> tuple[otelexport.Exporting, InMemorySpanExporter]:
    options = settings.defaults({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", **env})
    traces = otelexport.Exporting(options)
    spans = InMemorySpanExporter()
    traces.provider.add_span_processor(SimpleSpanProcessor(spans))
    return traces, spans


def request(*headers: str, path: str = "/api/v1/id/1"):
    data = (f"GET {path} HTTP/1.1\r\nHost: x\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode()
    return read_request(io.BytesIO(data), settings.defaults())


class Handled(NamedTuple):
    request_id: str
    trace_id: str
    span: Any  # the recorded span, or None
    current: Any  # the current span while the request was answered
    store_traced: bool  # whether the store's gets took the SDK's traced path meanwhile


def handle(traces: otelexport.Exporting, req, route: str = "/api/v1/id", status: int = 200) -> Handled:
    """As connection.py does: begin, (the store call would run here), end when recorded."""
    id_line, trace_id, recorded = traces.begin(req)
    current, store_traced = trace.get_current_span(), traces.store.recording()
    if recorded is not None:
        traces.end(recorded, req.method, route, status)
    span = recorded[0] if recorded is not None else None
    return Handled(request_id_of(id_line), trace_id, span, current, store_traced)


def trace_id(span) -> str:
    return f"{span.context.trace_id:032x}"


CALLER_ON, CALLER_OFF = TraceParent(TRACE_ID, PARENT_ID, 1), TraceParent(TRACE_ID, PARENT_ID, 0)


@pytest.mark.parametrize(
    "name, new, caller_on, caller_off",
    [
        ("always_on", 1.0, True, True),
        ("always_off", 0.0, False, False),
        ("parentbased_always_on", 1.0, True, False),
        ("parentbased_always_off", 0.0, True, False),
        ("traceidratio", "ratio", None, None),
        ("parentbased_traceidratio", "ratio", True, False),
    ],
)
def test_every_sampler_the_settings_name_by_opentelemetry_s_rule(name, new, caller_on, caller_off):
    assert name in settings.SAMPLERS
    for ratio in (0.0, 0.3, 1.0):
        sampling = otelexport.sampler(name, ratio)
        theirs = TraceIdRatioBased(ratio).should_sample(None, int(TRACE_ID, 16), "x").decision.is_sampled()
        assert sampling.new == (ratio if new == "ratio" else new)
        assert sampling.caller(CALLER_ON) == (caller_on if caller_on is not None else theirs)
        assert sampling.caller(CALLER_OFF) == (caller_off if caller_off is not None else theirs)


def test_a_ratio_records_that_share_of_new_traces_and_decides_a_trace_id_as_opentelemetry_does():
    traces, spans = exporting(OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0.3")
    for _ in range(2000):
        handle(traces, request())
    assert 0.25 < len(spans.get_finished_spans()) / 2000 < 0.35  # 5 standard deviations
    caller = otelexport.sampler("traceidratio", 0.3).caller
    for n in range(2000):
        trace_id = f"{n * 0x9E3779B97F4A7C15 % (1 << 128):032x}"
        theirs = TraceIdRatioBased(0.3).should_sample(None, int(trace_id, 16), "x").decision.is_sampled()
        assert caller(TraceParent(trace_id, PARENT_ID, 0)) == theirs, trace_id


def test_the_samplers_are_the_settings_names():
    for name in settings.SAMPLERS:
        otelexport.sampler(name, 0.5)


@pytest.mark.parametrize(
    "env, url",
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "http://c:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}, "http://c:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c/otlp"}, "http://c/otlp/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/x"}, "http://t:1/x"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/x"},
            "http://t/x",
        ),
    ],
)
def test_the_traces_url_as_opentelemetry_s_exporters_make_it(env, url):
    assert otelexport.traces_url(settings.defaults(env)) == url


def test_a_request_continues_the_callers_trace_as_a_server_span_current_while_it_is_answered():
    traces, spans = exporting()
    found = handle(traces, request(f"traceparent: 00-{TRACE_ID}-{PARENT_ID}-01", "tracestate: vendor=x"))
    span: Any
    [span] = spans.get_finished_spans()
    assert trace_id(span) == found.trace_id == TRACE_ID
    assert span.parent is not None and f"{span.parent.span_id:016x}" == PARENT_ID and span.parent.is_remote
    assert span.parent.trace_state.get("vendor") == "x"
    assert found.current.get_span_context() == span.context, "the span is the current one while the store is asked"
    assert trace.get_current_span() is trace.INVALID_SPAN, "and no longer once the answer is made"
    assert found.store_traced and not traces.store.recording(), "the store's gets traced while it is answered"
    assert span.kind == SpanKind.SERVER and span.name == "GET /api/v1/id"
    assert dict(span.attributes or {}) == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "http.route": "/api/v1/id",
        "http.response.status_code": 200,
    }
    assert span.status.status_code == StatusCode.UNSET
    assert span.resource.attributes["service.name"] == "userprofile-service"


def test_a_malformed_tracestate_is_dropped_and_the_traceparent_kept():
    traces, spans = exporting()
    handle(traces, request(f"traceparent: 00-{TRACE_ID}-{PARENT_ID}-01", "tracestate: not a member"))
    span: Any
    [span] = spans.get_finished_spans()
    assert trace_id(span) == TRACE_ID and len(span.parent.trace_state) == 0


def test_a_new_trace_without_a_valid_traceparent_and_its_id_logged():
    traces, spans = exporting()
    found = handle(traces, request("traceparent: 00-bad"))
    [span] = spans.get_finished_spans()
    assert span.parent is None and found.trace_id == trace_id(span) != TRACE_ID


def test_a_caller_that_does_not_record_gets_no_span_and_the_store_its_fast_path():
    traces, spans = exporting()
    found = handle(traces, request(f"traceparent: 00-{TRACE_ID}-{PARENT_ID}-00"))
    assert found.span is None and found.trace_id == TRACE_ID
    assert not found.current.is_recording() and not found.store_traced
    assert spans.get_finished_spans() == ()


def test_the_ratio_decides_for_new_traces_only():
    traces, spans = exporting(OTEL_TRACES_SAMPLER_ARG="0")
    unrecorded = handle(traces, request())
    assert unrecorded.span is None and unrecorded.trace_id == NO_TRACE  # a trace no one will see: none logged
    handle(traces, request(f"traceparent: 00-{TRACE_ID}-{PARENT_ID}-01"))
    assert [trace_id(s) for s in spans.get_finished_spans()] == [TRACE_ID]


@pytest.mark.parametrize(
    "sampler, recorded",
    [("always_off", []), ("parentbased_always_off", [TRACE_ID]), ("traceidratio", ["new", "ignores its parent"])],
)
def test_the_sampler_named_in_the_settings(sampler, recorded):
    traces, spans = exporting(OTEL_TRACES_SAMPLER=sampler, OTEL_TRACES_SAMPLER_ARG="1")
    handle(traces, request())
    handle(traces, request(f"traceparent: 00-{TRACE_ID}-{PARENT_ID}-00"))
    handle(traces, request(f"traceparent: 00-{TRACE_ID}-{PARENT_ID}-01"))
    finished = spans.get_finished_spans()
    if sampler == "traceidratio":  # ratio 1 records all three, whatever their parents said
        assert len(finished) == 3
    else:
        assert [trace_id(s) for s in finished] == recorded


def test_a_5xx_is_an_error_a_4xx_is_not_and_no_route_keeps_the_method_alone():
    traces, spans = exporting()
    handle(traces, request(), status=503)
    handle(traces, request(), status=404)
    handle(traces, request(path="/nothing"), route="other", status=404)
    server_error, not_found, no_route = spans.get_finished_spans()
    assert server_error.status.status_code == StatusCode.ERROR
    assert dict(server_error.attributes or {})["error.type"] == "503"
    assert not_found.status.status_code == StatusCode.UNSET and "error.type" not in dict(not_found.attributes or {})
    assert no_route.name == "GET" and "http.route" not in dict(no_route.attributes or {})


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_probes_and_scrapes_get_no_span_but_their_ids(path):
    traces, spans = exporting()
    found = handle(traces, request(f"traceparent: 00-{TRACE_ID}-{PARENT_ID}-01", path=path))
    assert found.span is None and found.trace_id == TRACE_ID and found.request_id
    assert spans.get_finished_spans() == ()


def test_the_sdks_warnings_are_log_lines_at_most_one_a_second(capsys):
    handler = otelexport.SdkLogLines()
    logger = logging.getLogger("test-otelexport")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for n in range(50):
            logger.warning("collector unreachable %d\nsecond line", n)
        handler.last -= 1.0  # a second later
        logger.warning("again")
    finally:
        logger.removeHandler(handler)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("traces: collector unreachable 0")
    assert lines[1].endswith("traces: again (49 more since the last)")
