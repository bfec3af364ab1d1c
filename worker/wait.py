"""Wait: a job whose prompt exists waits for its images without holding anything.

Between steps a waiting job is a score in a due set. `poll` looks once (`worker.polling` says
when next); `apply_callback` finishes it from Astria's callback body, kept by the receiver
(`worker.receiver`), without a request; `delete` removes the prompt of a job cancelled with
`--delete-prompt`.
"""

from __future__ import annotations

import logging
import time

from worker import outcomes
from worker.client import TransientError
from worker.errors import AstriaRejected, PromptTimeout
from worker.polling import next_poll_delay
from worker.records import Job
from worker.retry import astria_policy, next_attempt_in
from worker.runtime import Runtime
from worker.store.jobs import Lease

log = logging.getLogger("astria.wait")


def poll(rt: Runtime, lease: Lease, job: Job) -> None:
    assert job.prompt_id is not None
    retry_after = 0.0
    try:
        prompt = rt.astria.get_prompt(job.tune_id, job.prompt_id)
    except AstriaRejected as exc:
        outcomes.finish(rt, lease, job, outcomes.failure(exc))
        return
    except TransientError as exc:  # look again at the next poll
        prompt, retry_after = None, exc.retry_after or 0.0
    if prompt and outcomes.finish_if_done(rt, lease, job, prompt):
        return
    keep_waiting(rt, lease, job, retry_after)


def keep_waiting(rt: Runtime, lease: Lease, job: Job, retry_after: float = 0.0) -> None:
    """Poll again later, or end with PromptTimeout once the deadline passed."""
    now = time.time()
    if now >= job.deadline:
        outcomes.finish(rt, lease, job, outcomes.failure(PromptTimeout(
            f"prompt {job.prompt_id} had no images after "
            f"{rt.settings.astria_job_deadline_seconds:g}s (ASTRIA_JOB_DEADLINE_SECONDS)")))
        return
    polls = job.polls + 1
    delay = max(next_poll_delay(rt.settings, polls), retry_after)
    rt.jobs.schedule(lease, job, at=min(now + delay, job.deadline), polls=polls,
                     callback_prompt="")


def apply_callback(rt: Runtime, lease: Lease, job: Job) -> None:
    """Finish the job from the callback body Astria sent, if it says the prompt is done."""
    assert job.callback_prompt is not None
    if not outcomes.finish_if_done(rt, lease, job, job.callback_prompt):
        keep_waiting(rt, lease, job)


def delete(rt: Runtime, lease: Lease, job: Job) -> None:
    """DELETE the prompt of a job cancelled with delete_prompt; retried per the retry policy."""
    assert job.prompt_id is not None
    try:
        rt.astria.delete_prompt(job.tune_id, job.prompt_id)
    except AstriaRejected as exc:
        log.warning("job %s: Astria refused to delete prompt %s: %s", job.id, job.prompt_id,
                    exc, extra={"job_id": job.id, "prompt_id": job.prompt_id})
        rt.jobs.release(lease, job, retire=True, delete_error=str(exc))
        return
    except TransientError as exc:
        now = time.time()
        delay = next_attempt_in(astria_policy(rt.settings), attempt=job.retry_attempt + 1,
                                started_at=job.retry_since or now, error=exc)
        if delay is None:
            rt.jobs.release(lease, job, retire=True, delete_error=str(exc))
        else:
            rt.jobs.schedule(lease, job, at=now + delay, retry_attempt=job.retry_attempt + 1,
                             retry_since=job.retry_since or now)
        return
    log.info("job %s: prompt %s deleted at Astria", job.id, job.prompt_id,
             extra={"job_id": job.id, "prompt_id": job.prompt_id})
    rt.jobs.release(lease, job, retire=True, prompt_deleted=1)
