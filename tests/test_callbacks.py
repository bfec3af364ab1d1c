"""Callback-driven completion: a callback brings the outcome from Astria at once; polling is only
a fallback."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator

import pytest
import requests

from astria_local.simulator import SimConfig
from astria_local.webhook_endpoint import WebhookEndpoint
from tests.harness import Stack, start_callback_receiver, wait_for

pytestmark = pytest.mark.slow  # starts worker processes

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@pytest.fixture
def user_endpoint() -> Iterator[WebhookEndpoint]:
    """A producer's own callback URL that verifies and records what it receives."""
    with WebhookEndpoint(SECRET) as endpoint:
        yield endpoint


def test_a_callback_brings_the_outcome_from_astria_at_once(
    make_stack: Callable[..., Stack], user_endpoint: WebhookEndpoint
) -> None:
    """The callback wakes its job for one look at Astria (batched by tune), long before the
    120 s fallback poll; the outcome is Astria's answer, not the callback's body."""
    stack = make_stack(sim_config=SimConfig(generation_seconds=1),
                       astria_callback_fallback_seconds=120, webhook_secret=SECRET,
                       log_format="json")
    start_callback_receiver(stack)
    stack.start_worker()
    url = user_endpoint.url
    jobs = [stack.send({"tune_id": 42, "text": f"cb {i}"}) for i in range(5)]
    jobs.append(stack.send({"tune_id": 42, "text": "with my own hook", "callback": url}))
    outcomes = [stack.outcome(job, timeout=30) for job in jobs]  # well before the 120 s fallback
    assert all(o["images"] for o in outcomes)
    wait_for(lambda: stack.sim.counters.get("callback_sent") == 6, 10, "six callbacks sent")
    looks = stack.sim.counters.get("get", 0) + stack.sim.counters.get("list", 0)
    assert 1 <= looks <= 6  # one look a job at most: a listing answers several
    sent = stack.sim_json("/_sim/prompts")
    assert all("token=" in p["callback"] for p in sent)
    # The producer's own callback is a signed webhook with the outcome, never sent to Astria.
    assert all(url not in p["callback"] for p in sent)
    received = wait_for(lambda: list(user_endpoint.acknowledged.values()), 10,
                        "the producer's webhook")
    assert [(r["type"], r["data"]["text"], r["data"]["job_id"]) for r in received] == [
        ("job.succeeded", "with my own hook", jobs[-1])]
    # the receiver under gunicorn logs through the same configuration: JSON, the job's id
    lines = [json.loads(line) for line in stack.logs[0].read_text().splitlines()
             if line.startswith("{")]
    logged = {line["job_id"] for line in lines if line.get("logger") == "astria.receiver"}
    assert logged == set(jobs)
    assert "token=" not in stack.logs[0].read_text().replace("token=[redacted]", "")


def test_callback_with_an_unknown_token_changes_nothing(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    url = start_callback_receiver(stack)
    answer = requests.post(url + "?token=forged", json={"prompt": {"id": 1, "images": ["x"]}},
                           timeout=5)
    assert answer.status_code == 404
    assert requests.post(url, data=b"nonsense", timeout=5).status_code == 404


def test_polling_takes_over_when_a_callback_is_lost(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(sim_config=SimConfig(generation_seconds=0.5),
                       astria_callback_fallback_seconds=1,
                       astria_callback_url="http://127.0.0.1:9/nobody-listens")
    stack.start_worker()
    out = stack.outcome(stack.send({"tune_id": 42, "text": "lost callback"}), timeout=30)
    assert out["images"]
    assert stack.sim.counters["get"] >= 1
