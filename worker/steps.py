"""One granted unit of work on one job: the step its state calls for.

The dispatcher grants a job for a kind of request (`RequestKind`); what the job needs is read from
its record, so a worker that took over a job from a dead one does the right thing: a job with an
unanswered POST looks for its prompt, never POSTs blindly.
"""

from __future__ import annotations

import logging
import time

from worker import outcomes, submit, wait
from worker.records import Job, JobState, RequestKind
from worker.runtime import Runtime
from worker.store.types import Lease

log = logging.getLogger("astria.steps")


def run(rt: Runtime, kind: RequestKind, lease: Lease, job: Job) -> None:
    if job.status is JobState.REVOKED:
        settle_revoked(rt, lease, job)
    elif job.status is JobState.QUEUED:
        step_queued(rt, kind, lease, job)
    elif job.status is JobState.WAITING:
        wait.poll(rt, [(lease, job)])
    else:  # an outcome is known (a step came late), or the record is gone
        rt.jobs.release(lease, job, retire=True)


def step_queued(rt: Runtime, kind: RequestKind, lease: Lease, job: Job) -> None:
    expired = job.post_by and time.time() >= job.post_by
    if job.pending_post:
        submit.reconcile(rt, lease, job)
    elif kind is RequestKind.EXPIRE or expired:
        outcomes.expire(rt, lease, job)
    elif kind is RequestKind.SUBMIT:
        submit.post(rt, lease, job)
    else:  # taken over from a worker that died before its POST: back to the queue
        rt.jobs.requeue(lease, job, at=time.time())


def settle_revoked(rt: Runtime, lease: Lease, job: Job) -> None:
    """A cancelled job: its unanswered POST is still looked for (to record the prompt), the
    DELETE it asked for is made; then it retires."""
    if job.pending_post:
        submit.reconcile(rt, lease, job)
    elif job.delete_prompt and job.prompt_id and not job.prompt_deleted:
        wait.delete(rt, lease, job)
    else:
        rt.jobs.release(lease, job, retire=True)
