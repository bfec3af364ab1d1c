"""Astria as it answers: a prompt that shows long after its POST was given up, 429s beyond the
retry budget (POSTs, listings, a cancelled job's DELETE), POSTs whose fate stays unknown, a POST
answered with several prompts, a Flux LoRA tune."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from astria_local.simulator import SimConfig
from tests.harness import FLUX_TUNE, LIST_TUNE, SLOW_TUNE, Stack, wait_for
from worker.constants import Keys

pytestmark = pytest.mark.slow  # starts worker processes


def test_a_prompt_that_shows_long_after_its_post_was_given_up_is_not_paid_twice(
    make_stack: Callable[..., Stack],
) -> None:
    """Astria takes 16 s to create the prompt; the worker gives up on the answer at 4 s. The
    grace (14 s) counts from then, so the listing finds the prompt at 16 s: counted from the
    POST, the grace would have ended at 14 s and the job would have been POSTed again."""
    stack = make_stack(sim_config=SimConfig(fault_slow=1.0, slow_seconds=16,
                                            fault_methods="POST"),
                       astria_read_timeout=4, astria_ambiguous_grace_seconds=14)
    stack.start_worker()
    job = stack.send({"tune_id": 42, "text": "created late"})
    out = stack.outcome(job, timeout=60)
    assert out["images"]
    assert stack.sim.counters["requests_POST"] == 1 and len(stack.sim.prompts()) == 1


@pytest.mark.parametrize("method", ["POST", "GET"], ids=["POSTs", "listings"])
def test_429s_spend_no_retry_budget(make_stack: Callable[..., Stack], method: str) -> None:
    """The account's limit is not the job's fault. Every POST answered 429, or every listing
    that looks for the prompt of a POST answered 504 once it was created, five times when the
    retry budget allows one attempt (two listings): the job waits, and once Astria lets it
    through it succeeds with one prompt."""
    stack = make_stack(sim_config=SimConfig(fault_429=1.0, fault_methods=method, retry_after=0.01,
                                            fault_504_after_create=float(method == "GET")),
                       astria_retry_attempts=1)
    stack.start_worker()
    job = stack.send({"tune_id": 42, "text": f"{method}s throttled"})
    wait_for(lambda: stack.sim.counters.get("fault_429", 0) >= 5, 30, "five 429s")
    assert not stack.result(job).ready()
    stack.sim.config.fault_429 = 0.0
    assert stack.outcome(job)["images"]
    assert len(stack.sim.prompts()) == 1


def cancelled_while_deletes_are_refused(make_stack: Callable[..., Stack],
                                        **settings: Any) -> tuple[Stack, str]:
    """A job waiting for its images, cancelled with delete_prompt while Astria answers every
    DELETE 429."""
    stack = make_stack(sim_config=SimConfig(fault_429=1.0, fault_methods="DELETE",
                                            retry_after=0.01), **settings)
    stack.start_worker()
    job = stack.send({"tune_id": SLOW_TUNE, "text": "never finishes"})
    wait_for(lambda: stack.result(job).state == "WAITING", 20, "the prompt to exist")
    stack.cli("cancel", job, "--delete-prompt")
    return stack, job


def test_a_cancelled_jobs_delete_spends_no_retry_budget_on_429s(
    make_stack: Callable[..., Stack],
) -> None:
    """A waiting job cancelled with delete_prompt, its DELETE answered 429 five times when the
    retry budget allows one attempt: the DELETE waits, and once Astria lets it through the
    prompt is deleted (counted against the budget, the delete was given up after the second)."""
    stack, job = cancelled_while_deletes_are_refused(make_stack, astria_retry_attempts=1)
    wait_for(lambda: stack.sim.counters.get("fault_429", 0) >= 5, 30, "five 429s")
    stack.sim.config.fault_429 = 0.0
    wait_for(lambda: stack.sim.counters.get("deleted") == 1, 30, "the prompt's DELETE")
    record = stack.redis.hgetall(f"{stack.prefix}:job:{job}")
    assert record[b"prompt_deleted"] == b"1" and b"delete_error" not in record


def test_a_cancelled_jobs_delete_through_endless_429s_is_given_up(
    make_stack: Callable[..., Stack],
) -> None:
    """Every DELETE answered 429: tried again and again, but for no longer than
    ASTRIA_DELETE_FOR_SECONDS after the cancellation; then given up, the reason on the job's
    record for operators, and the job asks Astria nothing more."""
    stack, job = cancelled_while_deletes_are_refused(make_stack, astria_delete_for_seconds=2)
    key = f"{stack.prefix}:job:{job}"
    wait_for(lambda: stack.redis.hexists(key, "delete_error"), 30, "the DELETE given up")
    assert b"429" in stack.redis.hget(key, "delete_error")
    assert stack.sim.counters.get("fault_429", 0) >= 2  # tried again before the bound
    keys = Keys(stack.prefix)
    assert stack.redis.zscore(keys.due_poll, job) is None  # nothing more to ask
    assert stack.redis.hget(keys.leases, job) is None
    assert stack.redis.hget(key, "prompt_deleted") != b"1"
    assert stack.result(job).state == "REVOKED"


def test_posts_whose_fate_stays_unknown_are_capped(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(sim_config=SimConfig(fault_5xx=1.0, fault_5xx_status=502,
                                            fault_methods="POST"),
                       astria_read_timeout=1, astria_ambiguous_grace_seconds=11,
                       astria_max_ambiguous_posts=2)
    stack.start_worker()
    error = stack.outcome(stack.send({"tune_id": 42, "text": "never answered"}), timeout=90)
    assert type(error).__name__ == "AstriaUnavailable"
    assert "2 POSTs went unanswered" in str(error)
    assert stack.sim.counters["requests_POST"] == 2  # and not a third
    dead = stack.cli("dead", "list").stdout
    assert "never answered" in dead


def test_a_post_answered_with_several_prompts_waits_for_all(stack: Stack) -> None:
    out = stack.outcome(stack.send({"tune_id": LIST_TUNE, "text": "a partner model"}))
    assert len(out["prompt_ids"]) == 3 and out["prompt_id"] == out["prompt_ids"][0]
    assert len(out["images"]) == 3 and out["cost_mc"] == 3000
    assert stack.sim.counters["requests_POST"] == 1 and stack.sim.counters["created"] == 3


def test_a_flux_lora_tune_is_rerouted_to_the_flux_base(stack: Stack) -> None:
    first = stack.outcome(stack.send({"tune_id": FLUX_TUNE, "text": "ohwx man"}))
    assert first["rerouted"] and first["tune_id"] == 1504944
    assert first["text"] == f"<lora:{FLUX_TUNE}:1> ohwx man"
    second = stack.outcome(stack.send({"tune_id": FLUX_TUNE,
                                       "text": "<lora:7:0.5> ohwx man, with a second LoRA"}))
    assert second["text"] == f"<lora:{FLUX_TUNE}:1> <lora:7:0.5> ohwx man, with a second LoRA"
    assert stack.sim.counters["rejected_422"] == 1  # learnt once
    wait_for(lambda: stack.redis.get(f"{stack.prefix}:route:{FLUX_TUNE}") == b"flux", 5,
             "the route remembered")


def test_a_prompt_waits_for_its_tune_to_train_and_one_on_an_expired_tune_fails_typed(
    make_stack: Callable[..., Stack],
) -> None:
    """Tune 2006 trains for 6 s after the start; the deadline is 2 s from the prompt's creation.
    Counted from creation the job would time out; counted from the training's end it succeeds.
    A prompt on an expired tune never gets images: TuneExpired at its deadline."""
    training, expired = 2006, 2007
    stack = make_stack(sim_config=SimConfig(generation_seconds=0.5,
                                            training_tunes={training: 6.0},
                                            expired_tunes={expired}),
                       astria_job_deadline_seconds=2, astria_tune_recheck_seconds=1)
    stack.start_worker()
    waits = stack.send({"tune_id": training, "text": "after the training"})
    dies = stack.send({"tune_id": expired, "text": "on an expired tune"})
    assert stack.outcome(waits, timeout=60)["images"]
    error = stack.outcome(dies, timeout=60)
    assert type(error).__name__ == "TuneExpired" and f"tune {expired} expired" in str(error)
    assert stack.sim.counters["get_tune"] <= 12  # at the tune's pace (1 s), not every poll
