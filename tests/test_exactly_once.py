"""No job is lost and none creates more than one (billed) prompt, whatever fails."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

import pytest

from astria_local.redis_server import ThrowawayRedis
from astria_local.simulator import SimConfig
from tests.harness import API_KEY, SLOW_TUNE, Stack, wait_for
from worker.constants import Keys

pytestmark = pytest.mark.slow  # starts worker processes


def prompts_per_text(stack: Stack) -> Counter[str]:
    return Counter(p["text"] for p in stack.sim_json("/_sim/prompts"))


def test_504_after_create_is_reconciled_not_reposted(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(sim_config=SimConfig(fault_504_after_create=1.0))
    stack.start_worker()
    jobs = [stack.send({"tune_id": 42, "text": f"ambiguous {i}"}) for i in range(5)]
    for job in jobs:
        assert stack.outcome(job)["images"]
    assert set(prompts_per_text(stack).values()) == {1}
    assert stack.sim.counters["fault_504_after_create"] == 5


def test_garbage_answer_to_a_post_is_reconciled(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(sim_config=SimConfig(fault_garbage=0.5, rng_seed=3))
    stack.start_worker()
    jobs = [stack.send({"tune_id": 42, "text": f"garbage {i}"}) for i in range(8)]
    for job in jobs:
        assert stack.outcome(job)["images"]
    assert set(prompts_per_text(stack).values()) == {1}
    assert stack.sim.counters["fault_garbage"] > 0


def test_worker_killed_during_the_post_loses_nothing_and_posts_once(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(sim_config=SimConfig(fault_slow=1.0, slow_seconds=2),
                       job_lease_seconds=6, astria_read_timeout=4)
    first = stack.start_worker()
    job = stack.send({"tune_id": 42, "text": "killed mid-post"})
    wait_for(lambda: stack.sim.counters.get("fault_slow"), 20, "the POST to reach Astria")
    stack.kill_worker(first)  # the POST is in flight; Astria still creates the prompt
    wait_for(lambda: stack.sim.counters.get("created"), 20, "the prompt to be created")
    stack.sim.config.fault_slow = 0.0
    stack.start_worker()
    out = stack.outcome(job, timeout=60)
    assert out["images"]
    assert stack.sim.counters["created"] == 1


def test_same_idempotency_key_gives_one_prompt_and_one_outcome(stack: Stack) -> None:
    spec = {"tune_id": 42, "text": "same job twice", "idempotency_key": "order-17"}
    first, second = stack.send(spec), stack.send(spec)
    assert first != second
    assert stack.outcome(first) == stack.outcome(second)
    assert stack.sim.counters["created"] == 1
    third = stack.send(spec)  # after the outcome is known
    assert stack.outcome(third) == stack.outcome(first)
    assert stack.sim.counters["created"] == 1


def cli(stack: Stack, *args: str) -> str:
    return stack.cli(*args).stdout


def test_dead_letters_are_kept_listed_and_redriven(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(sim_config=SimConfig(fault_5xx=1.0, fault_5xx_status=503,
                                            fault_methods="POST"),
                       astria_retry_attempts=2, astria_retry_initial_delay=0.01)
    stack.start_worker()
    job = stack.send({"tune_id": 42, "text": "unavailable to death"})
    error = stack.outcome(job)
    assert type(error).__name__ == "AstriaUnavailable" and "503" in str(error)

    dead = [json.loads(line) for line in cli(stack, "dead", "list").splitlines()]
    assert [d["job_id"] for d in dead] == [job]
    assert dead[0]["spec"]["text"] == "unavailable to death"
    assert dead[0]["error"] == "AstriaUnavailable" and dead[0]["post_attempts"] == 2

    stack.sim.config.fault_5xx = 0.0
    assert json.loads(cli(stack, "dead", "redrive", job, "--json")) == {
        "job_id": job, "result": "redriven"}
    assert stack.outcome(job)["images"]
    assert stack.sim.counters["created"] == 1
    assert cli(stack, "dead", "list") == ""


def test_redriving_a_job_whose_prompt_exists_does_not_post_again(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(astria_job_deadline_seconds=1.5)
    stack.start_worker()
    job = stack.send({"tune_id": SLOW_TUNE, "text": "slow"})
    assert type(stack.outcome(job)).__name__ == "PromptTimeout"
    gets = stack.sim.counters["get"]
    cli(stack, "dead", "redrive", job)
    assert type(stack.outcome(job)).__name__ == "PromptTimeout"
    assert stack.sim.counters["created"] == 1 and stack.sim.counters["get"] > gets


def test_api_key_never_reaches_logs_results_or_redis(stack: Stack) -> None:
    ok = stack.send({"tune_id": 42, "text": "fine"})
    bad = stack.send({"tune_id": 42, "text": "SIMULATE_USER_ERROR"})
    stack.outcome(ok), stack.outcome(bad)
    everything = [stack.worker_logs(), str(stack.outcome(ok)), str(stack.outcome(bad))]
    for key in stack.redis.scan_iter(count=1000):
        everything.append(repr(stack.redis.dump(key)))
    assert all(API_KEY not in text for text in everything)
    assert all(API_KEY.removeprefix("sk-test-") not in text for text in everything)


def test_redis_restart_with_aof_loses_no_accepted_job(make_stack: Callable[..., Stack]) -> None:
    with ThrowawayRedis(appendonly=True) as server:
        stack = make_stack(sim_config=SimConfig(generation_seconds=1))
        stack.redis_url = stack.env["REDIS_URL"] = server.url
        stack.app.conf.broker_url = stack.app.conf.result_backend = server.url
        stack.start_worker()
        jobs = [stack.send({"tune_id": 42, "text": f"before restart {i}"}) for i in range(20)]
        server.restart()
        jobs += [stack.send({"tune_id": 42, "text": f"after restart {i}"}) for i in range(10)]
        for job in jobs:
            assert stack.outcome(job, timeout=90)["images"]
        assert set(prompts_per_text(stack).values()) == {1}
        stack.close()


def test_message_taken_by_a_worker_that_died_at_once_is_recovered(
    make_stack: Callable[..., Stack],
) -> None:
    """A worker killed right after taking a message from the queue, before kombu recorded it."""
    stack = make_stack(broker_visibility_timeout=40, astria_retry_max_seconds=5,
                       astria_read_timeout=5, job_lease_seconds=10)
    keys = Keys(stack.prefix)
    job = stack.send({"tune_id": 42, "text": "taken by a dying worker"})
    dead_list = keys.processing_list("dead-worker")
    assert stack.redis.lmove("celery", dead_list, "RIGHT", "LEFT")
    stack.redis.hset(keys.processing, dead_list, "celery")  # its heartbeat never beat
    stack.start_worker()
    assert stack.outcome(job, timeout=60)["images"]
    assert stack.redis.llen(dead_list) == 0
    assert not stack.redis.hexists(keys.processing, dead_list)
