"""Many producers on one queue: lanes, fair tenants, cancellation, expiry, per-tenant stats."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from celery.exceptions import TaskRevokedError

from astria_local.simulator import SimConfig
from tests.harness import SLOW_TUNE, Stack, wait_for

pytestmark = pytest.mark.slow  # starts worker processes


def texts_in_order(stack: Stack) -> list[str]:
    return [p["text"] for p in sorted(stack.sim_json("/_sim/prompts"), key=lambda p: p["id"])]


def test_interactive_jobs_overtake_a_batch_backlog(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(astria_rate_limit_per_second=10, astria_rate_limit_burst=1)
    batch = [stack.send({"tune_id": 42, "text": f"batch {i}", "priority": "batch",
                         "tenant": "bulk"}) for i in range(60)]
    stack.start_worker()
    wait_for(lambda: len(stack.sim_json("/_sim/prompts")) >= 5, 30, "the backlog to start")
    urgent = [stack.send({"tune_id": 42, "text": f"urgent {i}", "priority": "interactive",
                          "tenant": "app"}) for i in range(3)]
    for job in urgent:
        assert stack.outcome(job, timeout=30)["images"]
    order = texts_in_order(stack)
    assert max(order.index(f"urgent {i}") for i in range(3)) < 20  # long before batch's end
    assert all(stack.outcome(job, timeout=60)["images"] for job in batch)


def test_a_small_tenant_waits_its_fair_share_only(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(astria_rate_limit_per_second=10, astria_rate_limit_burst=1)
    big = [stack.send({"tune_id": 42, "text": f"big {i}", "tenant": "big"}) for i in range(60)]
    small = [stack.send({"tune_id": 42, "text": f"small {i}", "tenant": "small"})
             for i in range(5)]
    stack.start_worker()
    for job in small:
        stack.outcome(job, timeout=30)
    order = texts_in_order(stack)
    assert max(order.index(f"small {i}") for i in range(5)) < 12  # turns: big, small, big, ...
    assert all(stack.outcome(job, timeout=60)["images"] for job in big)


def test_celery_revoke_cancels_jobs_before_their_post(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(astria_rate_limit_per_second=2, astria_rate_limit_burst=1)
    stack.start_worker()
    stack.wait_ready()
    jobs = [stack.send({"tune_id": 42, "text": f"job {i}"}) for i in range(10)]
    for job in jobs[5:]:
        stack.result(job).revoke()  # what any Celery producer does
    for job in jobs[5:]:
        with pytest.raises(TaskRevokedError):
            stack.result(job).get(timeout=30)
    assert all(stack.outcome(job, timeout=30)["images"] for job in jobs[:5])
    assert sorted(texts_in_order(stack)) == [f"job {i}" for i in range(5)]
    stats = json.loads(stack.cli("stats").stdout)
    assert stats["jobs"]["revoked"] == 5


def test_cancel_a_waiting_job_stops_it_and_deletes_its_prompt(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    stack.start_worker()
    job = stack.send({"tune_id": SLOW_TUNE, "text": "never finishes", "tenant": "t1"})
    wait_for(lambda: stack.result(job).state == "WAITING", 20, "the prompt to exist")
    assert stack.cli("cancel", job, "--delete-prompt").stdout.strip() == f"{job}: revoked"
    with pytest.raises(TaskRevokedError):
        stack.result(job).get(timeout=10)
    wait_for(lambda: stack.sim.counters.get("deleted") == 1, 20, "the prompt's DELETE")
    gets = stack.sim.counters.get("get", 0)
    record = stack.redis.hgetall(f"{stack.prefix}:job:{job}")
    assert record[b"status"] == b"revoked" and record[b"prompt_deleted"] == b"1"
    assert record[b"prompt_id"]  # the prompt it created stays on record
    assert stack.sim.counters.get("get", 0) == gets  # no more polling


def test_cancel_every_job_of_a_tenant(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(astria_rate_limit_per_second=1, astria_rate_limit_burst=1)
    stack.start_worker()
    jobs = [stack.send({"tune_id": 42, "text": f"t {i}", "tenant": "gone"}) for i in range(6)]
    keep = stack.send({"tune_id": 42, "text": "kept", "tenant": "stays"})
    wait_for(lambda: stack.redis.scard(f"{stack.prefix}:live:gone") == 6, 20, "registration")
    out = stack.cli("cancel", "--tenant", "gone").stdout
    assert "job(s) of gone revoked" in out
    assert all(type(stack.outcome(j)).__name__ == "TaskRevokedError" for j in jobs[1:])
    assert stack.outcome(keep, timeout=30)["images"]


def test_a_job_not_sent_before_it_expires_ends_expired(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(astria_rate_limit_per_second=0.5, astria_rate_limit_burst=1)
    stack.start_worker()
    first = stack.send({"tune_id": 42, "text": "takes the only token"})
    late = stack.send({"tune_id": 42, "text": "too late", "expires_in": 1})
    by_celery = stack.send({"tune_id": 42, "text": "celery's own expires"}, expires=1)
    for job in (late, by_celery):
        error = stack.outcome(job, timeout=20)
        assert type(error).__name__ == "TaskRevokedError" and "expired" in str(error)
    assert stack.outcome(first, timeout=30)["images"]
    assert "too late" not in texts_in_order(stack)


def test_stats_per_tenant_and_lane_with_cost(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(sim_config=SimConfig(generation_seconds=0.2))
    stack.start_worker()
    for tenant, lane in (("app", "interactive"), ("etl", "batch")):
        job = stack.send({"tune_id": 42, "text": f"{tenant}", "tenant": tenant,
                          "priority": lane})
        assert stack.outcome(job)["cost_mc"] == 1000
    rows = json.loads(stack.cli("stats").stdout)["by_tenant_and_lane"]
    assert rows["app/interactive"]["SUCCESS"] == 1 and rows["app/interactive"]["cost_mc"] == 1000
    assert rows["etl/batch"]["enqueued"] == 1
    assert rows["etl/batch"]["latency_s"]["samples"] == 1
