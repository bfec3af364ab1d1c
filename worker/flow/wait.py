"""Wait: a job whose prompt exists waits for its images without holding anything.

Between steps a waiting job is a score in a due set. `poll` looks at the prompts of one or more
waiting jobs of one tune: one GET for a single prompt, else Astria's listing (newest first, 120 a
page), which answers many at once, with a GET for each prompt it did not show. A job whose POST
created several prompts waits for all of them; those done are kept on the job between looks.
Each job's outcome, or its next look (`worker.astria.polling` says when), goes to Redis in one round
trip. `delete` removes the prompts of a job cancelled with `--delete-prompt`. Astria's callback
(`worker.edge.receiver`) only makes a job due for its poll at once: the outcome always comes from
Astria's own answer.
"""

from __future__ import annotations

import logging
import time

from worker.astria.client import TransientError
from worker.astria.polling import next_poll_delay
from worker.astria.prompt import Prompt
from worker.astria.retry import advised_wait, astria_policy, next_try
from worker.errors import AstriaRejected, PromptTimeout, TuneExpired
from worker.flow import outcomes
from worker.records import Job, RequestKind
from worker.runtime import Runtime
from worker.store.types import Ending, Lease, NextPoll

log = logging.getLogger("astria.wait")
PAGE = 120
#: Pages of the listing one look reads at most; older prompts are asked for one by one.
MAX_PAGES = 3
#: A tune whose training has ended is read again after this long (for its expiry).
TRAINED_TUNE_FRESH_SECONDS = 3600.0


def pending(job: Job) -> list[int]:
    """The job's prompts not known to be done yet."""
    done = {int(p["id"]) for p in job.prompts_done}
    return [pid for pid in job.prompt_ids if pid not in done]


def poll(rt: Runtime, items: list[tuple[Lease, Job]]) -> None:
    """Look at the pending prompts of these waiting jobs (all of one tune) and settle each: its
    outcome when all its prompts are done, else its next look."""
    wanted = {pid for _, job in items for pid in pending(job)}
    found: dict[int, Prompt] = {}
    failed: dict[str, AstriaRejected] = {}
    retry_after, answered = 0.0, True
    try:
        found = _look(rt, items[0][1].tune_id, wanted)
    except AstriaRejected as exc:  # a single prompt that is gone; or a listing refused
        if len(wanted) == 1:
            failed[items[0][1].id] = exc
    except TransientError as exc:  # each looks again at its next poll, or when Astria asked
        retry_after, answered = advised_wait(exc), False
    for _lease, job in items if answered and len(wanted) > 1 else ():
        for pid in [pid for pid in pending(job) if pid not in found]:
            try:  # not in the listing's pages: asked for on its own
                found[pid] = rt.astria.get_prompt(job.tune_id, pid)
            except AstriaRejected as exc:
                failed[job.id] = exc
            except TransientError as exc:
                retry_after = max(retry_after, advised_wait(exc))
                break
    _settle(rt, [(lease, job, found) for lease, job in items], failed, retry_after)


def _look(rt: Runtime, tune_id: int, wanted: set[int]) -> dict[int, Prompt]:
    """The wanted prompts: one GET for a single one, else the tune's listing (see `_listed`);
    what the listing did not show is left to the caller."""
    if len(wanted) == 1:
        [only] = wanted
        return {only: rt.astria.get_prompt(tune_id, only)}
    found, pages = _listed(rt, tune_id, wanted)
    # one token was granted per job; the requests made were the listing's pages, so the rest go
    # back to the limiter
    rt.dispatcher.reports.unused(RequestKind.POLL, max(0, len(found) - pages))
    return found


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


def _settle(rt: Runtime, items: list[tuple[Lease, Job, dict[int, Prompt]]],
            failed: dict[str, AstriaRejected], retry_after: float) -> None:
    """Each job's outcome if all its prompts are done (or one was refused), else its next look:
    all in one round trip."""
    endings: list[Ending] = []
    later: list[NextPoll] = []
    limit = rt.settings.astria_job_deadline_seconds
    for lease, job, found in items:
        if job.id in failed:
            endings.append(Ending(lease, job, outcomes.failure(failed[job.id])))
            continue
        done = [Prompt.model_validate(p) for p in job.prompts_done]
        done += [found[pid] for pid in pending(job) if pid in found and found[pid].done]
        step: Ending | NextPoll | None = None
        if len(done) == len(job.prompt_ids):
            step = outcomes.ending(lease, job, sorted(done, key=lambda p: p.id), limit)
        step = step or _later(rt, lease, job, retry_after, done)
        if isinstance(step, NextPoll):
            later.append(step)
        else:
            endings.append(step)
    if endings:
        outcomes.finish(rt, *endings)
    if later:
        rt.jobs.schedule_polls(later)


def _later(rt: Runtime, lease: Lease, job: Job, retry_after: float,
           done: list[Prompt]) -> NextPoll | Ending:
    """The next look at a job whose prompts are not all done, or its PromptTimeout (or
    TuneExpired)."""
    now, deadline, moved = time.time(), job.deadline, None
    more = done if len(done) > len(job.prompts_done) else None
    if now >= deadline:
        found = _training_deadline(rt, job, now)
        if isinstance(found, TuneExpired):
            return Ending(lease, job, outcomes.failure(found))
        if found is None:
            return Ending(lease, job, outcomes.failure(PromptTimeout(
                f"prompt {job.prompt_id} had no images after "
                f"{rt.settings.astria_job_deadline_seconds:g}s (ASTRIA_JOB_DEADLINE_SECONDS)")))
        deadline = moved = found[0]
        if found[1]:  # still training: looked at again at the tune's pace, not every poll
            return NextPoll(lease, job, deadline, more, deadline=deadline)
    expected = rt.learnt.expected_generation_seconds()
    delay = max(next_poll_delay(rt.settings, job.lane, expected, job.polls + 1,
                                now - job.submitted_at), retry_after)
    return NextPoll(lease, job, min(now + delay, deadline), more, deadline=moved)


def _training_deadline(rt: Runtime, job: Job, now: float
                       ) -> tuple[float, bool] | TuneExpired | None:
    """A prompt at its deadline may have waited for its tune's training (Astria starts it when
    the training ends): (its new deadline, whether the tune still trains): counted from the
    tune's `trained_at` when that is later; or, while the tune trains (or Astria does not say), a
    look again in ASTRIA_TUNE_RECHECK_SECONDS, for at most ASTRIA_TUNE_TRAINING_MAX_SECONDS after
    the POST. TuneExpired once the tune expired; None when it has simply timed out. The tune is
    read once per tune and pace, by any worker (`Learnt.tune`)."""
    s = rt.settings
    tune = rt.learnt.tune(job.requested_tune_id)
    if tune is None:
        try:
            tune = rt.astria.get_tune(job.requested_tune_id)
        except AstriaRejected:
            return None  # no tune to wait for
        except TransientError:
            tune = None
        else:
            rt.learnt.remember_tune(tune, s.astria_tune_recheck_seconds if tune.trained_at is None
                                    else TRAINED_TUNE_FRESH_SECONDS)
    if tune and tune.expires_at and tune.expires_at.timestamp() <= now:
        return TuneExpired(f"tune {tune.id} expired at {tune.expires_at.isoformat()} before "
                           f"prompt {job.prompt_id} had images")
    if tune and tune.trained_at:
        counted = tune.trained_at.timestamp() + s.astria_job_deadline_seconds
        return (counted, False) if counted > now else None
    if now - job.submitted_at >= s.astria_tune_training_max_seconds:
        return None
    return now + s.astria_tune_recheck_seconds, True


def delete(rt: Runtime, lease: Lease, job: Job) -> None:
    """DELETE the prompts of a job cancelled with delete_prompt; retried per the retry policy (a
    429 spends none of its budget: `next_try`), 429s for at most ASTRIA_DELETE_FOR_SECONDS
    after the cancellation: no other bound holds a throttled DELETE (no `expires_in` applies to
    a decided job), and a job due for ever would be asked for ever."""
    try:
        for prompt_id in job.prompt_ids:
            rt.astria.delete_prompt(job.tune_id, prompt_id)
    except AstriaRejected as exc:
        log.warning("job %s: Astria refused to delete prompt %s: %s", job.id, job.prompt_id,
                    exc, extra=job.log_fields(prompt_id=job.prompt_id))
        rt.jobs.delete_failed(lease, job, str(exc))
        return
    except TransientError as exc:
        now = time.time()
        retry = next_try(rt.settings, astria_policy(rt.settings), exc,
                         attempt=job.retry_attempt, started_at=job.retry_since, now=now)
        if retry is None or now - job.finished_at >= rt.settings.astria_delete_for_seconds:
            log.warning("job %s: gave up deleting prompt %s: %s", job.id, job.prompt_id, exc,
                        extra=job.log_fields(prompt_id=job.prompt_id))
            rt.jobs.delete_failed(lease, job, str(exc))
        else:
            rt.jobs.schedule_retry(lease, job, at=retry.at, spent=retry.spent)
        return
    log.info("job %s: prompt %s deleted at Astria", job.id, job.prompt_id,
             extra=job.log_fields(prompt_id=job.prompt_id))
    rt.jobs.prompt_deleted(lease, job)
