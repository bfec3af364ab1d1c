"""Submit: create a job's prompt at Astria, exactly once.

`plan` routes a job (`worker.astria.routing`) and makes the record of its POST; `record_posts`
writes the records of a grant's POSTs in one round trip before any is sent;
`send` sends one once and acts on the answer: a prompt -> the job waits for images; the
documented pti/faceid/lora 422 -> the route is learnt and the job rejoins its queue for the base
tune; another 4xx -> failure; a 429 (nothing was created) -> the job rejoins its queue when
Astria's Retry-After says, none of its retry budget spent (`throttled_wait`); 503 or a
refused connection (nothing was created) -> the retry policy decides when the job rejoins its
queue; 500, 502, 504, a timeout, a dropped connection or a body that is not a prompt (the prompt
may exist) -> `reconcile` looks for it before anything is sent again.

`reconcile` pages Astria's listing of the tune back in time, one page per step (each page is a
request the dispatcher grants), for the prompts carrying this job's marker: its callback token
when callbacks are on (Astria returns `callback` in the prompt), else the text as sent and the
job's seed. It stops once a page reaches back before the job's first POST, or does not move back
in time; how many prompts the account created since does not matter. Nothing found
ASTRIA_AMBIGUOUS_GRACE_SECONDS after the answer was given up (by Redis's clock, which every host
shares; a worker that died mid-POST gave up at the latest when its read timeout would have
ended): nothing was created, and the job is POSTed again, unless ASTRIA_MAX_AMBIGUOUS_POSTS of
its POSTs went so already: then it fails (AstriaUnavailable) rather than risk paying again.

An answer with several prompts (partner models answer a list) records them all: the job waits for
every one, and its outcome gathers their images. A connection that failed before the request
went out created nothing and is tried again at once (the first time; then by the retry policy).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import urlencode

from worker.astria.client import TransientError
from worker.astria.polling import first_poll_delay
from worker.astria.prompt import Prompt
from worker.astria.retry import (
    astria_policy,
    listing_policy,
    next_attempt_in,
    next_try,
    throttled_wait,
)
from worker.astria.routing import Target, route, unsupported_kind
from worker.errors import AstriaRejected, AstriaUnavailable, InvalidSpec
from worker.flow import outcomes
from worker.records import Job
from worker.runtime import Runtime
from worker.spec import PromptSpec, parse_spec
from worker.store.types import Ending, Lease, Moved, Noted, Posting

log = logging.getLogger("astria.submit")
PAGE = 120
#: Prompts created up to this long before the first POST (by Astria's clock) are still searched.
CLOCK_MARGIN = 120.0


def callback_url(base: str, token: str) -> str:
    """Our receiver's URL with the job's secret token, which is also how a callback (and the
    prompt of an unanswered POST) is matched to its job."""
    return f"{base}{'&' if '?' in base else '?'}{urlencode({'token': token})}"


@dataclass(frozen=True)
class Plan:
    """A POST about to be made: where, what, and the record written before it is sent."""

    spec: PromptSpec
    target: Target
    posting: Posting

    @cached_property
    def job(self) -> Job:
        """The job as its record reads once the POST is recorded."""
        return self.posting.recorded()


def plan(rt: Runtime, job: Job) -> Plan:
    """Route the job and make the record of its POST (InvalidSpec if its spec breaks a rule).
    Its callback was checked when it was accepted, and is again at each delivery."""
    spec = parse_spec(job.spec, sdxl_base_tune_id=rt.settings.astria_sdxl_base_tune_id,
                      private_callbacks=True)
    target = route(rt.settings, spec, rt.learnt.known_route(spec.tune_id))
    posting = Posting(job, target.tune_id, target.text, target.rerouted, rt.clock.now())
    return Plan(spec, target, posting)


def refuse(rt: Runtime, lease: Lease, job: Job, exc: InvalidSpec) -> None:
    """A job whose spec breaks a rule (found when it is routed) fails; nothing is sent."""
    outcomes.finish(rt, Ending(lease, job, outcomes.failure(exc)))


def record_posts(rt: Runtime, planned: list[tuple[Lease, Plan]]) -> list[tuple[Lease, Plan]]:
    """Record the POSTs before they are sent, in one round trip; those to send now. A record
    that did not reach the replicas is retracted (nothing sent: a failover could take it back,
    and the record is how a lost answer finds its prompt); a job cancelled meanwhile, or no
    longer ours, sends nothing."""
    if not planned:
        return []
    replies = rt.jobs.record_posts([(lease, p.posting) for lease, p in planned])
    ready = []
    for (lease, p), reply in zip(planned, replies, strict=True):
        if reply is Moved.OK:
            ready.append((lease, p))
        elif reply is Moved.NOT_DURABLE:
            rt.jobs.retract(lease, p.job)
        elif reply is Moved.REVOKED:
            log.info("job %s: cancelled before its POST; nothing sent", p.job.id)
    return ready


def send(rt: Runtime, lease: Lease, planned: Plan) -> None:
    """The POST, recorded already: send it once and act on the answer."""
    s, job, target, spec = rt.settings, planned.job, planned.target, planned.spec
    fields: dict[str, Any] = {**spec.prompt_fields(), "text": target.text, "seed": job.seed}
    if s.astria_callback_url:
        fields["callback"] = callback_url(s.astria_callback_url, job.token)
    if job.inline_image:
        fields["input_image_base64"] = rt.jobs.inline_image(job.id)
        if not fields["input_image_base64"]:
            outcomes.finish(rt, Ending(lease, job, outcomes.failure(InvalidSpec(
                "input_image_base64: the inline image is gone (it is kept a day after a job "
                "fails); enqueue the job again")), noted=Noted.NOT_CREATED))
            return
    try:
        prompts = rt.astria.create_prompt(target.tune_id, fields)
    except AstriaRejected as exc:
        kind = unsupported_kind(str(exc))
        if kind is not None and not target.rerouted:
            rt.learnt.remember_route(spec.tune_id, kind)
            rt.stats.count("route_learnt")
            log.info("job %s: tune %s is %s, re-routing", job.id, spec.tune_id, kind)
            rt.jobs.post_again(lease, job, at=time.time(), new_budget=True)
        else:
            outcomes.finish(rt, Ending(lease, job, outcomes.failure(exc),
                                       noted=Noted.NOT_CREATED))
        return
    except TransientError as exc:
        if exc.maybe_created:  # looking for the prompt is a new request, with its own budget
            log.info("job %s: POST unanswered (%s); looking for its prompt", job.id, exc)
            rt.jobs.look_for_prompt(lease, job, gave_up_at=rt.clock.now())
            return
        if exc.status == 429:
            rt.jobs.post_again(lease, job, at=time.time() + throttled_wait(s, exc),
                               budget_of=planned.posting.job)
            return
        delay = (0.0 if exc.not_sent and job.retry_attempt <= 1 else
                 next_attempt_in(astria_policy(s), attempt=job.retry_attempt,
                                 started_at=job.retry_since, error=exc))
        if delay is None:
            outcomes.finish(rt, Ending(lease, job, outcomes.failure(exc),
                                       noted=Noted.NOT_CREATED))
        else:
            rt.jobs.post_again(lease, job, at=time.time() + delay)
        return
    record_prompt(rt, lease, job, prompts, target)


def record_prompt(rt: Runtime, lease: Lease, job: Job, prompts: list[Prompt],
                  target: Target) -> None:
    """The prompts exist: the job waits for their images, first poll when they should be
    done."""
    first = prompts[0]
    tune_id = first.tune_id or target.tune_id
    ids = [p.id for p in prompts]
    if target.rerouted:
        rt.stats.count("rerouted")
    delay = first_poll_delay(rt.settings, job.lane, rt.learnt.expected_generation_seconds())
    state = rt.jobs.record_prompts(lease, job, ids, tune_id=tune_id, text=target.text,
                                   rerouted=target.rerouted, first_poll_at=time.time() + delay)
    log.info("job %s: prompt %s created on tune %s%s", job.id, ",".join(map(str, ids)),
             tune_id, "" if state is Moved.WAITING else f" ({state})",
             extra=job.log_fields(prompt_id=first.id, tune_id=tune_id, attempt=job.post_attempts))


def _carries_marker(rt: Runtime, job: Job, prompt: Prompt) -> bool:
    if rt.settings.astria_callback_url and f"token={job.token}" in (prompt.callback or ""):
        return True
    return (prompt.text or "").strip() == job.post_text.strip() and prompt.seed == job.seed


def reconcile(rt: Runtime, lease: Lease, job: Job) -> None:
    """Look for the prompt of the job's unanswered POST, one page of the listing per step."""
    s = rt.settings
    now = rt.clock.now()
    gave_up = job.gave_up_at or (
        job.pending_post + s.astria_connect_timeout + s.astria_read_timeout)
    settle = gave_up + s.astria_ambiguous_grace_seconds
    try:
        page = rt.astria.list_prompts(job.post_tune_id, limit=PAGE,
                                      before_id=job.list_before or None)
    except TransientError as exc:  # the retry policy decides when to list again, or to stop
        retry = next_try(s, listing_policy(s), exc, attempt=job.retry_attempt,
                         started_at=job.retry_since, now=now)
        if retry is None:
            outcomes.finish(rt, Ending(lease, job, outcomes.failure(AstriaUnavailable(
                f"could not look for the prompt of an unanswered POST: {exc}"))))
        else:
            rt.jobs.schedule_retry(lease, job, at=retry.at, spent=retry.spent)
        return
    # a page came back: each way on starts a new retry budget
    found = [p for p in page if _carries_marker(rt, job, p)]
    if found:
        prompts = sorted(found, key=lambda p: p.id)
        log.info("job %s: adopted prompt %s of an unanswered POST", job.id,
                 ",".join(str(p.id) for p in prompts))
        rt.stats.count("adopted")
        record_prompt(rt, lease, job, prompts,
                      Target(job.post_tune_id, job.post_text, job.post_rerouted))
        return
    oldest = min((outcomes.created_at(p) for p in page), default=float("inf"))
    moved_back = job.list_oldest == 0 or oldest < job.list_oldest
    if len(page) == PAGE and moved_back and oldest >= job.first_post_at - CLOCK_MARGIN:
        rt.jobs.list_next(lease, job, before_id=min(p.id for p in page), oldest=oldest)
        return
    if now >= settle:
        ambiguous = job.ambiguous_posts + 1
        if ambiguous >= s.astria_max_ambiguous_posts:
            outcomes.finish(rt, Ending(lease, job, outcomes.failure(AstriaUnavailable(
                f"{ambiguous} POSTs went unanswered and no prompt of theirs showed in Astria's "
                "listing: not POSTed again (ASTRIA_MAX_AMBIGUOUS_POSTS); a redrive looks for "
                "its prompt first")), noted=Noted.AMBIGUOUS))
            return
        log.info("job %s: no prompt from its unanswered POST %gs after it was given up; "
                 "posting again", job.id, s.astria_ambiguous_grace_seconds)
        rt.jobs.post_again(lease, job, at=time.time(), new_budget=True, ambiguous=True)
    else:  # it may still show up: look again, sooner at first
        again = min(settle, now + min(10.0, max(1.0, now - gave_up)))
        rt.jobs.list_again(lease, job, at=time.time() + (again - now))
