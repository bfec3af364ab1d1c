"""Callback-driven completion: the receiver finishes jobs at once; polling is only a fallback."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
import requests

from astria_local.simulator import SimConfig
from tests.harness import Stack, start_callback_receiver, wait_for
from worker import verify_webhook

pytestmark = pytest.mark.slow  # starts worker processes

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@pytest.fixture
def user_endpoint() -> Iterator[tuple[str, list[Any]]]:
    """A producer's own callback URL that records what it receives."""
    received: list[Any] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(verify_webhook(dict(self.headers), body, SECRET))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook?order=9", received
    server.shutdown()


def test_callback_completes_jobs_without_polling(
    make_stack: Callable[..., Stack], user_endpoint: tuple[str, list[Any]]
) -> None:
    stack = make_stack(sim_config=SimConfig(generation_seconds=1),
                       astria_callback_fallback_seconds=120, webhook_secret=SECRET)
    start_callback_receiver(stack)
    stack.start_worker()
    url, received = user_endpoint
    jobs = [stack.send({"tune_id": 42, "text": f"cb {i}"}) for i in range(5)]
    jobs.append(stack.send({"tune_id": 42, "text": "with my own hook", "callback": url}))
    outcomes = [stack.outcome(job, timeout=30) for job in jobs]  # well before the 120 s fallback
    assert all(o["images"] for o in outcomes)
    assert stack.sim.counters.get("get", 0) == 0
    wait_for(lambda: stack.sim.counters.get("callback_sent") == 6, 10, "six callbacks sent")
    sent = stack.sim_json("/_sim/prompts")
    assert all("token=" in p["callback"] for p in sent)
    # The producer's own callback is a signed webhook with the outcome, never sent to Astria.
    assert all(url not in p["callback"] for p in sent)
    wait_for(lambda: received, 10, "the producer's webhook")
    assert [(r["type"], r["data"]["text"], r["data"]["job_id"]) for r in received] == [
        ("job.succeeded", "with my own hook", jobs[-1])]


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
