"""A job's life in-process, fast: submit, wait and outcomes with the real store on a real Redis,
Astria answered through the client's transport seam (`scripted_astria.ScriptedAstria`). Each
test is one job driven grant by grant, as the engine drives it, with a virtual clock for due
times; what it asserts is what a producer pays for and gets."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from tests.unit.scripted_astria import Answer, Call, ScriptedAstria, refused
from worker.flow import steps
from worker.records import Failed, Job, JobState, Succeeded
from worker.runtime import Runtime
from worker.settings import Settings
from worker.spec import parse_spec

TUNE = 7


def prompt(prompt_id: int, *, text: str = "a cat", seed: int = 1, images: int = 0,
           tune_id: int = TUNE, **more: Any) -> dict[str, Any]:
    """Astria's prompt object."""
    return {"id": prompt_id, "tune_id": tune_id, "text": text, "seed": seed,
            "images": [f"https://cdn.astria.test/{prompt_id}/{i}.jpg" for i in range(images)],
            "created_at": datetime.now(UTC).isoformat(), **more}


class Flow:
    """One runtime on a key prefix of its own, its Astria scripted, its jobs driven by hand."""

    def __init__(self, rt: Runtime, astria: ScriptedAstria) -> None:
        self.rt, self.astria, self.clock = rt, astria, time.time()

    def enqueue(self, **spec: Any) -> str:
        job_id = f"{self.rt.keys.prefix}.{uuid.uuid4().hex[:8]}"
        self.rt.registrations.register(job_id, parse_spec({"tune_id": TUNE, "text": "a cat",
                                                           **spec}))
        return job_id

    def job(self, job_id: str) -> Job:
        return self.rt.jobs.load(job_id)

    def run_due(self, later: float = 0.0) -> list[str]:
        """Grant what is due `later` seconds on (virtual time) and run the work the decision
        table makes of it, as the engine does (here one task after the other)."""
        self.clock += later
        grant = self.rt.dispatcher.grant(16, now=self.clock)
        work, _, _ = steps.plan(self.rt, grant)
        for task in work:
            task.call()
        return [unit.kind for unit in grant.units]


@pytest.fixture
def flow(redis_server: tuple[str, bool]) -> Iterator[Callable[..., Flow]]:
    client = redis.Redis.from_url(redis_server[0])
    prefixes: list[str] = []

    def make(answer: Callable[[Call], Answer], **settings: Any) -> Flow:
        prefix = "flow-" + uuid.uuid4().hex[:10]
        prefixes.append(prefix)
        s = Settings(astria_api_key="k", key_prefix=prefix,  # type: ignore[arg-type]
                     redis_url=redis_server[0], **settings)
        astria = ScriptedAstria(answer)
        return Flow(Runtime(s, astria_transport=astria), astria)

    yield make
    for prefix in prefixes:
        for key in client.scan_iter(f"{prefix}:*", count=1000):
            client.delete(key)


def test_an_unanswered_post_is_found_on_the_listings_second_page_and_never_sent_again(
        flow: Callable[..., Flow]) -> None:
    """The POST times out at Astria's gateway (504, maybe created); the listing's first page is
    other jobs' prompts, the second holds ours (same text and seed): adopted, one POST paid."""
    seeds: dict[str, int] = {}

    def astria(call: Call) -> Answer:
        if call.method == "POST":
            return 504, {"error": "Gateway Timeout"}
        if "before_id" not in call.query:
            return 200, [prompt(1000 - i, text="someone else's") for i in range(120)]
        return 200, [prompt(500, seed=seeds["seed"])]

    f = flow(astria)
    job_id = f.enqueue()
    seeds["seed"] = f.job(job_id).seed
    assert f.run_due() == ["submit"]
    assert f.job(job_id).pending_post and f.job(job_id).gave_up_at
    f.run_due(later=2)  # the first page: not there, the next page is due at once
    f.run_due()
    job = f.job(job_id)
    assert job.status is JobState.WAITING and job.prompt_id == 500
    assert len(f.astria.posts()) == 1
    assert [c.query.get("before_id") for c in f.astria.calls[1:]] == [None, "881"]


def test_an_sdxl_lora_tune_is_posted_to_the_sdxl_base_tune_with_the_lora_in_the_text(
        flow: Callable[..., Flow]) -> None:
    """Astria's documented 422 for an SDXL LoRA ("pti") tune: learnt, and the job re-sent."""
    def astria(call: Call) -> Answer:
        if call.path == f"/tunes/{TUNE}/prompts":
            return 422, {"error": "model_type=pti is not supported. Use a checkpoint instead"}
        return 200, prompt(11, tune_id=666678, text=call.form["prompt[text]"])

    f = flow(astria)
    job_id = f.enqueue(lora_strength=0.7)
    f.run_due()  # 422: the route is learnt, the job rejoins its queue at once
    f.run_due()
    first, second = f.astria.posts()
    assert first.path == f"/tunes/{TUNE}/prompts"
    assert second.path == "/tunes/666678/prompts"
    assert second.form["prompt[text]"] == f"<lora:{TUNE}:0.7> a cat"
    job = f.job(job_id)
    assert job.status is JobState.WAITING and job.rerouted and job.tune_id == 666678


def test_a_post_that_created_several_prompts_waits_for_all_and_gathers_their_images(
        flow: Callable[..., Flow]) -> None:
    def astria(call: Call) -> Answer:
        if call.method == "POST":
            return 200, [prompt(21), prompt(22)]
        return 200, [prompt(22, images=2), prompt(21, images=1)]

    f = flow(astria)
    job_id = f.enqueue()
    f.run_due()
    assert f.job(job_id).prompt_ids == (21, 22)
    f.run_due(later=600)  # past the first poll: one listing answers both
    outcome = f.job(job_id).outcome
    assert isinstance(outcome, Succeeded)
    assert outcome.result["prompt_ids"] == [21, 22] and len(outcome.result["images"]) == 3
    assert len(f.astria.posts()) == 1


def test_a_refused_connection_is_sent_again_at_once_without_a_listing(
        flow: Callable[..., Flow]) -> None:
    """Nothing left this host, so nothing can have been created or billed."""
    answers = iter([refused(), None])

    def astria(call: Call) -> Answer:
        if (error := next(answers)) is not None:
            raise error
        return 200, prompt(31)

    f = flow(astria)
    job_id = f.enqueue()
    f.run_due()
    assert f.job(job_id).pending_post == 0
    f.run_due()
    assert [c.method for c in f.astria.calls] == ["POST", "POST"]
    assert f.job(job_id).prompt_id == 31


def test_astria_user_error_fails_the_job_with_astrias_words(flow: Callable[..., Flow]) -> None:
    def astria(call: Call) -> Answer:
        if call.method == "POST":
            return 200, prompt(41)
        return 200, prompt(41, user_error="the image was flagged as NSFW")

    f = flow(astria)
    job_id = f.enqueue()
    f.run_due()
    f.run_due(later=600)
    outcome = f.job(job_id).outcome
    assert isinstance(outcome, Failed) and outcome.error == "PromptFailed"
    assert "flagged as NSFW" in outcome.message


def test_a_garbled_post_answer_is_looked_for_in_the_listing_never_paid_twice(
        flow: Callable[..., Flow]) -> None:
    """A 200 whose body is not a prompt (a proxy's page, a broken id, megabytes of junk): the
    prompt may exist, so it is looked for before anything is sent again."""
    seeds: dict[str, int] = {}

    def astria(call: Call) -> Answer:
        if call.method == "POST":
            return 200, {"id": "not-a-number", "images": ["javascript:alert(1)"] * 1000}
        return 200, [prompt(61, seed=seeds["seed"])]

    f = flow(astria)
    job_id = f.enqueue()
    seeds["seed"] = f.job(job_id).seed
    f.run_due()
    assert f.job(job_id).pending_post and f.job(job_id).status is JobState.QUEUED
    f.run_due(later=2)
    assert f.job(job_id).prompt_id == 61 and len(f.astria.posts()) == 1


def test_waiting_jobs_of_one_tune_are_answered_by_one_listing(
        flow: Callable[..., Flow]) -> None:
    """Polls are paid for: the prompts of several waiting jobs of one tune cost one request."""
    created = iter(range(71, 74))

    def astria(call: Call) -> Answer:
        if call.method == "POST":
            return 200, prompt(next(created))
        return 200, [prompt(pid, images=1) for pid in (73, 72, 71)]

    f = flow(astria, astria_rate_limit_per_second=100, astria_rate_limit_burst=100)
    jobs = [f.enqueue() for _ in range(3)]
    f.run_due()
    assert sorted(f.job(j).prompt_id for j in jobs) == [71, 72, 73]
    f.run_due(later=600)
    gets = [c for c in f.astria.calls if c.method == "GET"]
    assert len(gets) == 1 and gets[0].path.endswith(f"/tunes/{TUNE}/prompts")
    assert all(isinstance(f.job(j).outcome, Succeeded) for j in jobs)


def test_a_prompt_still_without_images_at_its_deadline_fails_the_job_and_is_not_polled_again(
        flow: Callable[..., Flow]) -> None:
    def astria(call: Call) -> Answer:
        if call.path == f"/tunes/{TUNE}":  # trained long ago: the deadline stands
            return 200, {"id": TUNE, "trained_at": "2026-01-01T00:00:00Z"}
        return 200, prompt(81)  # created, and never done

    f = flow(astria, astria_job_deadline_seconds=0.2)
    job_id = f.enqueue()
    f.run_due()
    deadline = f.job(job_id).deadline
    assert f.job(job_id).status is JobState.WAITING and deadline > 0
    time.sleep(max(0.0, deadline - time.time()) + 0.01)  # the deadline is the host's clock
    f.run_due(later=600)
    outcome = f.job(job_id).outcome
    assert isinstance(outcome, Failed) and outcome.error == "PromptTimeout"
    calls = len(f.astria.calls)
    assert f.run_due(later=3600) == [] and len(f.astria.calls) == calls


def test_at_its_deadline_a_prompt_waits_for_its_tune_in_training_and_fails_on_an_expired_one(
        flow: Callable[..., Flow]) -> None:
    tune: dict[str, Any] = {"id": TUNE, "trained_at": None}

    def astria(call: Call) -> Answer:
        return 200, tune if call.path == f"/tunes/{TUNE}" else prompt(81)

    f = flow(astria, astria_job_deadline_seconds=0.2, astria_tune_recheck_seconds=0.3)
    job_id = f.enqueue()
    f.run_due()
    first = f.job(job_id).deadline
    time.sleep(max(0.0, first - time.time()) + 0.01)
    f.run_due(later=600)
    job = f.job(job_id)  # still training: looked at again at the tune's pace, not failed
    assert job.status is JobState.WAITING and job.deadline > first
    tune["expires_at"] = "2026-01-01T00:00:00Z"
    time.sleep(max(0.0, job.deadline - time.time()) + 0.01)
    f.rt.redis.delete(f.rt.keys.tune(TUNE))  # what was read of the tune is stale by now
    f.run_due(later=600)
    outcome = f.job(job_id).outcome
    assert isinstance(outcome, Failed) and outcome.error == "TuneExpired"
