"""Traces across processes: a producer sends by name with a W3C `traceparent` message header
(as Celery's own OpenTelemetry instrumentation does), a worker with OTEL_* set exports the job's
spans over OTLP/HTTP to a collector on loopback (`astria_local.otlp_sink`), and its webhook
carries the trace to the producer; the HTTP API takes a `traceparent` request header."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from astria_local.otlp_sink import OtlpSink
from astria_local.simulator import SimConfig
from astria_local.webhook_endpoint import WebhookEndpoint
from tests.harness import Stack, start_api, wait_for

pytestmark = pytest.mark.slow  # starts worker processes

SECRET = "whsec_" + base64.b64encode(b"producer-signing-key-32-bytes-ok").decode()
TRACE, PRODUCER_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def test_a_job_sent_by_name_is_traced_under_its_producers_trace_across_processes(
        make_stack: Callable[..., Stack], webhook_endpoints: Callable[..., WebhookEndpoint],
) -> None:
    hooks = webhook_endpoints(SECRET)
    with OtlpSink() as sink:
        stack = make_stack(sim_config=SimConfig(generation_seconds=0.3), webhook_secret=SECRET,
                           otel_exporter_otlp_endpoint=sink.url, otel_bsp_schedule_delay=100,
                           otel_service_name="astria-queue-test", log_format="json")
        stack.start_worker()
        job_id = stack.send({"tune_id": 42, "text": "a traced cat", "callback": hooks.url},
                            headers={"traceparent": f"00-{TRACE}-{PRODUCER_SPAN}-01"})
        untraced = stack.send({"tune_id": 42, "text": "an untraced cat"},
                              headers={"traceparent": "00-not-a-trace-01"})
        assert stack.outcome(job_id)["images"] and stack.outcome(untraced)["images"]

        def names() -> set[str]:
            return {span.name for span in sink.of_trace(TRACE)}

        wanted = {"astria_queue.register", "astria_queue.post", "astria_queue.poll",
                  "astria_queue.webhook"}
        wait_for(lambda: wanted <= names(), 30, f"the spans {sorted(wanted)}")
        spans = {span.name: span for span in sink.of_trace(TRACE)}
        register = spans["astria_queue.register"]
        assert register.parent_id == PRODUCER_SPAN
        assert {spans[name].parent_id for name in wanted - {"astria_queue.register"}} == {
            register.span_id}
        assert spans["astria_queue.post"].attributes["astria_queue.job_id"] == job_id
        # the webhook's traceparent names the delivery's span, in the producer's trace
        wait_for(lambda: hooks.acknowledged, 30, "the webhook")
        (headers,) = hooks.headers.values()
        assert headers["traceparent"] == (
            f"00-{TRACE}-{spans['astria_queue.webhook'].span_id}-01")
        # the worker's log lines written inside the job's spans carry its trace id, and a line
        # about the other job never does (a listing that serves both runs a span for each)
        logged = [json.loads(line) for line in stack.worker_logs().splitlines()
                  if line.startswith("{") and TRACE in line]
        assert {entry["logger"] for entry in logged if entry.get("job_id") == job_id} >= {
            "astria.submit", "astria.webhooks"}
        assert {entry["trace_id"] for entry in logged} == {TRACE}
        assert not [entry for entry in logged if entry.get("job_id") == untraced]
        # an invalid traceparent is ignored: that job has a trace of its own
        own = [span for span in sink.spans if span.name == "astria_queue.register"
               and span.trace_id != TRACE]
        assert own and all(span.parent_id == "" for span in own)


def test_a_job_posted_to_the_http_api_with_a_traceparent_is_traced_under_it(
        make_stack: Callable[..., Stack], tmp_path: Path) -> None:
    token = "tok-traced-" + "t" * 24
    tenants = tmp_path / "tenants.json"
    tenants.write_text(json.dumps({"tenants": {"app": {
        "token_sha256": [hashlib.sha256(token.encode()).hexdigest()]}}}))
    trace_id, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    with OtlpSink() as sink:
        stack = make_stack(sim_config=SimConfig(generation_seconds=0.3),
                           otel_exporter_otlp_endpoint=sink.url, otel_bsp_schedule_delay=100,
                           tenants_file=tenants)
        stack.start_worker()
        base = start_api(stack, tenants)
        answer = requests.post(base + "/v1/jobs", json={"tune_id": 42, "text": "an API cat"},
                               headers={"Authorization": f"Bearer {token}",
                                        "traceparent": f"00-{trace_id}-{parent}-01"}, timeout=10)
        assert answer.status_code == 202
        too_long = requests.post(base + "/v1/jobs", json={"tune_id": 42, "text": "a long one"},
                                 headers={"Authorization": f"Bearer {token}",
                                          "traceparent": "00-" + "a" * 300}, timeout=10)
        assert too_long.status_code == 422  # a problem naming the header, nothing queued
        assert too_long.json()["errors"][0]["field"] == "traceparent"
        assert stack.outcome(answer.json()["id"])["images"]
        wait_for(lambda: {"astria_queue.register", "astria_queue.post"} <= {
            span.name for span in sink.of_trace(trace_id)}, 30, "the API job's spans")
        spans = {span.name: span for span in sink.of_trace(trace_id)}
        assert spans["astria_queue.register"].parent_id == parent
        assert spans["astria_queue.post"].parent_id == spans["astria_queue.register"].span_id
