"""Traces exported to an OpenTelemetry collector: a server span per request, the Couchbase
SDK's spans under it, sent over OTLP/HTTP. Imported only when export is configured
(``userprofile_service.traces_for``): the OpenTelemetry SDK is an optional dependency
(requirements-tracing.txt), and a service without export loads none of it.

What the settings table (settings.py, the OTEL_* rows) declares is passed to the SDK here;
the SDK reads the rest of OpenTelemetry's variables by itself (docs/tracing.md lists them:
the exporter's headers, TLS and timeout, the batch processor's limits, resource attributes).

A request's span continues the caller's trace (its valid ``traceparent`` and ``tracestate``)
or begins one; the sampler's rule, applied here before any span is made, decides whether
it is recorded. A recorded request's span is made the current one, so that the Couchbase
SDK's spans of that request become its children; every other request gets no span, its store
calls take their fast path (``cbsdk.DirectCalls``), and it costs a sampling decision. The
SDK's spans come from a provider of their own that records only children of a recorded span:
its background work (pings, token re-reads) starts no trace.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from random import random
from typing import Any, NamedTuple

from couchbase.observability.otel_tracing import get_otel_tracer
from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

import routes
from httpparse import Request
from logs import log
from options import Options
from tracecontext import COUNT_HEX, NO_TRACE, SAMPLED, Ids, TraceParent, Traces, parse_traceparent

SCOPE = "userprofile-service"  # the instrumentation scope of the server spans
TRACES_PATH = "/v1/traces"  # appended to OTEL_EXPORTER_OTLP_ENDPOINT, as OpenTelemetry's exporters do
SHUTDOWN_SECONDS = 3.0  # at exit, what is still queued gets this long to reach the collector
NEW_TRACE = context.Context()  # a server span's parent when the caller sent none: never the thread's
ERROR = Status(StatusCode.ERROR)
# Probes and scrapes, every few seconds from every kubelet and Prometheus: no span (their ids
# are still logged).
UNTRACED = frozenset(r.shape for r in routes.ROUTES if r.handler in ("liveness", "readiness", "exposition"))


class Sampling(NamedTuple):
    """OpenTelemetry's sampler of a name (settings.SAMPLERS), as two rules applied before any span
    is made: the SDK's start_span costs as much for a span its sampler drops as for one it keeps,
    several times the rest of an unrecorded request's tracing (docs/decisions/2026-12-06-trace-sampling.md)."""

    caller: Callable[[TraceParent], bool]  # whether a caller's trace is recorded
    new: float  # the share of new traces recorded: random() < new (1.0 always, 0.0 never)


def sampler(name: str, ratio: float) -> Sampling:
    """The ratio is TraceIdRatioBased's: the trace id's lower 64 bits under ratio * 2**64, so a
    caller's trace is decided as every OpenTelemetry service decides it; a new trace by a draw."""
    bound = round(ratio * (1 << 64))
    rules: dict[str, Callable[[TraceParent], bool]] = {
        "always_on": lambda caller: True,
        "always_off": lambda caller: False,
        "traceidratio": lambda caller: int(caller.trace_id[16:], 16) < bound,
    }
    shares = {"always_on": 1.0, "always_off": 0.0, "traceidratio": ratio}
    root = name.removeprefix("parentbased_")
    if name == root:
        return Sampling(rules[root], shares[root])
    return Sampling(lambda caller: bool(caller.flags & SAMPLED), shares[root])


def traces_url(options: Options) -> str:
    if options.otel_traces_endpoint:
        return options.otel_traces_endpoint
    return (options.otel_endpoint or "").rstrip("/") + TRACES_PATH


class StoreTracing(NamedTuple):
    """What the Couchbase store traces with: the tracer it gives the SDK, and whether the
    current request is recorded (then its gets take the SDK's public, traced path)."""

    tracer: Any
    recording: Any  # () -> bool


class SdkLogLines(logging.Handler):
    """The OpenTelemetry SDK's warnings (a collector that does not answer, a malformed
    tracestate) as the service's log lines, at most one a second: a stream of bad headers or
    a lost collector must not flood the log."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last = 0.0
        self.dropped = 0
        self.guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self.guard:
            now = time.monotonic()
            if now - self.last < 1.0:
                self.dropped += 1
                return
            dropped, self.dropped, self.last = self.dropped, 0, now
        more = f" ({dropped} more since the last)" if dropped else ""
        log(f"traces: {record.getMessage().splitlines()[0][:300]}{more}")


class Exporting(Traces):
    """``Traces``, and a server span per request exported over OTLP/HTTP."""

    exporting = True

    def __init__(self, options: Options) -> None:
        super().__init__()
        sdk_logger = logging.getLogger("opentelemetry")
        if not any(isinstance(handler, SdkLogLines) for handler in sdk_logger.handlers):
            sdk_logger.addHandler(SdkLogLines())
            sdk_logger.propagate = False
        self.url = traces_url(options)
        # service.name from the table; OTEL_RESOURCE_ATTRIBUTES is merged in by the SDK.
        resource = Resource.create({SERVICE_NAME: options.otel_service_name})
        self.processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=self.url))
        self.sampling = sampler(options.otel_sampler, options.otel_sampler_ratio)
        self.new = self.sampling.new  # read on every request
        self.provider = TracerProvider(
            sampler=ALWAYS_ON,  # the sampler's decision is made before a span is (self.sampling)
            resource=resource,
            shutdown_on_exit=False,  # close() does it, bounded: the process leaves by os._exit
        )
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer(SCOPE)
        store_provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF), resource=resource, shutdown_on_exit=False)
        store_provider.add_span_processor(self.processor)
        # Whether this thread answers a recorded request, asked by the store before each get: a
        # thread-local flag is a tenth of the cost of asking OpenTelemetry's context.
        self.answering = threading.local()
        self.store = StoreTracing(get_otel_tracer(store_provider), lambda: getattr(self.answering, "recorded", False))
        log(
            f"traces: exporting to {self.url} as {options.otel_service_name}, sampler {options.otel_sampler}"
            + (f" {options.otel_sampler_ratio:g}" if "ratio" in options.otel_sampler else "")
        )

    def begin(self, request: Request | None) -> Ids:
        # Not recorded: its ids alone, no span, and the store's calls take their fast path.
        if request is None or request.path in UNTRACED:
            return Traces.begin(self, request)
        if request.traceparent is None:
            if random() >= self.new:  # the usual request: Traces.begin's fast path, without its call
                if request.request_id is None:
                    return self.line_head + COUNT_HEX % next(self.count), NO_TRACE, None
                return self.request_id(request), NO_TRACE, None
            caller = None
        else:
            caller = parse_traceparent(request.traceparent)
            if not (self.sampling.caller(caller) if caller is not None else random() < self.new):
                return self.request_id(request), caller.trace_id if caller is not None else NO_TRACE, None
        id_line = self.request_id(request)  # the answer's X-Request-Id header line
        parent = NEW_TRACE
        if caller is not None:
            state = TraceState.from_header([request.tracestate.decode("latin-1")]) if request.tracestate else None
            remote = SpanContext(
                int(caller.trace_id, 16),
                int(caller.parent_id, 16),
                is_remote=True,
                trace_flags=TraceFlags(caller.flags),
                trace_state=state,
            )
            parent = trace.set_span_in_context(NonRecordingSpan(remote), NEW_TRACE)
        span = self.tracer.start_span(
            request.method,
            parent,
            SpanKind.SERVER,
            # OpenTelemetry's HTTP conventions, those required (url.path left out: a path may
            # name a person); each attribute costs about 5% of a span's CPU.
            {"http.request.method": request.method, "url.scheme": "http"},
        )
        trace_id = caller.trace_id if caller is not None else format(span.get_span_context().trace_id, "032x")
        self.answering.recorded = True
        return id_line, trace_id, (span, context.attach(trace.set_span_in_context(span)))

    def end(self, recorded: Any, method: str, route: str, status: int) -> None:
        """The span of a recorded request, once its answer is made: named for its route
        (OpenTelemetry's HTTP conventions), an error when the answer is a 5xx."""
        span, token = recorded
        context.detach(token)
        self.answering.recorded = False
        if route != routes.NO_ROUTE:
            span.update_name(f"{method} {route}")
            span.set_attributes({"http.route": route, "http.response.status_code": status})
        else:
            span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_attribute("error.type", str(status))
            span.set_status(ERROR)
        span.end()

    def store_tracing(self) -> StoreTracing:
        return self.store

    def close(self) -> None:
        """At exit: what is queued gets SHUTDOWN_SECONDS to reach the collector, no more (the
        SDK's own shutdown may wait 30 s for a collector that does not answer)."""
        closing = threading.Thread(target=self.provider.shutdown, name="traces-shutdown", daemon=True)
        closing.start()
        closing.join(SHUTDOWN_SECONDS)
