"""The internet-facing receiver, run with the Procfile's own command: idle and half-sent
connections, limits, health and Prometheus metrics."""

from __future__ import annotations

import base64
import os
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from astria_local.redis_server import free_port
from astria_local.webhook_endpoint import WebhookEndpoint
from tests.harness import ROOT, Stack, wait_for

SECRET = "whsec_" + base64.b64encode(b"producer-signing-key-32-bytes-ok").decode()

pytestmark = pytest.mark.slow  # starts processes


def procfile(name: str) -> list[str]:
    lines = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines()
                 if line.strip())
    return shlex.split(lines[name])


@pytest.fixture
def receiver(make_stack: Callable[..., Stack]) -> Iterator[tuple[Stack, str]]:
    """The Procfile's `callbacks:` command, as it stands, on a free PORT."""
    stack = make_stack(webhook_secret=SECRET)
    port = free_port()
    command = procfile("callbacks")
    proc = subprocess.Popen([sys.executable, "-m", *command] if command[0] == "gunicorn"
                            else command, cwd=ROOT, env={**os.environ, **stack.env,
                                                        "PORT": str(port)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    stack.workers.append(proc)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _ok(url + "/healthz"), 30, "the receiver")
    yield stack, url


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False


def test_idle_half_sent_requests_are_dropped_and_do_not_block_callbacks(
    receiver: tuple[Stack, str],
) -> None:
    _, url = receiver
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    port = int(url.rsplit(":", 1)[1])
    idle = []
    for _ in range(1000):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"POST /astria/callback?token=x HTTP/1.1\r\nHost: x\r\nContent-Le")
        idle.append(sock)
    started = time.monotonic()
    answer = requests.post(url + "/astria/callback?token=nobody", json={"prompt": {"id": 1}},
                           timeout=5)
    assert answer.status_code == 404 and time.monotonic() - started < 2  # answered at once

    def dropped(sock: socket.socket) -> bool:
        sock.settimeout(0.05)
        try:
            return sock.recv(1024) == b""
        except TimeoutError:
            return False
        except OSError:
            return True

    open_ones = list(idle)
    while open_ones and time.monotonic() - started < 45:
        open_ones = [s for s in open_ones if not dropped(s)]
        time.sleep(1)
    elapsed = time.monotonic() - started
    for sock in idle:
        sock.close()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert not open_ones, f"{len(open_ones)} of 1000 still open after {elapsed:.0f}s"


def test_limits_and_health(receiver: tuple[Stack, str]) -> None:
    _, url = receiver
    too_big = requests.post(url + "/cb?token=x", data=b"x" * (1024 * 1024 + 1), timeout=10)
    assert too_big.status_code == 413
    assert requests.post(url + "/cb?token=unknown", json={}, timeout=5).status_code == 404
    health = requests.get(url + "/healthz", timeout=5)
    assert health.status_code == 200 and health.json()["ok"] is True
    assert health.json()["redis"] == "ok"


def test_metrics_are_prometheus_text_with_a_histogram_and_labels(
    receiver: tuple[Stack, str], webhook_endpoints: Callable[..., WebhookEndpoint],
) -> None:
    stack, url = receiver
    hooks = webhook_endpoints(SECRET)
    stack.start_worker()
    assert stack.outcome(stack.send({"tune_id": 42, "text": "measured", "tenant": "m",
                                     "callback": hooks.url}))
    wait_for(lambda: hooks.acknowledged, 30, "the webhook")
    stack.outcome(stack.send({"tune_id": 42, "text": "SIMULATE_USER_ERROR"}))

    def scraped() -> dict[str, object] | None:
        families = {f.name: f for f in text_string_to_metric_families(
            requests.get(url + "/metrics", timeout=5).text)}
        histogram = families.get("astria_queue_astria_request_seconds")
        return families if histogram and histogram.samples else None

    families = wait_for(scraped, 15, "request metrics flushed", every=0.5)
    assert families["astria_queue_astria_request_seconds"].type == "histogram"  # type: ignore[attr-defined]
    jobs = families["astria_queue_jobs"].samples  # type: ignore[attr-defined]
    assert {"state": "succeeded", "tenant": "m", "lane": "normal"} in [s.labels for s in jobs]
    requests_by_status = families["astria_queue_astria_requests"].samples  # type: ignore[attr-defined]
    assert any(s.labels.get("status") == "2xx" for s in requests_by_status)
    slo = {(s.labels["lane"], s.labels["outcome"]): s.value
           for s in families["astria_queue_job_seconds"].samples  # type: ignore[attr-defined]
           if s.name.endswith("_count")}
    assert slo == {("normal", "succeeded"): 1.0, ("normal", "failed"): 1.0}
    queued = {s.labels["lane"]: s.value
              for s in families["astria_queue_post_seconds"].samples  # type: ignore[attr-defined]
              if s.name.endswith("_count")}
    assert queued == {"normal": 2.0}  # each job's first POST, once
    threads = {(s.labels["pool"], s.labels["state"]): s.value
               for s in families["astria_queue_engine_threads"].samples}  # type: ignore[attr-defined]
    assert threads[("astria", "total")] == 512 and threads[("webhook", "total")] == 16
    assert ("copy", "total") not in threads  # no STORAGE_URL: no copy pool at work
    delivered = {s.labels["type"]: s.value
                 for s in families["astria_queue_webhook_seconds"].samples  # type: ignore[attr-defined]
                 if s.name.endswith("_count")}
    assert delivered == {"job.succeeded": 1.0}  # its event to its delivery, once
    failures = families["astria_queue_failures"].samples  # type: ignore[attr-defined]
    assert [(s.labels, s.value) for s in failures] == [({"error": "PromptFailed"}, 1.0)]
    assert {s.labels["lane"] for s in families["astria_queue_backlog"].samples} == {  # type: ignore[attr-defined]
        "interactive", "normal", "batch"}
    promtool = shutil.which("promtool")
    if promtool:  # Prometheus's own lint of the exposition (Debian: apt install prometheus)
        text = requests.get(url + "/metrics", timeout=5).text
        linted = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                                text=True, timeout=30)
        assert linted.returncode == 0, linted.stdout + linted.stderr
