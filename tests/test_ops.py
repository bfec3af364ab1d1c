"""Operations: batch, stats, health, JSON logs, the CLI and the demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness import PTI_TUNE, ROOT, Stack, wait_for

pytestmark = pytest.mark.slow  # starts worker processes

SCRIPTS = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


def test_batch_dry_run_reports_every_bad_line_and_enqueues_nothing(
    make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    stack = make_stack()
    specs = tmp_path / "specs.jsonl"
    specs.write_text("\n".join([
        json.dumps({"tune_id": 1, "text": "fine"}),
        json.dumps({"tune_id": 1, "text": " "}),
        "{not json",
        json.dumps({"tune_id": 1, "text": "fine", "num_images": 99}),
    ]) + "\n")
    for args in (["--dry-run"], []):
        done = stack.cli("batch", str(specs), *args, check=False)
        assert done.returncode == 1
        assert "line 2: text: must not be blank" in done.stderr
        assert "line 3:" in done.stderr and "line 4: num_images" in done.stderr
        assert "1 valid, 3 invalid" in done.stdout
    assert stack.redis.llen("celery") == 0


def test_batch_writes_outcomes(stack: Stack, tmp_path: Path) -> None:
    specs = tmp_path / "specs.jsonl"
    specs.write_text("".join(json.dumps({"tune_id": 1, "text": f"b{i}"}) + "\n" for i in range(4)))
    done = stack.cli("batch", str(specs), "--out", str(tmp_path / "out.jsonl"))
    assert "4 succeeded, 0 failed" in done.stdout
    outcomes = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(o["line"] for o in outcomes) == [1, 2, 3, 4]
    assert all(o["state"] == "SUCCESS" and o["outcome"]["images"] for o in outcomes)


def test_stats_and_health(stack: Stack) -> None:
    stack.outcome(stack.send({"tune_id": PTI_TUNE, "text": "ohwx"}))
    stack.outcome(stack.send({"tune_id": 1, "text": "SIMULATE_USER_ERROR"}))
    # Outcomes are counted as they are decided; request counts reach Redis within a second.
    stats = wait_for(lambda: (s := json.loads(stack.cli("stats").stdout))["astria_requests"]
                     .get("GET:2xx", 0) >= 2 and s, 15, "request counts flushed", every=0.3)
    assert stats["jobs"]["succeeded"] == 1 and stats["jobs"]["failed"] == 1
    assert stats["failures_by_error"] == {"PromptFailed": 1}
    assert stats["reroutes"] == 1 and stats["routes_learnt_from_422"] == 1
    assert stats["astria_requests"]["POST:422"] == 1
    assert stats["astria_latency_ms"]["samples"] >= 4 and stats["astria_latency_ms"]["p50"] > 0

    assert stack.cli("health").stdout.startswith("OK redis, 1 worker(s)")
    bad = stack.cli("health", check=False, ASTRIA_API_KEY="wrong-key")
    assert bad.returncode == 1 and "astria: key refused (401)" in bad.stdout


def test_json_logs_carry_job_fields(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.start_worker(log_format="json")
    job = stack.send({"tune_id": 1, "text": "logged"})
    stack.outcome(job)

    def finished_line() -> dict[str, object] | None:
        for line in stack.worker_logs().splitlines():
            if line.startswith("{") and job in line and '"outcome"' in line:
                return dict(json.loads(line))
        return None

    entry = wait_for(finished_line, 10, "the job's JSON log line")
    assert entry["job_id"] == job and entry["outcome"] == "SUCCESS" and entry["prompt_id"]


def test_cli_enqueue_wait_and_status(stack: Stack) -> None:
    done = stack.cli("enqueue", json.dumps({"tune_id": 1, "text": "from the shell"}), "--wait")
    job_id, outcome = done.stdout.split("\n", 1)
    assert json.loads(outcome)["images"]
    status = json.loads(stack.cli("status", job_id).stdout)
    assert status["state"] == "succeeded" and status["outcome"]["state"] == "SUCCESS"
    assert status["outcome"]["result"]["text"] == "from the shell" and status["post_attempts"] == 1
    unknown = stack.cli("status", "no-such-job", check=False)
    assert unknown.returncode == 4 and json.loads(unknown.stdout)["state"] == "missing"
    listed = stack.cli("--redis-url", stack.redis_url, "jobs", "list", "--state", "succeeded",
                       REDIS_URL="redis://127.0.0.1:1/0")  # the option wins over the variable
    assert job_id in [json.loads(line)["id"] for line in listed.stdout.splitlines()]
    assert stack.cli("jobs", "list", "--state", "queued").stdout == ""
    assert stack.cli("--version").stdout.startswith("astria-queue, version ")
    assert stack.cli("probe", "ready").stdout.strip() == "ready: ok"
    assert stack.cli("probe", "alive").stdout.strip() == "alive: ok"  # the worker's engine beats
    down = stack.cli("probe", "ready", check=False, REDIS_URL="redis://127.0.0.1:1/0")
    assert down.returncode == 1 and "ready:" in down.stderr
    bad = stack.cli("enqueue", json.dumps({"tune_id": 1, "text": ""}), check=False)
    assert bad.returncode == 1 and "InvalidSpec: text: must not be blank" in bad.stderr


def test_demo_runs_end_to_end_with_nothing_configured() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "ASTRIA_API_KEY")}
    done = subprocess.run([sys.executable, "-m", "worker.cli", "demo", "--timeout", "120"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    for line in ("OK   checkpoint tune", "OK   SDXL LoRA tune (re-routed): prompt",
                 "(re-routed from 1002)", "OK   FaceID tune (re-routed)",
                 "FAIL invalid spec: InvalidSpec: text: must not be blank"):
        assert line in done.stdout
