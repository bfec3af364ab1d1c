"""Wait: a job whose prompt exists waits for its images without holding anything.

Between steps a waiting job is a score in a due set. `poll` looks once (`worker.polling` says
when next); `poll_many` looks at several prompts of one tune with one request, Astria's listing
(newest first, 120 a page), and settles them all in one round trip to Redis; `delete` removes the
prompt of a job cancelled with `--delete-prompt`. Astria's callback (`worker.receiver`) only makes
a job due for its poll at once: the outcome always comes from Astria's own answer.
"""

from __future__ import annotations

import logging
import time

from worker import outcomes
from worker.client import TransientError
from worker.errors import AstriaRejected, PromptTimeout
from worker.polling import next_poll_delay
from worker.prompt import Prompt
from worker.records import Job, RequestKind
from worker.retry import astria_policy, next_attempt_in
from worker.runtime import Runtime
from worker.store.types import Ending, Later, Lease

log = logging.getLogger("astria.wait")
PAGE = 120
#: Pages of the listing one `poll_many` reads at most; older prompts are polled one by one.
MAX_PAGES = 3


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
    later = _later(rt, lease, job, retry_after)
    if isinstance(later, Later):
        rt.jobs.schedule(lease, job, at=later.at, **later.fields)
    else:
        outcomes.finish(rt, lease, job, later.outcome)


def _later(rt: Runtime, lease: Lease, job: Job, retry_after: float) -> Later | Ending:
    """The next poll of a prompt that is not done, or its PromptTimeout."""
    now = time.time()
    if now >= job.deadline:
        return Ending(lease, job, outcomes.failure(PromptTimeout(
            f"prompt {job.prompt_id} had no images after "
            f"{rt.settings.astria_job_deadline_seconds:g}s (ASTRIA_JOB_DEADLINE_SECONDS)")))
    polls = job.polls + 1
    delay = max(next_poll_delay(rt.settings, polls), retry_after)
    return Later(lease, job, min(now + delay, job.deadline), {"polls": polls})


def poll_many(rt: Runtime, items: list[tuple[Lease, Job]]) -> None:
    """Look at several waiting prompts of one tune with Astria's listing; the prompts it does
    not show are polled one by one. Outcomes and next polls go to Redis in one round trip."""
    wanted = {job.prompt_id or 0: (lease, job) for lease, job in items}
    try:
        found, pages = _listed(rt, items[0][1].tune_id, set(wanted))
        # one token was granted per item; the listing's pages and the polls of what it did not
        # show are the requests made, so the rest go back to the limiter
        rt.dispatcher.reports.unused(RequestKind.POLL, max(0, len(found) - pages))
    except AstriaRejected:
        found = {}
    except TransientError as exc:  # each looks again at its next poll
        for lease, job in items:
            keep_waiting(rt, lease, job, exc.retry_after or 0.0)
        return
    seen = []
    for prompt_id, (lease, job) in wanted.items():
        prompt = found.get(prompt_id)
        if prompt is None:
            poll(rt, lease, job)
        else:
            seen.append((lease, job, prompt))
    _settle(rt, seen)


def _settle(rt: Runtime, items: list[tuple[Lease, Job, Prompt]]) -> None:
    """Each job's outcome if its prompt is done, else its next poll: all in one round trip."""
    endings: list[Ending] = []
    later: list[Later] = []
    limit = rt.settings.astria_job_deadline_seconds
    for lease, job, prompt in items:
        step = outcomes.ending(lease, job, prompt, limit) or _later(rt, lease, job, 0.0)
        if isinstance(step, Later):
            later.append(step)
        else:
            endings.append(step)
    if endings:
        outcomes.finish_many(rt, endings)
    if later:
        rt.jobs.schedule_many(later)


def _listed(rt: Runtime, tune_id: int, wanted: set[int]) -> tuple[dict[int, Prompt], int]:
    """The wanted prompts in the tune's listing, and how many requests it took: the page that ends
    at the newest wanted id and spans the ids up to the oldest (a page of at most 120; more
    pages while prompts are missing, up to MAX_PAGES). Astria's prompt ids grow with time, so
    where this tune's prompts are mostly ours, the page holds little more than what is wanted."""
    found: dict[int, Prompt] = {}
    missing, before, pages = wanted, max(wanted) + 1, 0
    while pages < MAX_PAGES:
        pages += 1
        limit = min(PAGE, max(missing) - min(missing) + 1)
        page = rt.astria.list_prompts(tune_id, limit=limit, before_id=before)
        found.update((p.id, p) for p in page if p.id in wanted)
        missing = wanted - found.keys()
        if not missing or len(page) < limit:
            break
        before = min(p.id for p in page)
        if before <= min(missing):
            break
    return found, pages


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
