"""The path of one job: accept -> submit (exactly once) -> route -> wait -> result.

`accept` runs on the first delivery of `astria.submit_prompt`; `advance` moves registered jobs one
step each (submit, or poll once) and then lets go, so waiting never holds a worker. The job's state
lives in Redis (`worker.jobs`); the outcome goes to Celery's result backend under the job id.

Exactly once: before every POST the job records `pending_post`. If the answer is lost (504, read
timeout, dropped connection, garbage body, or the worker dying), the next attempt first lists the
tune's recent prompts and adopts the one carrying this job's marker (the text as sent and the job's
seed, which is drawn per job when the spec has none); it only POSTs again when nothing turned up
after ASTRIA_AMBIGUOUS_GRACE_SECONDS.
"""

from __future__ import annotations

import logging
import re
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode

import redis
from celery import states
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from worker import errors
from worker.app import app
from worker.client import AstriaClient, Prompt, TransientError, retrying
from worker.errors import (
    AstriaQueueError,
    AstriaRejected,
    AstriaUnavailable,
    InvalidSpec,
    PromptFailed,
    PromptTimeout,
)
from worker.jobs import Decided, Job, JobStore, Lease, LeaseLost
from worker.ratelimit import RateLimiter
from worker.results import ResultFormat
from worker.settings import Settings, get_settings
from worker.spec import FACEID_TAG, LORA_TAG, PromptSpec, parse_spec
from worker.stats import Stats

log = logging.getLogger("astria.pipeline")

_UNSUPPORTED = re.compile(r"model_type=(pti|faceid) is not supported")
WAITING = "WAITING"


class Reschedule(Exception):
    """Come back to this job later instead of holding a worker while nothing can be done."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.delay = delay


@dataclass(frozen=True)
class Runtime:
    """What a worker process needs, built once per process (after any fork)."""

    settings: Settings
    redis: redis.Redis
    jobs: JobStore
    client: AstriaClient
    stats: Stats


def redis_client(url: str) -> redis.Redis:
    """A client that rides out a Redis restart: retried commands, timeouts, health checks."""
    return redis.Redis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=20),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        socket_timeout=15,
        socket_connect_timeout=5,
        health_check_interval=15,
    )


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    settings = get_settings()
    client = redis_client(settings.redis_url)
    jobs = JobStore(client, settings, ResultFormat(app))
    stats = Stats(client, settings.key_prefix)
    astria = AstriaClient(settings, RateLimiter(client, settings), stats)
    return Runtime(settings, client, jobs, astria, stats)


# --- entry points (called by tasks/prompts.py) --------------------------------------------------
def accept(job_id: str, raw_spec: Any) -> None:
    """Validate and register a new job, then take its first step."""
    rt = runtime()
    try:
        spec = _parse(rt, raw_spec)
        target = _route(rt, spec)  # or a second LoRA for a tune known to need the SDXL base
    except InvalidSpec as exc:
        rt.jobs.record_invalid(job_id, raw_spec, _failure(exc))
        log.info("job %s rejected: %s", job_id, exc, extra={"job_id": job_id})
        return
    reg = rt.jobs.register(job_id, spec.model_dump(exclude_none=True), spec.idempotency_key,
                           first_step=_post_record(0, None, target))
    if reg.kind == "follower":
        log.info("job %s follows job %s (same idempotency_key)", job_id, reg.leader)
        if reg.outcome:
            rt.jobs.deliver([job_id], reg.outcome)
    elif reg.lease is None:
        advance([job_id])  # a redelivered message: the job may be half-way, or done
    else:
        _step(rt, reg.lease, reg.job, spec, target)


def advance(job_ids: list[str]) -> None:
    """Take one step of each registered job that no other worker owns right now, in turn.

    All are owned from the start and their outcomes written together at the end (one round trip
    each; a job stays owned until then). A failing step does not hold up the others (its job stays
    due), and a slow batch renews each lease before using it."""
    rt = runtime()
    started = time.monotonic()
    finishing: list[Finishing] = []
    batch = _finishing.set(finishing)
    try:
        for lease, job in rt.jobs.acquire_many(job_ids):
            try:
                if time.monotonic() - started > rt.settings.job_lease_seconds / 2:
                    rt.jobs.renew(lease)
                _step(rt, lease, job)
            except LeaseLost:
                continue
            except redis.RedisError:
                raise  # Redis is away: the rest would fail too; they fall due after their lease
            except Exception:
                log.exception("job %s: step failed, it falls due again", job.id,
                              extra={"job_id": job.id})
    finally:
        _finishing.reset(batch)
    if finishing:
        for (lease, _, _), decided in zip(finishing, rt.jobs.finish_many(finishing),
                                          strict=True):
            if decided is not None:
                _log_outcome(lease, decided)


def _step(rt: Runtime, lease: Lease, job: Job, spec: PromptSpec | None = None,
          recorded: Target | None = None) -> None:
    """Submit or poll the job we own, and let go of it. From `accept`: the parsed `spec`, and the
    target whose POST registration `recorded` already."""
    try:
        if job.status not in ("queued", "waiting"):
            rt.jobs.release(lease, retire=True)  # finished (a late message), or expired
        elif job.prompt_id is None:
            _submit_step(rt, lease, job, spec, recorded)
        else:
            _poll_step(rt, lease, job)
    except LeaseLost:
        log.warning("job %s: lease lost, another worker carries on", job.id)
    except BaseException:
        rt.jobs.release(lease)  # the job stays due: it is retried once the lease time passes
        raise


# --- submit -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """Where and what to POST: the requested tune, or a base tune after the 422 re-route."""

    tune_id: int
    text: str
    rerouted: bool


def _parse(rt: Runtime, raw: Any) -> PromptSpec:
    return parse_spec(raw, sdxl_base_tune_id=rt.settings.astria_sdxl_base_tune_id)


def _submit_step(rt: Runtime, lease: Lease, job: Job, spec: PromptSpec | None,
                 recorded: Target | None) -> None:
    try:
        spec = spec or _parse(rt, job.spec)
        prompt, target = _submit(rt, lease, job, spec, recorded)
    except Reschedule as later:
        rt.jobs.schedule(lease, later.delay)
        return
    except (InvalidSpec, AstriaRejected, AstriaUnavailable) as exc:
        job = rt.jobs.load(job.id)
        if job.pending_post and time.time() < job.deadline:
            # A POST may have created the prompt: look again later rather than give up on it.
            rt.jobs.schedule(lease, rt.settings.astria_ambiguous_grace_seconds)
            return
        _finish(rt, lease, _failure(exc))
        return
    tune_id = int(prompt.get("tune_id") or target.tune_id)
    if target.rerouted:
        rt.stats.count("rerouted")
    log.info("job %s: prompt %s created on tune %s", job.id, prompt["id"], tune_id,
             extra={"job_id": job.id, "prompt_id": prompt["id"], "tune_id": tune_id})
    rt.jobs.schedule(
        lease, _first_poll_delay(rt),
        progress=(WAITING, {"prompt_id": prompt["id"], "tune_id": tune_id,
                            "requested_tune_id": job.requested_tune_id,
                            "rerouted": target.rerouted}),
        status="waiting", prompt_id=prompt["id"], tune_id=tune_id,
        rerouted=int(target.rerouted), sent_text=target.text, pending_post=0,
        submitted_at=time.time(),
    )


def _submit(
    rt: Runtime, lease: Lease, job: Job, spec: PromptSpec, recorded: Target | None
) -> tuple[Prompt, Target]:
    """Create the job's prompt, at most once, retrying transient failures with tenacity."""
    for attempt in retrying(rt.settings):
        with attempt:
            if attempt.retry_state.attempt_number > 1:  # after a back-off: still ours? reload
                rt.jobs.renew(lease)
                job, recorded = rt.jobs.load(job.id), None
            if recorded is not None:  # this very POST was recorded with the registration
                return _send_post(rt, lease, job, spec, recorded)
            if job.pending_post:
                found = _find_created(rt, job)
                if found is not None:
                    log.info("job %s: adopted prompt %s from an unanswered POST", job.id,
                             found["id"])
                    rt.stats.count("adopted")
                    return found, Target(int(job.fields["post_tune_id"]),
                                         job.fields["post_text"], job.get("post_rerouted") == "1")
                settle = job.pending_post + rt.settings.astria_ambiguous_grace_seconds
                if time.time() < settle:
                    raise Reschedule(settle - time.time())
            return _post(rt, lease, job, spec, _route(rt, spec))
    raise AssertionError("unreachable")  # pragma: no cover


def _post_record(attempts_before: int, first_post_at: str | None, target: Target
                 ) -> dict[str, Any]:
    """What a job records before a POST: when, where and what (for reconciliation)."""
    now = time.time()
    return {"pending_post": now, "post_tune_id": target.tune_id, "post_text": target.text,
            "post_rerouted": int(target.rerouted), "post_attempts": attempts_before + 1,
            "first_post_at": first_post_at or now}


def _post(
    rt: Runtime, lease: Lease, job: Job, spec: PromptSpec, target: Target
) -> tuple[Prompt, Target]:
    """Record, then POST once."""
    rt.jobs.update(lease, **_post_record(job.post_attempts, job.get("first_post_at"), target))
    return _send_post(rt, lease, job, spec, target)


def _send_post(
    rt: Runtime, lease: Lease, job: Job, spec: PromptSpec, target: Target
) -> tuple[Prompt, Target]:
    """One recorded POST; on the documented pti/faceid 422, learn the route and re-route once."""
    fields = {**spec.prompt_fields(), "text": target.text, "seed": job.seed}
    if rt.settings.astria_callback_url:
        fields["callback"] = callback_url(rt.settings.astria_callback_url, job.token)
    try:
        return rt.client.create_prompt(target.tune_id, fields), target
    except TransientError as exc:
        if not exc.maybe_created:
            rt.jobs.update(lease, pending_post=0)
        raise
    except AstriaRejected as exc:
        rt.jobs.update(lease, pending_post=0)
        match = _UNSUPPORTED.search(str(exc))
        if match is None or target.rerouted:
            raise
        rt.jobs.remember_route(spec.tune_id, match.group(1))
        rt.stats.count("route_learnt")
        log.info("job %s: tune %s is %s, re-routing", job.id, spec.tune_id, match.group(1))
        return _post(rt, lease, rt.jobs.load(job.id), spec, _reroute(rt.settings, spec,
                                                                     match.group(1)))


def _route(rt: Runtime, spec: PromptSpec) -> Target:
    """Go straight to the base tune when an earlier job learnt that this tune needs it."""
    kind = rt.jobs.known_route(spec.tune_id)
    if kind is None:
        return Target(spec.tune_id, spec.text, rerouted=False)
    return _reroute(rt.settings, spec, kind)


def _reroute(settings: Settings, spec: PromptSpec, kind: str) -> Target:
    if kind == "faceid":
        tag = f"<faceid:{spec.tune_id}:1>"
        has_tag = any(int(m.group(1)) == spec.tune_id for m in FACEID_TAG.finditer(spec.text))
        text = spec.text if has_tag else f"{tag} {spec.text}"
        return Target(settings.astria_faceid_base_tune_id, text, rerouted=True)
    strength = spec.lora_strength or settings.astria_lora_strength
    text = spec.text
    if spec.tune_id not in spec.lora_tags():
        text = f"<lora:{spec.tune_id}:{strength:g}> {text}"
    if len(LORA_TAG.findall(text)) > 1:
        raise InvalidSpec(
            f"text: tune {spec.tune_id} is an SDXL LoRA and SDXL prompts take one LoRA; "
            "remove the other <lora:...> tags"
        )
    return Target(settings.astria_sdxl_base_tune_id, text, rerouted=True)


def _find_created(rt: Runtime, job: Job) -> Prompt | None:
    """The prompt an unanswered POST of this job created, looked up in Astria's listing."""
    tune_id = int(job.fields["post_tune_id"])
    text = job.fields["post_text"].strip()
    since = float(job.get("first_post_at") or job.pending_post) - 120
    before_id: int | None = None
    for _ in range(10):
        page = rt.client.list_prompts(tune_id, limit=120, before_id=before_id)
        matches = [
            p for p in page
            if str(p.get("text") or "").strip() == text and _int(p.get("seed")) == job.seed
        ]
        if matches:
            return min(matches, key=lambda p: int(p["id"]))
        if len(page) < 120 or _created(page[-1]) < since:
            return None
        before_id = int(page[-1]["id"])
    return None


# --- wait -------------------------------------------------------------------------------------
def callback_url(base: str, token: str) -> str:
    """Our receiver's URL with the job's secret token, which is also how a callback is matched."""
    return f"{base}{'&' if '?' in base else '?'}{urlencode({'token': token})}"


def _first_poll_delay(rt: Runtime) -> float:
    """Look first when the prompt should be done (learnt from earlier prompts); with callbacks on,
    polling is only the fallback for a callback that never came (Astria does not retry them)."""
    s = rt.settings
    expected = rt.jobs.expected_generation_seconds()
    delay = s.astria_first_poll_seconds if expected is None else expected * 1.05
    return delay + (s.astria_callback_fallback_seconds if s.astria_callback_url else 0.0)


def _next_poll_delay(s: Settings, polls: int) -> float:
    interval = min(s.astria_poll_max_interval, s.astria_poll_interval * s.astria_poll_backoff ** (
        polls - 1))
    return max(interval, s.astria_callback_fallback_seconds) if s.astria_callback_url else interval


def complete_from_callback(job_id: str, prompt: Prompt) -> bool:
    """Finish a job from Astria's callback at once; False if it cannot be finished from it now
    (then the job is made due, so a poll settles it promptly)."""
    rt = runtime()
    owned = None
    for _ in range(20):  # a poll or submit of this job may be under way: it is short
        owned = rt.jobs.acquire(job_id)
        if owned:
            break
        time.sleep(0.05)
    if owned is None:
        return False
    lease, job = owned
    try:
        if job.status not in ("queued", "waiting"):
            rt.jobs.release(lease, retire=True)  # finished already: a late callback
            return False
        if job.prompt_id == _int(prompt.get("id")) and _finish_if_done(rt, lease, job, prompt):
            return True
        rt.jobs.schedule(lease, 0)
        return False
    except LeaseLost:
        return False
    except BaseException:
        rt.jobs.release(lease)
        raise


def _poll_step(rt: Runtime, lease: Lease, job: Job) -> None:
    assert job.prompt_id is not None
    s = rt.settings
    try:
        prompt: Prompt | None = rt.client.get_prompt(int(job.fields["tune_id"]), job.prompt_id)
    except AstriaUnavailable:
        prompt = None  # try again at the next poll
    except AstriaRejected as exc:
        _finish(rt, lease, _failure(exc))
        return
    if prompt and _finish_if_done(rt, lease, job, prompt):
        return
    if time.time() >= job.deadline:
        _finish(rt, lease, _failure(PromptTimeout(
            f"prompt {job.prompt_id} had no images after "
            f"{s.astria_job_deadline_seconds:g}s (ASTRIA_JOB_DEADLINE_SECONDS)"
        )))
    else:
        polls = job.polls + 1
        delay = max(0.0, min(_next_poll_delay(s, polls), job.deadline - time.time()))
        rt.jobs.schedule(lease, delay, polls=polls)


# --- result -----------------------------------------------------------------------------------
def _finish_if_done(rt: Runtime, lease: Lease, job: Job, prompt: Prompt) -> bool:
    """Finish the job if its prompt has images (success) or a `user_error` (failure)."""
    if prompt.get("images"):
        _finish(rt, lease, _success(job, prompt), _generation_seconds(job, prompt))
        return True
    if prompt.get("user_error"):
        _finish(rt, lease, _failure(PromptFailed(f"Astria user_error: {prompt['user_error']}")))
        return True
    return False


def _success(job: Job, prompt: Prompt) -> dict[str, Any]:
    return {
        "state": states.SUCCESS,
        "result": {
            "job_id": job.id,
            "prompt_id": prompt["id"],
            "tune_id": int(job.fields["tune_id"]),
            "requested_tune_id": job.requested_tune_id,
            "rerouted": job.get("rerouted") == "1",
            "text": job.get("sent_text") or prompt.get("text"),
            "images": list(prompt["images"]),
            "seed": prompt.get("seed", job.seed),
            "num_images": prompt.get("num_images"),
        },
    }


def _failure(exc: AstriaQueueError) -> dict[str, Any]:
    """A failed outcome, named after the nearest public class of `worker.errors`."""
    public = next(c for c in type(exc).__mro__ if getattr(errors, c.__name__, None) is c)
    return {"state": states.FAILURE, "error": {"type": public.__name__, "message": str(exc)}}


Finishing = tuple[Lease, dict[str, Any], float | None]
#: Outcomes decided while `advance` steps a batch, written together at its end.
_finishing: ContextVar[list[Finishing] | None] = ContextVar("astria_finishing", default=None)


def _finish(rt: Runtime, lease: Lease, outcome: dict[str, Any],
            generation_seconds: float | None = None) -> None:
    """Decide the outcome once, deliver it to the job and its followers, retire the job (inside
    `advance`, with the batch's other outcomes when it ends)."""
    batch = _finishing.get()
    if batch is not None:
        batch.append((lease, outcome, generation_seconds))
    else:
        _log_outcome(lease, rt.jobs.finish(lease, outcome, generation_seconds))


def _log_outcome(lease: Lease, decided: Decided) -> None:
    outcome = decided.outcome
    result = outcome.get("result", {})
    log.info("job %s: %s", lease.job_id, outcome["state"],
             extra={"job_id": lease.job_id, "outcome": outcome["state"],
                    "prompt_id": result.get("prompt_id"), "tune_id": result.get("tune_id")})


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _timestamp(prompt: Prompt, name: str) -> float | None:
    try:
        return datetime.fromisoformat(str(prompt.get(name))).timestamp()
    except ValueError:
        return None


def _created(prompt: Prompt) -> float:
    created = _timestamp(prompt, "created_at")
    return float("inf") if created is None else created


def _generation_seconds(job: Job, prompt: Prompt) -> float:
    """Astria's own created -> trained time when it reports both, else what we observed."""
    created, trained = _timestamp(prompt, "created_at"), _timestamp(prompt, "trained_at")
    if created is not None and trained is not None:
        return trained - created
    return time.time() - float(job.get("submitted_at") or time.time())
