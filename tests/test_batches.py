"""Batches end to end: the CLI's `batch` (a resumable batch of a JSONL file) and the HTTP API's
/v1/batches, with a worker, the simulator and a producer's webhook endpoint over real HTTP."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from astria_local.simulator import SimConfig
from astria_local.webhook_endpoint import WebhookEndpoint
from tests.harness import SLOW_TUNE, Stack, start_api, wait_for
from tests.test_api import Api, tenants_file

pytestmark = pytest.mark.slow  # starts worker processes

SECRET = "whsec_" + base64.b64encode(b"batch-webhook-signing-key-32-by!").decode()


def test_the_cli_batch_answers_once_and_resumes_without_sending_twice(
    make_stack: Callable[..., Stack], webhook_endpoints: Callable[..., WebhookEndpoint],
    tmp_path: Path,
) -> None:
    hooks = webhook_endpoints(SECRET)
    stack = make_stack(sim_config=SimConfig(generation_seconds=0.5), webhook_secret=SECRET)
    stack.start_worker()
    specs = tmp_path / "specs.jsonl"
    specs.write_text("".join(json.dumps({"tune_id": 42, "text": f"item {i}"}) + "\n"
                             for i in range(18)) + json.dumps(
        {"tune_id": 42, "text": "SIMULATE_USER_ERROR one"}) + "\n")
    first = stack.cli("batch", str(specs), "--callback", hooks.url, "--timeout", "120",
                      check=False)
    assert first.returncode == 1  # one job failed
    batch_id = first.stdout.split()[1].rstrip(":")
    assert "18 succeeded, 1 failed, 0 unfinished" in first.stdout
    wait_for(lambda: hooks.acknowledged, 30, "the batch.completed webhook")
    [(message, event)] = hooks.acknowledged.items()
    assert message == f"msg_batch_{batch_id}" and event["type"] == "batch.completed"
    counts = event["data"]["counts"]
    assert (counts["size"], counts["succeeded"], counts["failed"], counts["queued"]) == (
        19, 18, 1, 0)
    assert counts["cost_mc"] > 0

    again = stack.cli("batch", str(specs), "--callback", hooks.url, "--resume", batch_id,
                      "--timeout", "60", "--json", check=False)  # a resume: all is there
    assert [json.loads(line) for line in again.stdout.splitlines()] == [
        {"batch_id": batch_id, "jobs": 19},
        {"batch_id": batch_id, "succeeded": 18, "failed": 1, "unfinished": 0,
         "out": str(specs.with_suffix(".out.jsonl"))}]
    texts = [prompt["text"] for prompt in stack.sim_json("/_sim/prompts")]
    assert len(texts) == len(set(texts)) == 19  # nothing sent twice
    assert list(hooks.acknowledged) == [message]
    other = stack.cli("batch", str(specs), "--batch-id", batch_id, check=False)
    assert other.returncode == 1 and "is another batch's" in other.stderr  # no callback now
    other = stack.cli("--json", "batch", str(specs), "--batch-id", batch_id, check=False)
    assert other.returncode == 1 and "is another batch's" in json.loads(other.stderr)["error"]


def test_the_api_creates_reads_streams_and_cancels_a_batch(
    make_stack: Callable[..., Stack], tmp_path: Path,
) -> None:
    stack = make_stack(sim_config=SimConfig(generation_seconds=0.5))
    stack.start_worker()
    api = Api(start_api(stack, tenants_file(tmp_path)))
    specs = [{"tune_id": 42, "text": f"api item {i}"} for i in range(5)]
    created = api.call("POST", "/v1/batches", json={"specs": specs})
    assert created.status_code == 202, created.text
    batch = created.json()
    assert created.headers["Location"] == f"/v1/batches/{batch['id']}"
    assert batch["size"] == 5 and len(batch["jobs"]) == 5
    with api.call("GET", f"/v1/batches/{batch['id']}/events", stream=True) as events:
        types = [line.split(": ", 1)[1] for line in events.iter_lines(decode_unicode=True)
                 if line.startswith("event: ")]
    assert types == ["member"] * 5 + ["completed"]
    done = api.call("GET", f"/v1/batches/{batch['id']}").json()
    assert (done["succeeded"], done["completed_at"] is not None) == (5, True)
    assert api.call("GET", f"/v1/batches/{batch['id']}", tenant="bulk").status_code == 404

    refused = api.call("POST", "/v1/batches", json={"specs": [specs[0], {"tune_id": 42}]})
    assert refused.status_code == 422 and "specs[1].text" in refused.json()["detail"]
    foreign = api.call("POST", "/v1/batches", json={"specs": [{**specs[0], "tenant": "bulk"}]})
    assert foreign.status_code == 403 and "specs[0].tenant" in foreign.json()["detail"]

    slow = api.call("POST", "/v1/batches", json={"specs": [
        {"tune_id": SLOW_TUNE, "text": f"slow {i}"} for i in range(3)]}).json()
    cancelled = api.call("DELETE", f"/v1/batches/{slow['id']}").json()
    assert (cancelled["revoked"], cancelled["completed_at"] is not None) == (3, True)
