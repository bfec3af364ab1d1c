"""Result: how a job ends. Its outcome is built here and decided once by `JobStore.finish`, which
also delivers it to the result backend (`worker.store.results`) and queues its webhooks."""

from __future__ import annotations

import logging
import time
from typing import Any

from worker import errors
from worker.astria.prompt import Prompt
from worker.errors import AstriaQueueError, PromptFailed
from worker.records import Failed, Job, Revoked, Succeeded
from worker.runtime import Runtime
from worker.store.types import Ending, Lease

log = logging.getLogger("astria.outcomes")


#: A failed outcome's message is cut here: it is stored, published and logged.
MAX_MESSAGE_CHARS = 2000


def success(job: Job, prompts: list[Prompt]) -> Succeeded:
    """The outcome of a job whose prompts are done: the images of all of them, in prompt order
    (a POST usually creates one; `prompt_ids` lists them when it created several)."""
    first = prompts[0]
    result: dict[str, Any] = {
        "job_id": job.id,
        "prompt_id": first.id,
        "tune_id": job.tune_id,
        "requested_tune_id": job.requested_tune_id,
        "rerouted": job.rerouted,
        "text": job.sent_text or first.text,
        "images": [image for p in prompts for image in p.images],
        "seed": job.seed if first.seed is None else first.seed,
        "num_images": (first.num_images if len(prompts) == 1
                       else sum(len(p.images) for p in prompts)),
    }
    if len(prompts) > 1:
        result["prompt_ids"] = [p.id for p in prompts]
    if (cost := _cost(prompts)) is not None:
        result["cost_mc"] = cost
    return Succeeded(result)


def _cost(prompts: list[Prompt]) -> int | None:
    known = [p.cost_mc for p in prompts if p.cost_mc is not None]
    return sum(known) if known else None


def failure(exc: AstriaQueueError) -> Failed:
    """A failed outcome, named after the nearest public class of `worker.errors`."""
    public = next(c for c in type(exc).__mro__ if getattr(errors, c.__name__, None) is c)
    return Failed(public.__name__, str(exc)[:MAX_MESSAGE_CHARS])


def finish(rt: Runtime, *endings: Ending) -> None:
    """Decide the jobs' outcomes in one round trip (an earlier decision, such as a cancel,
    wins) and log them; a job whose lease was lost is left to the worker that has it now."""
    for end, decided in zip(endings, rt.jobs.finish(list(endings)), strict=True):
        job = end.job
        if decided is None:
            log.info("job %s: lease lost, another worker carries on", job.id)
            continue
        result = decided.outcome.result if isinstance(decided.outcome, Succeeded) else {}
        log.info("job %s: %s", job.id, decided.outcome.state,
                 extra=job.log_fields(outcome=decided.outcome.state,
                                      prompt_id=result.get("prompt_id", job.prompt_id),
                                      tune_id=result.get("tune_id", job.tune_id or None),
                                      attempt=job.post_attempts))


def ending(lease: Lease, job: Job, prompts: list[Prompt], limit: float) -> Ending | None:
    """The ending of a job whose prompts are all done: a success when any has images, else the
    failure Astria gave (`user_error`); None while one is not done. `limit` bounds the
    generation time it teaches (ASTRIA_JOB_DEADLINE_SECONDS)."""
    if not prompts or not all(p.done for p in prompts):
        return None
    if any(p.images for p in prompts):
        return Ending(lease, job, success(job, prompts),
                      generation_seconds(job, prompts[0], limit), _cost(prompts))
    error = next(p.user_error for p in prompts if p.user_error)
    return Ending(lease, job, failure(PromptFailed(f"Astria user_error: {error}")), None,
                  _cost(prompts))


def expire(rt: Runtime, lease: Lease, job: Job) -> None:
    """The job was not sent to Astria before its expires_in (or its message's expiry)."""
    finish(rt, Ending(lease, job, Revoked("expired")))


def created_at(prompt: Prompt) -> float:
    return float("inf") if prompt.created_at is None else prompt.created_at.timestamp()


def generation_seconds(job: Job, prompt: Prompt, limit: float) -> float:
    """Astria's own created -> trained time when it reports both, else what we observed; within
    [0, limit], so that no answer moves the learnt generation time (and every later first
    poll) out of range."""
    if prompt.created_at is not None and prompt.trained_at is not None:
        seconds = (prompt.trained_at - prompt.created_at).total_seconds()
    else:
        seconds = time.time() - (job.submitted_at or time.time())
    return min(max(0.0, seconds), limit)
