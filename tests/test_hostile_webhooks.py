"""Producers' endpoints cannot take the pool, nor turn the workers on internal addresses."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Callable

import pytest

from astria_local.webhook_endpoint import WebhookEndpoint
from tests.harness import Stack, terminal_states, wait_for

pytestmark = pytest.mark.slow  # starts worker processes

SECRET = "whsec_" + base64.b64encode(b"hostile-endpoints-signing-key-32").decode()


def test_a_trickling_endpoint_costs_its_own_webhooks_only(
    make_stack: Callable[..., Stack], webhook_endpoints: Callable[..., WebhookEndpoint],
) -> None:
    trickler = webhook_endpoints(SECRET, trickle=True)
    healthy = webhook_endpoints(SECRET)
    stack = make_stack(webhook_secret=SECRET, webhook_timeout_seconds=2,
                       webhook_first_retry_seconds=1, webhook_concurrency=8,
                       webhook_max_in_flight_per_destination=3)
    stack.start_worker()
    slow = [stack.send({"tune_id": 42, "text": f"slow {i}", "tenant": "slow",
                        "callback": trickler.url}) for i in range(60)]
    fast = [stack.send({"tune_id": 42, "text": f"fast {i}", "tenant": "fast",
                        "callback": healthy.url}) for i in range(30)]
    wait_for(lambda: len(terminal_states(stack.redis, slow + fast)) == 90, 60, "90 outcomes")
    assert set(terminal_states(stack.redis, slow + fast).values()) == {"SUCCESS"}
    wait_for(lambda: len(healthy.acknowledged) == 30, 30, "the other tenant's 30 webhooks")
    assert {e["data"]["job_id"] for e in healthy.acknowledged.values()} == set(fast)
    destination = f"{stack.prefix}:dest:{trickler.destination}"

    def held_until() -> float:
        return float(stack.redis.hget(destination, "held_until") or 0)

    def held_back() -> bool:  # no attempt open nor granted (one granted before the hold may
        # still be about to connect, and its failure lengthens the hold)
        return bool(held_until()) and trickler.open == 0 and not stack.redis.zcard(
            f"{destination}:inflight")

    wait_for(held_back, 30, "the trickler held back")
    attempts, hold = trickler.connections, held_until()
    wait_for(lambda: trickler.connections > attempts, 30, "a probe once the hold ends")
    assert time.time() >= hold - 0.5
    wait_for(lambda: held_until() > hold, 30, "a longer hold after the failed probe")
    assert trickler.connections == attempts + 1  # one probe, not 50 attempts
    assert trickler.most_open <= 3  # its cap, of 8 webhook threads and 512 for Astria


def test_internal_destinations_are_refused_at_enqueue_and_at_delivery(
    make_stack: Callable[..., Stack], webhook_endpoints: Callable[..., WebhookEndpoint],
) -> None:
    target = webhook_endpoints(SECRET)
    port = target.destination.rsplit(":", 1)[1]
    stack = make_stack(webhook_secret=SECRET, webhook_allow_private_addresses="false")
    stack.start_worker()
    error = stack.outcome(stack.send({"tune_id": 42, "text": "x", "callback": target.url}))
    assert type(error).__name__ == "InvalidSpec"
    assert "callback: its host 127.0.0.1 is not public (loopback)" in str(error)

    by_name = f"http://{socket.gethostname()}:{port}/hook"  # resolves to this machine
    refused = stack.cli("enqueue", json.dumps({"tune_id": 42, "text": "x", "callback": by_name}),
                        check=False)
    assert refused.returncode == 1 and "which is not public" in refused.stderr
    job = stack.send({"tune_id": 42, "text": "a name, sent by name", "callback": by_name})
    assert stack.outcome(job)["images"]  # the job itself is fine
    dead = wait_for(lambda: stack.cli("webhooks", "list").stdout.strip(), 30, "a dead webhook")
    entry = json.loads(dead)
    assert entry["attempts"] == 1 and entry["last_error"].startswith("refused: ")
    assert "which is not public" in entry["last_error"]
    assert target.connections == 0
