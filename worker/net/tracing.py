"""OpenTelemetry traces of a job's life, carried by the job itself (W3C Trace Context).

A job's trace starts where its producer is: `enqueue` (and the HTTP API's `traceparent` header)
hands the caller's current span on as the message's `traceparent` header. On registration a
short `astria_queue.register` span is made its child, and *its* `traceparent` is kept in the job's
record (`Job.traceparent`), so that every later span of the job is a child of it, whichever
process or host makes it and however long after: one span per POST, poll or listing, DELETE,
callback, copy and webhook delivery. A webhook carries its span's `traceparent` to the producer.
A job whose producer sent none gets a trace of its own (its register span is the root).

Tracing is on when the process is configured for it by OpenTelemetry's own variables
(`OTEL_TRACES_EXPORTER` other than `none`, or `OTEL_EXPORTER_OTLP_ENDPOINT` /
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_SDK_DISABLED=true` wins) and needs the `otel` extra.
The SDK reads the rest (`OTEL_SERVICE_NAME`, sampler, headers) itself; a tracer provider the host
process set up already (`opentelemetry-instrument`, a test's in-memory exporter) is used as it is.
Off, it costs nothing: no module of OpenTelemetry is imported, no field is stored or read, and
`spans` is a shared no-op context. An invalid `traceparent` is ignored, as the W3C
recommendation says of a receiver, rather than failing a job over its telemetry.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import Any

from worker.errors import ConfigError

#: W3C Trace Context, version 00: `00-<trace id>-<parent id>-<flags>`, ids not all zeros.
TRACEPARENT = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
#: The spans of the work running on this thread, each with its job's id (`note` annotates
#: them; a log line about one of the jobs takes that job's ids).
_active: ContextVar[tuple[tuple[str, Any], ...]] = ContextVar("astria_spans", default=())
_NOTHING = contextlib.nullcontext()
_logged_ids = False  #: log records carry trace ids (set up once per process)


def valid(traceparent: object) -> str:
    """The traceparent when it is one, else ''."""
    return (traceparent if isinstance(traceparent, str) and len(traceparent) == 55
            and TRACEPARENT.fullmatch(traceparent) else "")


def caller_traceparent() -> str:
    """The calling code's current span as a traceparent ('' with none). Reads OpenTelemetry
    only when the host process imported it: a producer that does not trace pays nothing."""
    return current_traceparent() if "opentelemetry.trace" in sys.modules else ""


def note(**attributes: Any) -> None:
    """Set attributes on the spans of the work running now (nothing when tracing is off)."""
    for _, span in _active.get():
        span.set_attributes(attributes)


class Tracing:
    """This process's tracer, or none (`on` False). Built once per process by the runtime."""

    def __init__(self, on: bool) -> None:
        self.on = on
        self._tracer: Any = None
        if on:
            self._tracer = _tracer()

    def job_context(self, producer_traceparent: str) -> str:
        """At registration: the traceparent the job keeps (its register span's, a child of its
        producer's when that is valid); '' when tracing is off."""
        if not self.on:
            return ""
        with self._tracer.start_as_current_span(
                "astria_queue.register", context=_context(valid(producer_traceparent))):
            return current_traceparent()

    def spans(self, name: str,
              jobs: Sequence[tuple[str, str]]) -> contextlib.AbstractContextManager[Any]:
        """One span `name` for each (job id, traceparent) of the work, each a child of its job's
        trace; the first is the current span (logs, outgoing headers). Exceptions are recorded
        on each."""
        traced = [(job_id, parent) for job_id, parent in jobs if parent] if self.on else []
        return self._spans(name, traced) if traced else _NOTHING

    @contextlib.contextmanager
    def _spans(self, name: str, jobs: Sequence[tuple[str, str]]) -> Iterator[None]:
        from opentelemetry import trace

        with contextlib.ExitStack() as stack:
            started = tuple((job_id, self._tracer.start_span(
                name, context=_context(valid(parent)), kind=trace.SpanKind.CLIENT,
                attributes={"astria_queue.job_id": job_id, "astria_queue.jobs": len(jobs)}))
                for job_id, parent in jobs)
            for _, span in started:
                stack.enter_context(trace.use_span(span, end_on_exit=True))
            token = _active.set(started)
            stack.callback(_active.reset, token)
            stack.enter_context(trace.use_span(started[0][1], end_on_exit=False,
                                               record_exception=False,
                                               set_status_on_exception=False))
            yield


def current_traceparent() -> str:
    """The current span's traceparent, for a request that carries it on ('' when none)."""
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return valid(carrier.get("traceparent"))


def _context(traceparent: str) -> Any:
    """The parent context a traceparent names; None (a new trace) without one."""
    if not traceparent:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


def require_sdk() -> None:
    """ConfigError unless OpenTelemetry's SDK is installed (a worker checks at start, when
    OTEL_* asks for traces, rather than failing every grant)."""
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        raise ConfigError("OTEL_* asks for traces: install the otel extra "
                          "(pip install 'astria-queue[otel]')") from None


def _tracer() -> Any:
    """The tracer, after setting up the SDK from OTEL_* unless the process has a provider."""
    require_sdk()
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(_provider())
    if not _logged_ids:
        _log_trace_ids()
    return trace.get_tracer("astria_queue")


def _provider() -> Any:
    """A provider exporting as OTEL_TRACES_EXPORTER says (otlp over HTTP, or console)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    provider = TracerProvider(resource=Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME") or "astria-queue"}))
    exporter: SpanExporter
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _span_ids(spans: tuple[tuple[str, Any], ...], job_id: object) -> tuple[str, str] | None:
    """(trace id, span id) of job `job_id`'s span among `spans`; None when none is its."""
    for span_job, span in spans:
        if span_job == job_id:
            return _hex_ids(span.get_span_context())
    return None


def _hex_ids(context: Any) -> tuple[str, str]:
    """A span context's trace and span ids, as log lines and W3C write them."""
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _log_trace_ids() -> None:
    """Every log line written inside a span carries its `trace_id` and `span_id` (the JSON
    formatter writes them as fields). Inside the spans of several jobs (a listing serves many)
    the record also carries `_job_span_ids(job_id)`: a line about one of them belongs to that
    job's trace, not to the first job's (the current span), and the formatter asks it."""
    global _logged_ids
    from opentelemetry import trace

    _logged_ids = True
    make = logging.getLogRecordFactory()

    def record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        entry = make(*args, **kwargs)
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry.trace_id, entry.span_id = _hex_ids(context)
            spans = _active.get()
            if len(spans) > 1:
                entry._job_span_ids = functools.partial(_span_ids, spans)
        return entry

    logging.setLogRecordFactory(record)
