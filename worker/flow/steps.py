"""The decision table: for the units of one grant, the step each job's record calls for, and
which steps run together. The engine (`worker.flow.engine`) runs the `Work` this returns on its
threads and knows nothing of job states.

The dispatcher grants a job for a kind of request (`RequestKind`); what the job needs is read
from its record, so a worker that took over a job from a dead one does the right thing: a job
with an unanswered POST looks for its prompt, never POSTs blindly.

    job's record                             unit            step                  runs
    QUEUED, a POST unanswered                any             submit.reconcile      alone
    QUEUED, past its post_by                 any             outcomes.expire       alone
    QUEUED                                   expire          outcomes.expire       alone
    QUEUED                                   submit          submit.send           recorded with
                                                                                   the grant's other
                                                                                   POSTs, each sent
                                                                                   on its own thread
    QUEUED                                   poll, local     back to its queue     alone
                                                             (taken over before
                                                             its POST)
    WAITING, a prompt known                  poll            wait.poll             one listing per
                                                                                   tune
    WAITING                                  other           wait.poll             alone
    REVOKED, a POST unanswered               any             submit.reconcile      alone
    REVOKED, its DELETE asked and not made   any             wait.delete           alone
    REVOKED, otherwise; decided; gone        any             retire                alone
    a webhook                                                webhooks.deliver      webhook threads
    a job's copies (STORAGE_URL)                             copies.copy           copy threads
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

from worker.errors import InternalError, InvalidSpec
from worker.flow import copies, outcomes, submit, wait, webhooks
from worker.records import Job, JobState, RequestKind
from worker.runtime import Runtime
from worker.store.dispatch import Grant
from worker.store.types import Ending, Lease, Noted

#: Unexpected failures of one job's steps after which the job ends with an InternalError.
STEP_FAILURE_LIMIT = 5

Step = Callable[[Runtime, Lease, Job], None]


@dataclass(frozen=True)
class Work:
    """One task for a pool: what it is (for the log), the call, and the jobs it holds (their
    leases are renewed while it runs; an unexpected failure counts against each)."""

    what: str
    call: Callable[[], object]
    holds: tuple[tuple[Lease, Job], ...] = ()


def _requeue(rt: Runtime, lease: Lease, job: Job) -> None:
    rt.jobs.requeue(lease, job, at=time.time())


def _retire(rt: Runtime, lease: Lease, job: Job) -> None:
    rt.jobs.retire(lease, job)


def _poll_one(rt: Runtime, lease: Lease, job: Job) -> None:
    wait.poll(rt, [(lease, job)])


def _step(kind: RequestKind, job: Job) -> Step | None:
    """The table above, for one job; None for a POST (they are recorded together)."""
    if job.status is JobState.QUEUED:
        if job.pending_post:
            return submit.reconcile
        if kind is RequestKind.EXPIRE or (job.post_by and time.time() >= job.post_by):
            return outcomes.expire
        return None if kind is RequestKind.SUBMIT else _requeue
    if job.status is JobState.WAITING:
        return _poll_one
    if job.status is JobState.REVOKED:
        if job.pending_post:
            return submit.reconcile
        if job.delete_prompt and job.prompt_id and not job.prompt_deleted:
            return wait.delete
    return _retire


#: The span a step's work is traced as (`worker.net.tracing`): those that make a request.
SPANS: dict[Step, str] = {submit.reconcile: "astria_queue.reconcile",
                          _poll_one: "astria_queue.poll", wait.delete: "astria_queue.delete"}


def _in_spans(rt: Runtime, name: str, jobs: list[tuple[str, str]],
              call: Callable[[], object]) -> object:
    with rt.tracing.spans(name, jobs):
        return call()


def _traced(rt: Runtime, name: str | None, work: Work) -> Work:
    """With tracing on, the work runs in one span `name` for each job it holds, a child of
    that job's trace."""
    if not (name and rt.tracing.on):
        return work
    jobs = [(job.id, job.traceparent) for _, job in work.holds]
    return replace(work, call=partial(_in_spans, rt, name, jobs, work.call))


def plan(rt: Runtime, grant: Grant) -> tuple[list[Work], list[Work], list[Work]]:
    """The grant's work: for the Astria threads, the webhook threads and the copy threads. Its
    jobs are loaded in one round trip and its POSTs recorded in another
    (`submit.record_posts`)."""
    loaded = rt.jobs.load_many([u.id for u in grant.units]) if grant.units else {}
    work: list[Work] = []
    polls: dict[int, list[tuple[Lease, Job]]] = {}
    posts: list[tuple[Lease, Job]] = []
    for unit in grant.units:
        if (job := loaded.get(unit.id)) is None:
            continue  # unreadable: due again when its lease ends
        lease, step = Lease(unit.id, grant.owner), _step(unit.kind, job)
        if step is None:
            posts.append((lease, job))
        elif step is _poll_one and unit.kind is RequestKind.POLL and job.prompt_id:
            polls.setdefault(job.tune_id, []).append((lease, job))
        else:
            work.append(_traced(rt, SPANS.get(step), Work(
                f"job {job.id}", partial(step, rt, lease, job), ((lease, job),))))
    work += [_traced(rt, "astria_queue.poll", Work(
        f"polls of {len(group)} jobs", partial(wait.poll, rt, group), tuple(group)))
        for group in polls.values()]
    planned = []
    for lease, job in posts:
        try:
            planned.append((lease, submit.plan(rt, job)))
        except InvalidSpec as exc:
            work.append(Work(f"job {job.id}", partial(submit.refuse, rt, lease, job, exc),
                             ((lease, job),)))
    work += [_traced(rt, "astria_queue.post", Work(
        f"job {lease.job_id}", partial(submit.send, rt, lease, ready), ((lease, ready.job),)))
        for lease, ready in submit.record_posts(rt, planned)]
    hooks = [Work(f"webhook {message_id}", partial(webhooks.deliver, rt, message_id))
             for message_id in grant.webhooks]
    copying = [Work(f"copies of job {job_id}", partial(copies.copy, rt, job_id))
               for job_id in grant.copies]
    return work, hooks, copying


def step_failed(rt: Runtime, lease: Lease, job: Job, exc: Exception) -> None:
    """A step failed unexpectedly: the job is due again when its lease ends, or, the
    STEP_FAILURE_LIMIT-th time in a row, ends with an InternalError rather than taking a thread
    at every lease for ever."""
    failures = job.step_failures + 1
    if failures < STEP_FAILURE_LIMIT:
        rt.jobs.step_failed(lease, job)
        return
    outcomes.finish(rt, Ending(lease, job, outcomes.failure(InternalError(
        f"the worker failed on this job {failures} times (last: {type(exc).__name__}); "
        "see the worker log")), noted=Noted.STEP_FAILED))
