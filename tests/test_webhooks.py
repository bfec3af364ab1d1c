"""Signed webhooks to producers for every terminal outcome, retried until acknowledged."""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from astria_local.simulator import SimConfig
from tests.harness import Stack, wait_for
from worker import verify_webhook

pytestmark = pytest.mark.slow  # starts worker processes

SECRET = "whsec_" + base64.b64encode(b"producer-signing-key-32-bytes-ok").decode()


class Receiver:
    """A producer's webhook endpoint that answers 500 to the first `failures` deliveries of
    each webhook-id, then 200; it checks every signature."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: Counter[str] = Counter()
        self.acknowledged: dict[str, dict[str, Any]] = {}
        self.bodies: defaultdict[str, set[bytes]] = defaultdict(set)
        self.bad_signatures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                message = self.headers["webhook-id"]
                try:
                    event = verify_webhook(dict(self.headers), body, SECRET)
                except Exception:
                    receiver.bad_signatures += 1
                    raise
                receiver.attempts[message] += 1
                receiver.bodies[message].add(body)
                ok = receiver.attempts[message] > receiver.failures
                if ok:
                    receiver.acknowledged.setdefault(message, event)
                self.send_response(200 if ok else 500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks?from=astria"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Callable[[int], Receiver]]:
    made: list[Receiver] = []

    def make(failures: int) -> Receiver:
        made.append(Receiver(failures))
        return made[-1]

    yield make
    for r in made:
        r.server.shutdown()


def test_every_outcome_is_a_signed_webhook_retried_under_one_id(
    make_stack: Callable[..., Stack], receiver: Callable[[int], Receiver],
) -> None:
    """Polling only: 20 successes and 2 user_error failures; the producer answers 500 twice
    for each webhook-id, then 200."""
    hooks = receiver(2)
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
    make_stack: Callable[..., Stack], receiver: Callable[[int], Receiver],
) -> None:
    hooks = receiver(10**6)  # always 500
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
    make_stack: Callable[..., Stack], receiver: Callable[[int], Receiver],
) -> None:
    hooks = receiver(0)
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
