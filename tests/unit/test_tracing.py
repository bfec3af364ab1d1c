"""Traces of a job (`worker.net.tracing`), read from OpenTelemetry's own in-memory exporter: one
job driven in-process from its producer's span to its webhook, with the real store on a real
Redis, Astria answered through the client's seam, images and the webhook served over real HTTP
on loopback, the callback through the receiver's WSGI function."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import redis
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.unit.scripted_astria import Answer, Call, ScriptedAstria
from worker import logs
from worker.edge import receiver
from worker.flow import steps
from worker.flow.accept import register
from worker.net.tracing import caller_traceparent, valid
from worker.records import JobState
from worker.runtime import Runtime
from worker.settings import Settings
from worker.spec import parse_spec

EXPORTED = InMemorySpanExporter()
_EXPORTING: list[TracerProvider] = []  #: the provider EXPORTED was added to (once)


def _provider() -> TracerProvider:
    """The process's SDK provider (set once per process), exporting to EXPORTED."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if provider not in _EXPORTING:
        provider.add_span_processor(SimpleSpanProcessor(EXPORTED))
        _EXPORTING.append(provider)
    return provider


class Producer(BaseHTTPRequestHandler):
    """The producer's endpoint: serves image bytes (GET) and takes webhooks (POST)."""

    webhooks: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"\xff\xd8\xff\xd9")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Producer.webhooks.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Producer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Producer.webhooks = []
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def make_runtime(redis_server: tuple[str, bool], tmp_path: Path
                 ) -> Iterator[Callable[..., Runtime]]:
    prefixes: list[str] = []

    def make(answer: Callable[[Call], Answer], **settings: Any) -> Runtime:
        prefixes.append(prefix := "trace-" + uuid.uuid4().hex[:10])
        s = Settings(astria_api_key="k", key_prefix=prefix,  # type: ignore[arg-type]
                     redis_url=redis_server[0], webhook_secret="whsec_" + "A" * 32,
                     webhook_allow_private_addresses=True, storage_url=tmp_path.as_uri(),
                     **settings)
        return Runtime(s, astria_transport=ScriptedAstria(answer))

    yield make
    client = redis.Redis.from_url(redis_server[0])
    for prefix in prefixes:
        for key in client.scan_iter(f"{prefix}:*", count=1000):
            client.delete(key)


def astria_answering(images: str) -> Callable[[Call], Answer]:
    """A prompt created at once (id 41), done with one image on the first look."""
    def answer(call: Call) -> Answer:
        body = {"id": 41, "tune_id": 7, "text": "a cat", "seed": 1,
                "created_at": datetime.now(UTC).isoformat()}
        if call.method == "GET":
            body["images"] = [f"{images}/41/0.jpg"]
        return 200, body
    return answer


def run_everything_due(rt: Runtime, until: Callable[[], bool]) -> None:
    """Grant and run what is due (Astria's, webhooks', copies' work), as the engine would,
    until `until()` holds (a virtual clock moves due times)."""
    clock = time.time()
    for _ in range(40):
        grant = rt.dispatcher.grant(16, 16, 16, now=clock)
        for pool in steps.plan(rt, grant):
            for work in pool:
                work.call()
        if until():
            return
        clock += 1.0
    raise AssertionError("the job did not get that far")


def call_back(rt: Runtime, token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Astria's callback through the receiver's WSGI function."""
    monkeypatch.setattr(receiver, "runtime", lambda: rt)
    body = b'{"prompt": {"id": 41}}'
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/cb", "QUERY_STRING": f"token={token}",
               "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    statuses: list[str] = []
    receiver.app(environ, lambda status, headers, *exc: statuses.append(status))
    assert statuses == ["200 OK"]


def spans_of(trace_id: int) -> dict[str, ReadableSpan]:
    found = {}
    for span in EXPORTED.get_finished_spans():
        assert span.context is not None
        if span.context.trace_id == trace_id:
            found.setdefault(span.name, span)
    return found


def test_a_jobs_spans_are_children_of_its_producers_span_and_its_webhook_carries_the_trace(
        make_runtime: Callable[..., Runtime], endpoint: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    tracer = _provider().get_tracer("producer")
    EXPORTED.clear()
    rt = make_runtime(astria_answering(endpoint), otel_traces_exporter="otlp")
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    with tracer.start_as_current_span("producer request") as producer:
        traceparent = caller_traceparent()
        register(rt, job_id, parse_spec({"tune_id": 7, "text": "a cat",
                                          "callback": f"{endpoint}/hook"}, private_callbacks=True),
                 traceparent=traceparent)
    assert valid(traceparent) and producer.get_span_context().span_id == int(
        traceparent.split("-")[2], 16)
    run_everything_due(rt, lambda: rt.jobs.load(job_id).status is JobState.WAITING)
    call_back(rt, rt.jobs.load(job_id).token, monkeypatch)
    run_everything_due(rt, lambda: bool(rt.jobs.load(job_id).stored and Producer.webhooks))

    trace_id = producer.get_span_context().trace_id
    spans = spans_of(trace_id)
    assert set(spans) == {"producer request", "astria_queue.register", "astria_queue.post",
                          "astria_queue.callback", "astria_queue.poll", "astria_queue.copy",
                          "astria_queue.webhook"}
    register_span = spans["astria_queue.register"]
    assert register_span.parent is not None and register_span.parent.span_id == (
        producer.get_span_context().span_id)
    for name in ("post", "callback", "poll", "copy", "webhook"):
        span = spans[f"astria_queue.{name}"]
        assert span.parent is not None and span.parent.span_id == (
            register_span.context.span_id), name
        assert span.attributes is not None and span.attributes["astria_queue.job_id"] == job_id
    assert spans["astria_queue.post"].attributes["http.request.method"] == "POST"  # type: ignore[index]
    # the webhook carried its own span's context to the producer
    webhook_span = spans["astria_queue.webhook"].context
    sent = Producer.webhooks[0]["traceparent"].split("-")
    assert (int(sent[1], 16), int(sent[2], 16)) == (webhook_span.trace_id, webhook_span.span_id)


def test_an_invalid_traceparent_is_ignored_and_the_job_gets_a_trace_of_its_own(
        make_runtime: Callable[..., Runtime]) -> None:
    _provider()
    EXPORTED.clear()
    rt = make_runtime(astria_answering("http://127.0.0.1:9"), otel_traces_exporter="otlp")
    for bad in ("00-" + "0" * 32 + "-" + "1" * 16 + "-01", "not a traceparent",
                "00-" + "a" * 32 + "-" + "b" * 16 + "-01\n", 42):
        job_id = f"job-{uuid.uuid4().hex[:8]}"
        register(rt, job_id, parse_spec({"tune_id": 7, "text": "a cat"}), traceparent=bad)
        kept = rt.jobs.load(job_id).traceparent
        assert valid(kept)
        (root,) = spans_of(int(kept.split("-")[1], 16)).values()
        assert root.name == "astria_queue.register" and root.parent is None


def test_a_log_line_about_one_of_the_jobs_a_listing_serves_carries_that_jobs_trace(
        make_runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch) -> None:
    """A listing runs one span per job it serves; a line logged about the second job carries
    the second job's trace and span ids, not the first's (the current span); a line about no
    job, the current span's."""
    _provider()
    EXPORTED.clear()
    rt = make_runtime(astria_answering("http://127.0.0.1:9"), otel_traces_exporter="otlp",
                      log_format="json")
    jobs = []
    for _ in range(2):
        job_id = f"job-{uuid.uuid4().hex[:8]}"
        register(rt, job_id, parse_spec({"tune_id": 7, "text": "a cat"}))
        jobs.append((job_id, rt.jobs.load(job_id).traceparent))
    monkeypatch.setattr(logs, "get_settings", lambda: rt.settings)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.formatter())
    log = logging.getLogger(f"test.listing.{uuid.uuid4().hex[:6]}")
    log.addHandler(handler)
    log.propagate = False
    with rt.tracing.spans("astria_queue.poll", jobs):
        for job_id, _ in jobs:
            log.warning("job %s: done", job_id, extra={"job_id": job_id})
        log.warning("the listing answered both")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    traces = [traceparent.split("-")[1] for _, traceparent in jobs]
    assert traces[0] != traces[1]
    assert [line["trace_id"] for line in lines] == [traces[0], traces[1], traces[0]]
    (second,) = [span for span in EXPORTED.get_finished_spans() if span.attributes
                 and span.attributes.get("astria_queue.job_id") == jobs[1][0]
                 and span.name == "astria_queue.poll"]
    assert second.context is not None
    assert lines[1]["span_id"] == format(second.context.span_id, "016x")


def test_without_otel_settings_nothing_is_traced_stored_or_sent(
        make_runtime: Callable[..., Runtime], endpoint: str) -> None:
    tracer = _provider().get_tracer("producer")
    rt = make_runtime(astria_answering(endpoint))
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    with tracer.start_as_current_span("producer request"):
        register(rt, job_id, parse_spec({"tune_id": 7, "text": "a cat",
                                          "callback": f"{endpoint}/hook"}, private_callbacks=True),
                 traceparent=caller_traceparent())
    EXPORTED.clear()
    run_everything_due(rt, lambda: bool(Producer.webhooks))
    assert not rt.tracing.on and rt.jobs.load(job_id).traceparent == ""
    assert EXPORTED.get_finished_spans() == ()
    assert "traceparent" not in Producer.webhooks[0]
