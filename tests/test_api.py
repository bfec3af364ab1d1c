"""The HTTP API (`astria-queue api`, uvicorn) over real HTTP on loopback, with a worker and the
simulator: what a producer in any language gets, and what a stranger or another tenant gets."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.harness import SLOW_TUNE, Stack, start_api, wait_for

TOKENS = {"app": "tok-app-" + "a" * 24, "bulk": "tok-bulk-" + "b" * 24}


def tenants_file(tmp_path: Path) -> Path:
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps({"tenants": {
        name: {"token_sha256": [hashlib.sha256(token.encode()).hexdigest()]}
        for name, token in TOKENS.items()}}))
    return path


class Api:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, tenant: str | None = "app",
             **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if tenant:
            headers["Authorization"] = f"Bearer {TOKENS[tenant]}"
        return requests.request(method, self.base + path, headers=headers, timeout=90,
                                **kwargs)

    def post(self, spec: dict[str, Any], tenant: str = "app", **kwargs: Any
             ) -> requests.Response:
        return self.call("POST", "/v1/jobs", tenant, json=spec, **kwargs)


@pytest.fixture
def api(make_stack: Callable[..., Stack], tmp_path: Path) -> tuple[Api, Stack]:
    stack = make_stack()
    stack.start_worker()
    return Api(start_api(stack, tenants_file(tmp_path))), stack


def job_hashes(stack: Stack) -> int:
    return sum(1 for _ in stack.redis.scan_iter(f"{stack.prefix}:job:*", count=1000,
                                                _type="hash"))


def test_a_job_posted_over_http_is_created_once_and_its_outcome_read_back(
        api: tuple[Api, Stack]) -> None:
    client, stack = api
    answer = client.post({"tune_id": 1, "text": "a cat"})
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    assert answer.headers["Location"] == f"/v1/jobs/{job_id}"
    assert client.call("GET", answer.headers["Location"]).json()["state"] in (
        "queued", "waiting", "succeeded")  # registered at once: no broker hop
    done = wait_for(lambda: (client.call("GET", f"/v1/jobs/{job_id}").json()
                             if client.call("GET", f"/v1/jobs/{job_id}").json()["state"]
                             == "succeeded" else None), 60, "the job to succeed")
    assert done["tenant"] == "app" and done["post_attempts"] == 1
    assert done["outcome"]["state"] == "SUCCESS" and done["outcome"]["result"]["images"]
    assert len(stack.sim_json("/_sim/prompts")) == 1


def test_prefer_wait_answers_with_the_outcome_or_202_when_it_is_not_decided_in_time(
        api: tuple[Api, Stack]) -> None:
    client, _ = api
    decided = client.post({"tune_id": 1, "text": "a dog"}, headers={"Prefer": "wait=30"})
    assert decided.status_code == 200, decided.text
    assert decided.json()["outcome"]["state"] == "SUCCESS"
    slow = client.post({"tune_id": SLOW_TUNE, "text": "slow"}, headers={"Prefer": "wait=1"})
    assert slow.status_code == 202 and slow.json()["state"] in ("queued", "waiting")
    too_long = client.post({"tune_id": 1, "text": "x"}, headers={"Prefer": "wait=61"})
    assert too_long.status_code == 400 and "at most 60" in too_long.json()["detail"]


def test_another_tenants_job_does_not_exist_for_you(api: tuple[Api, Stack]) -> None:
    client, stack = api
    job_id = client.post({"tune_id": SLOW_TUNE, "text": "mine"}).json()["id"]
    for method in ("GET", "DELETE"):
        answer = client.call(method, f"/v1/jobs/{job_id}", tenant="bulk")
        assert answer.status_code == 404, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
    assert client.call("GET", f"/v1/jobs/{job_id}").json()["state"] != "revoked"
    before = job_hashes(stack)
    posing = client.post({"tune_id": 1, "text": "x", "tenant": "app"}, tenant="bulk")
    assert posing.status_code == 403 and posing.json()["detail"].startswith("tenant:")
    assert job_hashes(stack) == before  # a refused job leaves nothing


def test_the_same_idempotency_key_from_two_tenants_makes_two_jobs(
        api: tuple[Api, Stack]) -> None:
    client, _ = api
    spec = {"tune_id": SLOW_TUNE, "text": "avatar"}
    headers = {"Idempotency-Key": "avatar-42"}
    first = client.post(spec, headers=headers).json()["id"]
    again = client.post(spec, headers=headers).json()
    other = client.post(spec, tenant="bulk", headers=headers).json()
    assert again["state"] == "follower"  # the same tenant's: one prompt for both
    assert other["state"] == "queued" and other["id"] != first  # another tenant's: its own


def test_cancel_over_http(api: tuple[Api, Stack]) -> None:
    client, _ = api
    job_id = client.post({"tune_id": SLOW_TUNE, "text": "never mind"}).json()["id"]
    cancelled = client.call("DELETE", f"/v1/jobs/{job_id}")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "revoked"
    assert cancelled.json()["outcome"] == {"state": "REVOKED", "reason": "revoked"}


def test_bad_requests_get_problems_naming_the_field_and_leave_nothing(
        api: tuple[Api, Stack]) -> None:
    client, stack = api
    before = job_hashes(stack)
    cases: list[tuple[requests.Response, int, str]] = [
        (client.call("POST", "/v1/jobs", tenant=None, json={"tune_id": 1, "text": "x"}), 401,
         "authorization"),
        (client.call("POST", "/v1/jobs", tenant=None, json={"tune_id": 1, "text": "x"},
                     headers={"Authorization": "Bearer guessed"}), 401, "authorization"),
        (client.post({"tune_id": -1, "w": 99999}), 422, "tune_id"),
        (client.call("POST", "/v1/jobs", data=b"not json",
                     headers={"Content-Type": "application/json"}), 422, "body"),
        (client.post(["a", "list"]), 422, "body"),  # type: ignore[arg-type]
        (client.post({"tune_id": 1, "text": "x", "idempotency_key": "a"},
                     headers={"Idempotency-Key": "b"}), 422, "idempotency_key"),
        (client.call("POST", "/v1/jobs", data=b"{" + b" " * 7_000_000 + b"}",
                     headers={"Content-Type": "application/json"}), 413, "body"),
    ]
    for answer, status, field in cases:
        assert answer.status_code == status, (status, answer.text[:300])
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert problem["status"] == status and problem["detail"].startswith(field), problem
    assert cases[0][0].headers["WWW-Authenticate"].startswith("Bearer")
    assert [e["field"] for e in cases[2][0].json()["errors"]] == ["tune_id", "text", "w"]
    assert job_hashes(stack) == before


def test_each_token_has_its_own_rate(make_stack: Callable[..., Stack], tmp_path: Path) -> None:
    stack = make_stack()
    client = Api(start_api(stack, tenants_file(tmp_path), api_rate_per_second=0.01,
                           api_rate_burst=2))
    statuses = [client.call("GET", "/v1/jobs/nope").status_code for _ in range(3)]
    assert statuses == [404, 404, 429]
    limited = client.call("GET", "/v1/jobs/nope")
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert client.call("GET", "/v1/jobs/nope", tenant="bulk").status_code == 404


def test_the_readmes_node_example_runs_against_the_api(api: tuple[Api, Stack],
                                                       tmp_path: Path) -> None:
    """The README's own Node.js code, as written, with nothing but Node's fetch."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    client, _ = api
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    [code] = [block for block in re.findall(r"```js\n(.*?)```", readme, re.S)
              if "/v1/jobs" in block]
    script = tmp_path / "job.mjs"
    script.write_text(code)
    ran = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "API_URL": client.base, "API_TOKEN": TOKENS["app"]})
    assert ran.returncode == 0, ran.stderr
    assert "http" in ran.stdout and "images" not in ran.stderr


def read_events(client: Api, job_id: str, **headers: str) -> list[dict[str, Any]]:
    """The job's server-sent events until the stream ends."""
    events: list[dict[str, Any]] = []
    block: dict[str, Any] = {}
    with client.call("GET", f"/v1/jobs/{job_id}/events", headers=headers, stream=True) as answer:
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/event-stream")
        for line in answer.iter_lines(decode_unicode=True):
            if not line:
                if "data" in block:
                    events.append({**block, "data": json.loads(block["data"])})
                block = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                block[name] = value
    return events


def test_a_jobs_events_stream_until_its_end_and_resume_after_the_last_seen(
        api: tuple[Api, Stack]) -> None:
    client, _ = api
    job_id = client.post({"tune_id": 1, "text": "tell me as it goes"}).json()["id"]
    events = read_events(client, job_id)
    assert [e["event"] for e in events] == ["queued", "posted", "waiting", "succeeded"]
    assert events[1]["data"]["attempt"] == 1 and events[2]["data"]["prompt_id"]
    assert events[-1]["data"]["outcome"]["state"] == "SUCCESS"
    again = read_events(client, job_id, **{"Last-Event-ID": events[1]["id"]})
    assert [e["id"] for e in again] == [e["id"] for e in events[2:]]
    assert client.call("GET", f"/v1/jobs/{job_id}/events", tenant="bulk").status_code == 404


def test_a_job_refused_at_intake_is_read_with_its_failure(api: tuple[Api, Stack]) -> None:
    """Sent by name with no tune_id: refused by the worker, and still readable by its tenant."""
    client, stack = api
    job_id = stack.send({"text": "no tune", "tenant": "app"})
    stack.outcome(job_id)
    seen = client.call("GET", f"/v1/jobs/{job_id}")
    assert seen.status_code == 200, seen.text
    assert seen.json()["tune_id"] is None and seen.json()["state"] == "failed"
    assert seen.json()["outcome"]["error"]["type"] == "InvalidSpec"
