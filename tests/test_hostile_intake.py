"""Nothing a producer sends to the queue stops, stalls or loses anything: unreadable messages,
wrong arguments, Celery priorities, a Redis out of memory, an evicting Redis."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from astria_local.redis_server import ThrowawayRedis
from tests.harness import ROOT, Stack, terminal_states, wait_for

pytestmark = pytest.mark.slow  # starts worker processes

POISON = [
    b"not json", b'{"body": "e30="}', b'{"body": "%%%", "properties": {}}', b'{"trunc',
    b"\xff\xfe binary", b"[" * 50_000,
    json.dumps({"body": base64.b64encode(b"[[], {}, {}]").decode(),
                "content-type": "application/json",
                "headers": {"task": "astria.submit_prompt"},  # and no id
                "properties": {"delivery_tag": "t", "body_encoding": "base64",
                               "delivery_info": {"exchange": "", "routing_key": "celery"}}}
               ).encode(),
]


def test_unreadable_messages_are_dead_letters_and_the_pool_goes_on(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    worker = stack.start_worker(concurrency=2, pool="prefork")  # the recommended command
    stack.wait_ready()
    for raw in POISON:
        stack.redis.lpush("celery", raw)
    delayed = stack.send({"tune_id": 1, "text": "later"}, countdown=30)
    jobs = [stack.send({"tune_id": 1, "text": f"after the poison {i}"}) for i in range(30)]
    wait_for(lambda: len(terminal_states(stack.redis, jobs)) == 30, 60, "30 jobs", every=0.3)
    assert set(terminal_states(stack.redis, jobs).values()) == {"SUCCESS"}
    assert worker.poll() is None
    error = stack.outcome(delayed)  # an ETA is refused, and its producer is told
    assert type(error).__name__ == "InvalidMessage" and "ETA or countdown" in str(error)
    listed = [json.loads(line)
              for line in stack.cli("dead", "messages", "list").stdout.splitlines()]
    assert len(listed) == len(POISON) + 1
    assert {entry["reason"] for entry in listed} >= {
        "message: not JSON", "properties: must be a JSON object",
        "headers.id: must be 1-255 printable characters without spaces"}
    logged = [line for line in stack.worker_logs().splitlines() if "dead message" in line]
    assert len(logged) == len(POISON) + 1  # each logged once
    assert stack.cli("dead", "messages", "purge", "--all").stdout.strip() == (
        f"{len(POISON) + 1} purged")
    assert stack.cli("dead", "messages", "list").stdout == ""


def test_wrong_arguments_end_at_once_in_failure(stack: Stack) -> None:
    app = stack.app
    cases = {
        "missing 'spec'": app.send_task("astria.submit_prompt", kwargs={}),
        "unexpected keyword arguments ['colour']": app.send_task(
            "astria.submit_prompt", kwargs={"spec": {"tune_id": 1, "text": "x"}, "colour": 1}),
        "spec: must be a JSON object, got str": app.send_task(
            "astria.submit_prompt", kwargs={"spec": "hello"}),
        "2 positional arguments": app.send_task(
            "astria.submit_prompt", args=[{"tune_id": 1, "text": "x"}, 2]),
    }
    for expected, result in cases.items():
        error = stack.outcome(result.id)
        assert type(error).__name__ == "InvalidSpec" and expected in str(error)
    one_positional = app.send_task("astria.submit_prompt", args=[{"tune_id": 1, "text": "ok"}])
    assert stack.outcome(one_positional.id)["images"]


def test_a_message_sent_with_a_celery_priority_is_consumed(stack: Stack) -> None:
    jobs = [stack.send({"tune_id": 1, "text": f"priority {p}"}, priority=p) for p in (1, 5, 9)]
    assert all(stack.outcome(job)["images"] for job in jobs)


def test_redis_out_of_memory_stops_no_worker_and_loses_no_job(
    make_stack: Callable[..., Stack],
) -> None:
    """With `maxmemory` reached (noeviction), Redis refuses writes: taking a message, recording a
    registration, requeueing it. Workers pause, nothing is acknowledged that was not registered,
    and every job is done once memory is back."""
    with ThrowawayRedis() as server:
        # short leases: a job granted as the refusals began is taken up again sooner
        stack = make_stack(base=server.url, broker_visibility_timeout=35,
                           astria_read_timeout=5, job_lease_seconds=10)
        worker = stack.start_worker(concurrency=2, pool="prefork")
        stack.wait_ready()
        jobs = [stack.send({"tune_id": 1, "text": f"oom {i}"}) for i in range(8)]
        stack.redis.config_set("maxmemory", 1)
        wait_for(lambda: "Redis refused" in stack.worker_logs(), 30, "a refused write")
        assert worker.poll() is None and not terminal_states(stack.redis, jobs)
        stack.redis.config_set("maxmemory", 0)
        wait_for(lambda: len(terminal_states(stack.redis, jobs)) == 8, 120, "8 jobs", every=0.5)
        assert set(terminal_states(stack.redis, jobs).values()) == {"SUCCESS"}
        assert worker.poll() is None
        assert len(stack.sim.prompts()) == 8  # and none twice
        stack.stop_processes()


def test_a_redis_that_evicts_keys_is_refused_at_start(make_stack: Callable[..., Stack]) -> None:
    with ThrowawayRedis(args=("--maxmemory-policy", "allkeys-lru")) as server:
        stack = make_stack(base=server.url)
        refused = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "worker", "worker", "-P", "solo"],
            cwd=ROOT, env={**os.environ, **stack.env}, capture_output=True, text=True,
            timeout=60)
        assert refused.returncode != 0
        assert "maxmemory-policy is allkeys-lru" in refused.stderr + refused.stdout
        stack.start_worker(redis_allow_eviction="true")
        assert stack.outcome(stack.send({"tune_id": 1, "text": "allowed, loudly"}))["images"]
        assert "REDIS_ALLOW_EVICTION=true: Redis maxmemory-policy" in stack.worker_logs()
        stack.stop_processes()
