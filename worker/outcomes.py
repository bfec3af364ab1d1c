"""Result: how a job ends. Its outcome is built here and decided once by `JobStore.finish`, which
also delivers it to the result backend (`worker.results`) and queues its webhooks."""

from __future__ import annotations

import logging
import time
from typing import Any

from worker import errors
from worker.errors import AstriaQueueError, PromptFailed
from worker.prompt import Prompt
from worker.records import Failed, Job, Outcome, Revoked, Succeeded
from worker.runtime import Runtime
from worker.store.types import Ending, Lease

log = logging.getLogger("astria.outcomes")


#: A failed outcome's message is cut here: it is stored, published and logged.
MAX_MESSAGE_CHARS = 2000


def success(job: Job, prompt: Prompt) -> Succeeded:
    result: dict[str, Any] = {
        "job_id": job.id,
        "prompt_id": prompt.id,
        "tune_id": job.tune_id,
        "requested_tune_id": job.requested_tune_id,
        "rerouted": job.rerouted,
        "text": job.sent_text or prompt.text,
        "images": list(prompt.images),
        "seed": job.seed if prompt.seed is None else prompt.seed,
        "num_images": prompt.num_images,
    }
    if prompt.cost_mc is not None:
        result["cost_mc"] = prompt.cost_mc
    return Succeeded(result)


def failure(exc: AstriaQueueError) -> Failed:
    """A failed outcome, named after the nearest public class of `worker.errors`."""
    public = next(c for c in type(exc).__mro__ if getattr(errors, c.__name__, None) is c)
    return Failed(public.__name__, str(exc)[:MAX_MESSAGE_CHARS])


def finish(rt: Runtime, lease: Lease, job: Job, outcome: Outcome, *,
           seconds: float | None = None, cost_mc: int | None = None, **fields: Any) -> None:
    """Decide the job's outcome (an earlier decision, such as a cancel, wins) and log it."""
    decided = rt.jobs.finish(lease, job, outcome, seconds=seconds, cost_mc=cost_mc, **fields)
    result = decided.outcome.result if isinstance(decided.outcome, Succeeded) else {}
    log.info("job %s: %s", job.id, decided.outcome.state,
             extra={"job_id": job.id, "outcome": decided.outcome.state,
                    "prompt_id": result.get("prompt_id"), "tune_id": result.get("tune_id")})


def ending(lease: Lease, job: Job, prompt: Prompt, limit: float) -> Ending | None:
    """The job's ending if its prompt has images (success) or a `user_error` (failure);
    `limit` bounds the generation time it teaches (ASTRIA_JOB_DEADLINE_SECONDS)."""
    if prompt.images:
        return Ending(lease, job, success(job, prompt), generation_seconds(job, prompt, limit),
                      prompt.cost_mc)
    if prompt.user_error:
        return Ending(lease, job, failure(PromptFailed(f"Astria user_error: {prompt.user_error}")),
                      None, prompt.cost_mc)
    return None


def finish_if_done(rt: Runtime, lease: Lease, job: Job, prompt: Prompt) -> bool:
    """Finish the job if its prompt has images (success) or a `user_error` (failure)."""
    end = ending(lease, job, prompt, rt.settings.astria_job_deadline_seconds)
    if end is None:
        return False
    finish(rt, lease, job, end.outcome, seconds=end.seconds, cost_mc=end.cost_mc, **end.fields)
    return True


def finish_many(rt: Runtime, endings: list[Ending]) -> None:
    """Decide several jobs' outcomes in one round trip (a batch of polls), and log them."""
    for end, decided in zip(endings, rt.jobs.finish_many(endings), strict=True):
        if decided is not None:
            log.info("job %s: %s", end.job.id, decided.outcome.state,
                     extra={"job_id": end.job.id, "outcome": decided.outcome.state})


def expire(rt: Runtime, lease: Lease, job: Job) -> None:
    """The job was not sent to Astria before its expires_in (or its message's expiry)."""
    finish(rt, lease, job, Revoked("expired"))


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
