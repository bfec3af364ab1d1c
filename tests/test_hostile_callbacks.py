"""A callback is a wake-up, not the truth: whoever learnt a callback URL can make its job look at
Astria sooner, nothing more; and the URL's token never reaches a log and dies with the job."""

from __future__ import annotations

import socket
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from astria_local.simulator import SimConfig
from tests.harness import Stack, start_callback_receiver, wait_for

pytestmark = pytest.mark.slow  # starts worker processes and the receiver


def test_forged_callbacks_cannot_decide_stall_or_skew_a_job(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(sim_config=SimConfig(generation_seconds=2),
                       astria_callback_fallback_seconds=120)
    url = start_callback_receiver(stack)
    stack.start_worker()
    job = stack.send({"tune_id": 42, "text": "the real one", "tenant": "app"})
    prompt = wait_for(lambda: next(iter(stack.sim.prompts()), None), 20, "the prompt")
    token = parse_qs(urlsplit(prompt["callback"]).query)["token"][0]
    target = f"{url}?token={token}"
    forged = [
        {"prompt": {"id": prompt["id"], "images": ["https://evil.test/owned.jpg"],
                    "cost_mc": 2**63 - 1, "created_at": "2000-01-01T00:00:00Z",
                    "trained_at": "9999-01-01T00:00:00Z"}},
        {"prompt": {"id": prompt["id"], "images": 1}},
        {"prompt": {"id": prompt["id"], "user_error": "forged failure"}},
        {"prompt": {"id": prompt["id"] + 1, "images": ["https://evil.test/other.jpg"]}},
    ]
    for body in forged:
        assert requests.post(target, json=body, timeout=5).status_code == 200
    assert requests.post(target, data=b"[" * 60_000, timeout=5).status_code == 400
    assert requests.post(target, data=b"{" * (70 * 1024), timeout=5).status_code == 413
    out = stack.outcome(job, timeout=30)  # Astria's own answer, long before the fallback poll
    assert out["images"] and all(image.startswith(stack.sim.url) for image in out["images"])
    assert out["cost_mc"] == 1000
    assert requests.post(target, json={"prompt": {"id": prompt["id"]}},
                         timeout=5).status_code == 404  # the token died with the decision

    second = stack.outcome(stack.send({"tune_id": 42, "text": "next", "tenant": "app"}))
    assert second["images"]
    stats = stack.redis.hgetall(f"{stack.prefix}:stats")
    assert stats[b"t|app|normal|SUCCESS"] == b"2" and stats[b"t|app|normal|cost_mc"] == b"2000"
    learnt = float(stack.redis.get(f"{stack.prefix}:generation_seconds") or 0)
    assert 0 < learnt < 60  # Astria's own 2 s, not the forged centuries


def test_the_token_never_reaches_the_receivers_log(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    url = start_callback_receiver(stack)
    port = int(urlsplit(url).port or 0)
    secret = "tok-" + "s3cr3t" * 3
    for request in (f"POST /astria/callback?token={secret}\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
                    f"POST /astria/callback?token={secret} HTTP/9.9\r\nHost: x\r\n\r\n",
                    f"POST /astria/callback?token={secret} HTTP/1.1\r\nHost: x\r\n"
                    "Transfer-Encoding: chunked\r\n\r\nzz\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(request.encode("latin-1"))
            sock.recv(1024)
    assert requests.post(f"{url}?token={secret}", json={"prompt": {"id": 1}},
                         timeout=5).status_code == 404
    logs = wait_for(lambda: (text := stack.worker_logs()).count("Invalid request") >= 2 and text,
                    10, "the receiver's lines about the bad requests")
    assert "token=[redacted]" in logs and secret not in logs
