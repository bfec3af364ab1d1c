"""Result: how a job ends. Its outcome is built here and decided once by `JobStore.finish`, which
also delivers it to the result backend (`worker.results`) and queues its webhooks."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from worker import errors
from worker.client import Prompt
from worker.errors import AstriaQueueError, PromptFailed
from worker.records import Failed, Job, Outcome, Revoked, Succeeded
from worker.runtime import Runtime
from worker.store.types import Ending, Lease

log = logging.getLogger("astria.outcomes")


def success(job: Job, prompt: Prompt) -> Succeeded:
    result: dict[str, Any] = {
        "job_id": job.id,
        "prompt_id": prompt["id"],
        "tune_id": job.tune_id,
        "requested_tune_id": job.requested_tune_id,
        "rerouted": job.rerouted,
        "text": job.sent_text or prompt.get("text"),
        "images": list(prompt["images"]),
        "seed": prompt.get("seed", job.seed),
        "num_images": prompt.get("num_images"),
    }
    if isinstance(prompt.get("cost_mc"), int):
        result["cost_mc"] = prompt["cost_mc"]
    return Succeeded(result)


def failure(exc: AstriaQueueError) -> Failed:
    """A failed outcome, named after the nearest public class of `worker.errors`."""
    public = next(c for c in type(exc).__mro__ if getattr(errors, c.__name__, None) is c)
    return Failed(public.__name__, str(exc))


def finish(rt: Runtime, lease: Lease, job: Job, outcome: Outcome, *,
           seconds: float | None = None, cost_mc: int | None = None, **fields: Any) -> None:
    """Decide the job's outcome (an earlier decision, such as a cancel, wins) and log it."""
    decided = rt.jobs.finish(lease, job, outcome, seconds=seconds, cost_mc=cost_mc, **fields)
    result = decided.outcome.result if isinstance(decided.outcome, Succeeded) else {}
    log.info("job %s: %s", job.id, decided.outcome.state,
             extra={"job_id": job.id, "outcome": decided.outcome.state,
                    "prompt_id": result.get("prompt_id"), "tune_id": result.get("tune_id")})


def ending(lease: Lease, job: Job, prompt: Prompt) -> Ending | None:
    """The job's ending if its prompt has images (success) or a `user_error` (failure)."""
    cost = prompt.get("cost_mc") if isinstance(prompt.get("cost_mc"), int) else None
    if prompt.get("images"):
        return Ending(lease, job, success(job, prompt), generation_seconds(job, prompt), cost,
                      {"callback_prompt": ""})
    if prompt.get("user_error"):
        return Ending(lease, job, failure(PromptFailed(f"Astria user_error: "
                                                       f"{prompt['user_error']}")),
                      None, cost, {"callback_prompt": ""})
    return None


def finish_if_done(rt: Runtime, lease: Lease, job: Job, prompt: Prompt) -> bool:
    """Finish the job if its prompt has images (success) or a `user_error` (failure)."""
    end = ending(lease, job, prompt)
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


def _timestamp(prompt: Prompt, name: str) -> float | None:
    try:
        return datetime.fromisoformat(str(prompt.get(name))).timestamp()
    except ValueError:
        return None


def created_at(prompt: Prompt) -> float:
    created = _timestamp(prompt, "created_at")
    return float("inf") if created is None else created


def generation_seconds(job: Job, prompt: Prompt) -> float:
    """Astria's own created -> trained time when it reports both, else what we observed."""
    created, trained = _timestamp(prompt, "created_at"), _timestamp(prompt, "trained_at")
    if created is not None and trained is not None:
        return trained - created
    return time.time() - (job.submitted_at or time.time())
