"""Accept: a new job's first delivery. Validate its spec and register it in its lane's queue.

When the job's POST goes out is the dispatcher's decision (`worker.dispatch`), not this task's:
no worker slot waits for a rate limit or for Astria. Registering publishes on the wake channel,
so an idle engine (`worker.engine`) asks for work at once. A spec that breaks a rule ends the job at
once with an InvalidSpec that names each bad field and its rule; nothing is sent to Astria.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from worker.errors import InvalidSpec
from worker.routing import route
from worker.runtime import runtime
from worker.spec import PromptSpec, parse_spec

log = logging.getLogger("astria.accept")


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


def accept(job_id: str, raw_spec: Any, *, message_expires: Any = None) -> None:
    rt = runtime()
    try:
        spec = parse_spec(raw_spec, sdxl_base_tune_id=rt.settings.astria_sdxl_base_tune_id)
        route(rt.settings, spec, rt.learnt.known_route(spec.tune_id))  # e.g. a second LoRA
    except InvalidSpec as exc:
        rt.jobs.record_invalid(job_id, raw_spec, exc)
        log.info("job %s rejected: %s", job_id, exc, extra={"job_id": job_id})
        return
    register(job_id, spec, post_by=_post_by(spec.expires_in, message_expires, time.time()))


def record_revoked_message(job_id: str, raw_spec: Any, reason: str) -> None:
    """Celery discarded the job's message (revoked, or expired): the job still gets its record
    (state REVOKED, counted for its tenant, its webhook sent), when its spec is valid."""
    rt = runtime()
    try:
        spec = parse_spec(raw_spec, sdxl_base_tune_id=rt.settings.astria_sdxl_base_tune_id)
    except InvalidSpec:
        return  # the result backend already says REVOKED
    register(job_id, spec, revoked_reason=reason)


def register(job_id: str, spec: PromptSpec, *, post_by: float = 0.0,
             revoked_reason: str = "revoked") -> None:
    rt = runtime()
    registration = rt.jobs.register(  # a new job wakes the engines (Redis pub/sub)
        job_id, spec, post_by=post_by, revoked_reason=revoked_reason)
    if registration.kind == "follower":
        log.info("job %s follows job %s (same idempotency_key)", job_id, registration.leader,
                 extra={"job_id": job_id})
    elif registration.kind == "revoked":
        log.info("job %s was revoked before it arrived", job_id, extra={"job_id": job_id})
