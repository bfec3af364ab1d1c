"""The engine cannot die quietly: no record or error ends its loop, a job whose steps keep
failing ends, and an engine that stopped beating is reported by both health checks."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

import pytest
import requests

from tests.harness import Stack, start_callback_receiver, terminal_states, wait_for

pytestmark = pytest.mark.slow  # starts worker processes


def test_an_unreadable_job_record_stops_no_other_job(stack: Stack) -> None:
    bad = f"{stack.prefix}-corrupt"
    stack.redis.hset(f"{stack.prefix}:job:{bad}", mapping={"status": "bogus", "lane": "x"})
    stack.redis.zadd(f"{stack.prefix}:due:poll", {bad: time.time()})
    jobs = [stack.send({"tune_id": 42, "text": f"beside a bad record {i}"}) for i in range(10)]
    wait_for(lambda: len(terminal_states(stack.redis, jobs)) == 10, 60, "10 jobs")
    assert "its record cannot be read" in stack.worker_logs()
    assert stack.cli("health").stdout.startswith("OK redis, 1 worker(s), 1 engine(s) beating")
    assert json.loads(stack.cli("health", "--json").stdout) == {
        "ok": True, "workers": 1, "engines": 1, "notes": []}


def test_a_job_whose_steps_keep_failing_ends_with_an_internal_error(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(astria_read_timeout=2, job_lease_seconds=3)
    stack.start_worker()
    broken = f"{stack.prefix}-no-prompt"  # waiting for a prompt it has no id of
    stack.redis.hset(f"{stack.prefix}:job:{broken}", mapping={
        "status": "waiting", "tenant": "default", "lane": "normal", "spec": '{"tune_id": 1}',
        "deadline": time.time() + 600, "tune_id": 1})
    stack.redis.zadd(f"{stack.prefix}:due:poll", {broken: time.time()})
    error = stack.outcome(broken, timeout=60)
    assert type(error).__name__ == "InternalError" and "failed on this job 5 times" in str(error)
    assert stack.outcome(stack.send({"tune_id": 42, "text": "still working"}))["images"]


def test_an_engine_that_stopped_beating_is_reported(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    url = start_callback_receiver(stack).rsplit("/", 2)[0]
    worker = stack.start_worker()
    assert stack.outcome(stack.send({"tune_id": 42, "text": "x"}))["images"]
    healthy = requests.get(url + "/healthz", timeout=5)
    assert healthy.status_code == 200 and healthy.json()["engines"]["fresh"] == 1
    stack.kill_worker(worker)  # no clean stop: its beat stays, and ages
    engines = f"{stack.prefix}:engines"
    for engine in stack.redis.hkeys(engines):
        stack.redis.hset(engines, engine, time.time() - 120)
    health = stack.cli("health", check=False)
    assert health.returncode == 1 and "engine stale: " in health.stdout
    beat = re.search(r"\(last beat (\d+)s ago\)", health.stdout)
    assert beat and 120 <= int(beat.group(1)) < 180, health.stdout  # the CLI takes a while to start
    stale = requests.get(url + "/healthz", timeout=5)
    assert stale.status_code == 503 and stale.json()["engines"]["stale"]
