"""Accept: a new job's first delivery. Read its arguments, validate its spec and register it in
its lane's queue.

When the job's POST goes out is the dispatcher's decision (`worker.store.dispatch`), not this
task's: no worker slot waits for a rate limit or for Astria. Registering publishes on the wake
channel, so an idle engine (`worker.flow.engine`) asks for work at once. Anything wrong with what
the producer sent ends the job at once with an InvalidSpec that names what and the rule, and nothing
is sent to Astria: task arguments other than `kwargs={"spec": {...}}` (a single positional argument
is taken too), a spec that breaks a rule, a tenant or tune TENANTS_FILE does not register for
it, an idempotency key that already has
IDEMPOTENCY_MAX_FOLLOWERS jobs waiting on it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from worker.astria.routing import route
from worker.errors import InvalidSpec
from worker.net.addresses import resolved_problem
from worker.net.tracing import valid
from worker.runtime import Runtime
from worker.spec import BATCH_ID, BATCH_ID_RULE, PromptSpec, parse_spec
from worker.store.types import Registered, Registration

log = logging.getLogger("astria.accept")


def batch_argument(kwargs: Any) -> str:
    """The batch a message's job is a member of (`kwargs={"spec": ..., "batch_id": ...}`, as
    `enqueue_batch` sends it), '' for none; InvalidSpec when it is not a batch id."""
    batch_id = kwargs.get("batch_id", "") if isinstance(kwargs, dict) else ""
    if batch_id and not (isinstance(batch_id, str) and BATCH_ID.fullmatch(batch_id)):
        raise InvalidSpec(f"batch_id: {BATCH_ID_RULE}")
    return batch_id or ""


def spec_argument(args: Any, kwargs: Any) -> Any:
    """The spec a message carries: `kwargs={"spec": ...}` (beside an optional `batch_id`), or
    one positional argument; InvalidSpec saying what came instead."""
    args, kwargs = list(args or ()), dict(kwargs or {})
    kwargs.pop("batch_id", None)
    if not args and list(kwargs) == ["spec"]:
        return kwargs["spec"]
    if len(args) == 1 and not kwargs:
        return args[0]
    problems = []
    if "spec" not in kwargs and len(args) != 1:
        problems.append("missing 'spec'")
    if extra := sorted(str(name)[:64] for name in kwargs if name != "spec"):
        problems.append(f"unexpected keyword arguments {extra[:10]}")
    if args and kwargs:
        problems.append(f"{len(args)} positional argument(s) beside keyword arguments")
    elif len(args) > 1:
        problems.append(f"{len(args)} positional arguments")
    raise InvalidSpec("task arguments: astria.submit_prompt takes kwargs={\"spec\": {...}}; "
                      + ", ".join(problems))


def _post_by(expires_in: float | None, message_expires: Any, now: float) -> float:
    """When the job must be sent to Astria by (0: never expires): the earlier of the spec's
    expires_in (from now) and the Celery message's own `expires`."""
    limits = [now + expires_in] if expires_in else []
    if isinstance(message_expires, str):
        message_expires = datetime.fromisoformat(message_expires)
    if isinstance(message_expires, datetime):
        if message_expires.tzinfo is None:
            message_expires = message_expires.replace(tzinfo=UTC)
        limits.append(message_expires.timestamp())
    return min(limits, default=0.0)


def _parse(rt: Runtime, raw_spec: Any) -> PromptSpec:
    """The spec, by its rules and the tenant registry's (TENANTS_FILE)."""
    s = rt.settings
    spec = parse_spec(raw_spec, sdxl_base_tune_id=s.astria_sdxl_base_tune_id,
                      private_callbacks=s.webhook_allow_private_addresses)
    s.tenants.check(spec.tenant, spec.tune_id)
    return spec


def check(rt: Runtime, raw_spec: Any) -> PromptSpec:
    """What a producer's job is checked for before anything is sent or stored (`enqueue`, the
    HTTP API): the spec's rules (InvalidSpec names the field and the rule), that TENANTS_FILE
    (when given) registers its tenant and tune, and, unless WEBHOOK_ALLOW_PRIVATE_ADDRESSES,
    that its callback's name resolves to public addresses only (a worker does not resolve names
    when it accepts a job: that would let a producer's DNS hold a worker slot; it resolves them
    at each delivery)."""
    spec = _parse(rt, dict(raw_spec) if isinstance(raw_spec, Mapping) else raw_spec)
    s = rt.settings
    problem = (resolved_problem(spec.callback)
               if spec.callback and not s.webhook_allow_private_addresses else None)
    if problem:
        raise InvalidSpec(f"callback: {problem}: webhooks go to public addresses only "
                              "(WEBHOOK_ALLOW_PRIVATE_ADDRESSES=true lifts this)")
    return spec


def accept(rt: Runtime, job_id: str, args: Any, kwargs: Any, *,
           message_expires: Any = None, traceparent: Any = None) -> None:
    """Register the job of a message (its `traceparent` header, when valid, is its trace's
    parent), or record why it cannot be."""
    raw_spec = kwargs.get("spec") if isinstance(kwargs, dict) else None
    batch_id = ""
    try:
        batch_id = batch_argument(kwargs)
        raw_spec = spec_argument(args, kwargs)
        spec = _parse(rt, raw_spec)
        route(rt.settings, spec, rt.learnt.known_route(spec.tune_id))  # e.g. a second LoRA
        post_by = _post_by(spec.expires_in, message_expires, time.time())
        registration = register(rt, job_id, spec, post_by=post_by, batch_id=batch_id,
                                traceparent=traceparent)
        if registration.kind is Registered.TOO_MANY:
            raise InvalidSpec(f"idempotency_key: {rt.settings.idempotency_max_followers} jobs "
                              "already wait on this key's prompt (IDEMPOTENCY_MAX_FOLLOWERS)")
        if registration.kind is Registered.NOT_MEMBER:
            raise InvalidSpec(f"batch_id: batch {batch_id!r} of tenant {spec.tenant!r} was not "
                              f"created with job {job_id!r}")
    except InvalidSpec as exc:
        rt.registrations.record_invalid(job_id, raw_spec, exc, batch_id)
        log.info("job %s rejected: %s", job_id, exc, extra={"job_id": job_id})


def record_revoked_message(rt: Runtime, job_id: str, args: Any, kwargs: Any,
                           reason: str) -> None:
    """Celery discarded the job's message (revoked, or expired): the job still gets its record
    (state REVOKED, counted for its tenant and its batch, its webhook sent), when its spec is
    valid."""
    try:
        batch_id = batch_argument(kwargs)
        spec = _parse(rt, spec_argument(args, kwargs))
    except InvalidSpec:
        return  # the result backend already says REVOKED
    register(rt, job_id, spec, revoked_reason=reason, batch_id=batch_id)


def register(rt: Runtime, job_id: str, spec: PromptSpec, *, post_by: float = 0.0,
             revoked_reason: str = "revoked", batch_id: str = "",
             traceparent: Any = None) -> Registration:
    """Register a valid job; with tracing on, its register span (a child of the producer's
    `traceparent` when valid: `worker.net.tracing`) is kept with it."""
    registration = rt.registrations.register(  # a new job wakes the engines (pub/sub)
        job_id, spec, post_by=post_by, revoked_reason=revoked_reason, batch_id=batch_id,
        traceparent=rt.tracing.job_context(valid(traceparent)))
    if registration.kind is Registered.FOLLOWER:
        log.info("job %s follows job %s (same idempotency_key)", job_id, registration.leader,
                 extra={"job_id": job_id})
    elif registration.kind is Registered.REVOKED:
        log.info("job %s was revoked before it arrived", job_id, extra={"job_id": job_id})
    return registration
