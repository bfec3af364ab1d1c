"""Signed webhooks to producers for every terminal outcome, retried until acknowledged."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest

from astria_local.simulator import SimConfig
from astria_local.webhook_endpoint import WebhookEndpoint
from tests.harness import Stack, wait_for

pytestmark = pytest.mark.slow  # starts worker processes

SECRET = "whsec_" + base64.b64encode(b"producer-signing-key-32-bytes-ok").decode()


def test_every_outcome_is_a_signed_webhook_retried_under_one_id(
    make_stack: Callable[..., Stack], webhook_endpoints: Callable[..., WebhookEndpoint],
) -> None:
    """Polling only: 20 successes and 2 user_error failures; the producer answers 500 twice
    for each webhook-id, then 200."""
    hooks = webhook_endpoints(SECRET, failures=2)
    stack = make_stack(sim_config=SimConfig(generation_seconds=0.5), webhook_secret=SECRET,
                       webhook_first_retry_seconds=1)
    stack.start_worker()
    ok = [stack.send({"tune_id": 42, "text": f"fine {i}", "callback": hooks.url})
          for i in range(20)]
    bad = [stack.send({"tune_id": 42, "text": f"SIMULATE_USER_ERROR {i}", "callback": hooks.url})
           for i in range(2)]
    wait_for(lambda: len(hooks.acknowledged) == 22, 150, "22 acknowledged webhooks", every=0.5)
    events = {event["data"]["job_id"]: event for event in hooks.acknowledged.values()}
    assert {events[j]["type"] for j in ok} == {"job.succeeded"}
    assert {events[j]["type"] for j in bad} == {"job.failed"}
    assert all(events[j]["data"]["images"] for j in ok)
    assert {events[j]["data"]["error"] for j in bad} == {"PromptFailed"}
    assert set(hooks.attempts.values()) == {3}  # 500, 500, then acknowledged once
    assert all(len(bodies) == 1 for bodies in hooks.bodies.values())  # the same body each time
    assert hooks.bad_signatures == 0
    assert set(hooks.acknowledged) == {f"msg_{j}" for j in ok + bad}
    assert not any("callback" in p and hooks.url in str(p["callback"])
                   for p in stack.sim_json("/_sim/prompts"))  # never handed to Astria


def test_exhausted_webhooks_are_dead_letters_and_can_be_redriven(
    make_stack: Callable[..., Stack], webhook_endpoints: Callable[..., WebhookEndpoint],
) -> None:
    hooks = webhook_endpoints(SECRET, failures=10**6)  # always 500
    stack = make_stack(webhook_secret=SECRET, webhook_first_retry_seconds=0.2,
                       webhook_retry_for_seconds=1)
    stack.start_worker()
    job = stack.send({"tune_id": 42, "text": "nobody answers", "callback": hooks.url})
    stack.outcome(job)
    dead = wait_for(lambda: stack.cli("webhooks", "list").stdout.strip(), 30, "a dead webhook")
    entry = json.loads(dead)
    assert entry["webhook_id"] == f"msg_{job}" and entry["attempts"] >= 2
    assert entry["last_error"] == "HTTP 500"
    hooks.failures = 0
    assert stack.cli("webhooks", "redrive", "--all").stdout.strip() == f"msg_{job}: redriven"
    wait_for(lambda: f"msg_{job}" in hooks.acknowledged, 30, "the redriven webhook")
    assert stack.cli("webhooks", "list").stdout == ""


def test_a_cancelled_job_sends_a_revoked_webhook(
    make_stack: Callable[..., Stack], webhook_endpoints: Callable[..., WebhookEndpoint],
) -> None:
    hooks = webhook_endpoints(SECRET, failures=0)
    stack = make_stack(webhook_secret=SECRET, astria_rate_limit_per_second=0.5,
                       astria_rate_limit_burst=1)
    stack.start_worker()
    stack.send({"tune_id": 42, "text": "first"})
    job = stack.send({"tune_id": 42, "text": "cancelled", "callback": hooks.url})
    wait_for(lambda: stack.redis.exists(f"{stack.prefix}:job:{job}"), 20, "registration")
    stack.cli("cancel", job)
    wait_for(lambda: f"msg_{job}" in hooks.acknowledged, 30, "the revoked webhook")
    assert hooks.acknowledged[f"msg_{job}"]["type"] == "job.revoked"
    assert hooks.acknowledged[f"msg_{job}"]["data"] == {"job_id": job, "reason": "revoked"}


def test_the_events_a_spec_asks_for_arrive_once_each_before_its_end(
    make_stack: Callable[..., Stack], webhook_endpoints: Callable[..., WebhookEndpoint],
) -> None:
    hooks = webhook_endpoints(SECRET)
    stack = make_stack(sim_config=SimConfig(generation_seconds=0.5), webhook_secret=SECRET)
    stack.start_worker()
    job = stack.send({"tune_id": 42, "text": "tell me everything", "callback": hooks.url,
                      "webhook_events": ["queued", "posted", "waiting"]})
    quiet = stack.send({"tune_id": 42, "text": "only the end", "callback": hooks.url})
    wait_for(lambda: len(hooks.acknowledged) == 5, 60, "four events of one job, one of another")
    mine = sorted((event["data"].get("at", float("inf")), event["type"])  # the end has no `at`
                  for event in hooks.acknowledged.values() if event["data"]["job_id"] == job)
    assert [kind for _, kind in mine] == ["job.queued", "job.posted", "job.waiting",
                                          "job.succeeded"]
    assert [e["type"] for e in hooks.acknowledged.values()
            if e["data"]["job_id"] == quiet] == ["job.succeeded"]
    assert hooks.bad_signatures == 0
