"""`Registrations`: how a job enters the store, once, whatever its message looks like.

A valid spec is registered in its lane's queue (`lua/register.lua`): idempotently (a redelivered
message changes nothing), as a follower of a live job with the same idempotency_key (up to
IDEMPOTENCY_MAX_FOLLOWERS of them), or REVOKED when it was cancelled before it arrived. Its
`input_image_base64` is kept apart from the record, under its own key, and leaves Redis when the
prompt exists: a 4 MiB image costs memory while the job waits for its POST, not for the days
its record is kept.

An invalid spec is recorded as a failed job (`lua/record_invalid.lua`) with a bounded copy of
what was sent (MAX_STORED_SPEC_CHARS) and its InvalidSpec, delivered to the result backend and,
when its callback itself is valid, as a webhook.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from typing import Any

import redis

from worker.errors import InvalidSpec
from worker.records import (
    Failed,
    JobState,
    Lane,
    Outcome,
    Revoked,
    as_text,
    outcome_from_json,
)
from worker.spec import PromptSpec, parse_spec
from worker.store.jobs import JobStore
from worker.store.results import webhook_type
from worker.store.types import Registered, Registration, job_fields
from worker.tenants import TENANT_PATTERN

#: What is kept of an invalid spec: enough to see what was sent, never megabytes.
MAX_STORED_SPEC_CHARS = 16_384


def _valid_tenant_and_lane(raw: Any) -> tuple[str, Lane]:
    """The tenant and lane of a spec that failed validation, where they themselves are valid."""
    tenant, lane = "default", Lane.NORMAL
    if isinstance(raw, dict):
        if isinstance(raw.get("tenant"), str) and re.fullmatch(TENANT_PATTERN, raw["tenant"]):
            tenant = raw["tenant"]
        if raw.get("priority") in set(Lane):
            lane = Lane(raw["priority"])
    return tenant, lane


def _valid_callback(raw: Any, private_callbacks: bool) -> str:
    """The callback of a spec that failed validation, where the callback itself is valid
    (an invalid one, such as a private address, gets no webhook)."""
    callback = raw.get("callback") if isinstance(raw, dict) else None
    if not isinstance(callback, str):
        return ""
    try:
        parse_spec({"tune_id": 1, "text": "x", "callback": callback},
                   private_callbacks=private_callbacks)
    except InvalidSpec:
        return ""
    return callback


def stored_spec(raw: Any) -> str:
    """What was sent, as JSON, at most MAX_STORED_SPEC_CHARS (a longer one is kept as a
    `{"truncated_spec": ...}` object, still JSON)."""
    text = json.dumps(raw, default=str)
    if len(text) <= MAX_STORED_SPEC_CHARS:
        return text
    return json.dumps({"truncated_spec": text[:MAX_STORED_SPEC_CHARS], "chars": len(text)})


class Registrations:
    def __init__(self, jobs: JobStore) -> None:
        self._jobs = jobs

    def register(self, job_id: str, spec: PromptSpec, *, post_by: float = 0.0,
                 revoked_reason: str = "revoked", batch_id: str = "",
                 traceparent: str = "") -> Registration:
        """Create the job once (see the module docstring), a member of `batch_id` when given,
        its spans children of `traceparent` when given;
        TOO_MANY when the idempotency key has IDEMPOTENCY_MAX_FOLLOWERS followers already,
        NOT_MEMBER when the batch was not created with this job of this tenant (nothing is
        stored)."""
        store, now = self._jobs, time.time()
        k, lane = store.keys, spec.lane
        seed = spec.seed if spec.seed is not None else int.from_bytes(os.urandom(4), "big")
        seq = f"{int(now * 1_000_000):017d}"
        kept = spec.model_dump(exclude_none=True, exclude={"input_image_base64"})
        fields = {"spec": json.dumps(kept, sort_keys=True),
                  "tenant": spec.tenant, "lane": lane, "seq": seq, "created_at": now,
                  "post_by": post_by, "seed": seed, "token": secrets.token_urlsafe(16),
                  "post_attempts": 0, "polls": 0}
        if spec.webhook_events:  # lua/lib/job_event.lua: ',queued,waiting,'
            fields["webhook_events"] = f",{','.join(spec.webhook_events)},"
        if traceparent:
            fields["traceparent"] = traceparent
        idem = (k.idempotency(spec.tenant, spec.idempotency_key) if spec.idempotency_key
                else k.job(job_id))
        # what a job cancelled before it arrived is decided with (register.lua, lib/decide.lua)
        revoked = Revoked(revoked_reason)
        decision_keys = {**store.outcome_keys(job_id), "live": k.live(spec.tenant)}
        decision_args = store.outcome_args(revoked, spec.tenant, lane,
                                           doc=store.results.revoked_prefix(revoked_reason))
        for _ in range(10):
            leader = as_text(store.redis.get(idem) or "") if spec.idempotency_key else ""
            batch = store.batch(durable=True)
            batch.add(
                store.scripts.register,
                keys={**decision_keys, "job": k.job(job_id), "idem": idem,
                      "leader": k.job(leader) if leader else k.job(job_id),
                      "leader_followers": k.followers(leader or job_id),
                      "token": k.token(str(fields["token"])), "ready": k.ready(lane),
                      "turns": k.turns(lane), "queued": k.queued, "expiry": k.expiry,
                      "revoked": k.revoked, "dispatch": k.dispatch, "tenants": k.tenants},
                args={**decision_args, "job_id": job_id, "now": now, "lane": lane,
                      "member": f"{spec.tenant}|{seq}|{job_id}", "post_by": post_by,
                      "leader_id": leader, "webhook_url": spec.callback or "", "wake": k.wake,
                      "inline_image": spec.input_image_base64 or "",
                      "max_followers": store.settings.idempotency_max_followers,
                      "batch": batch_id, "fields": job_fields(fields)},
            )
            reply = batch.execute()[0]
            kind = Registered(as_text(reply[0]))
            if kind is Registered.RETRY:  # the key's leader changed under us: read it again
                continue
            if kind is Registered.FOLLOWER and as_text(reply[2]):
                self._deliver_late(job_id, as_text(reply[1]), outcome_from_json(as_text(reply[2])),
                                   spec.callback)
            return Registration(kind, as_text(reply[1]) if kind is Registered.FOLLOWER else None)
        raise redis.RedisError(f"job {job_id}: idempotency key kept changing")

    def _deliver_late(self, job_id: str, leader: str, outcome: Outcome,
                      webhook_url: str | None) -> None:
        store, k = self._jobs, self._jobs.keys
        store.scripts.deliver(
            keys={"job": k.job(job_id), "result": k.result(job_id),
                  "webhooks_due": k.webhooks_due},
            args={"job_id": job_id, "leader": leader, "now": time.time(),
                  "retention": store.settings.job_retention_seconds,
                  "doc": store.results.outcome_prefix(outcome), "ttl": store.results.ttl,
                  "webhook_prefix": k.webhook(""), "webhook_url": webhook_url or "",
                  "webhook_type": webhook_type(outcome)},
        )

    def record_invalid(self, job_id: str, raw_spec: Any, error: InvalidSpec,
                       batch_id: str = "") -> None:
        """Keep a dead-letter record of a job whose spec failed validation and deliver its
        failure, once, however often the message is delivered; counted in `batch_id` when it
        is a member."""
        store = self._jobs
        tenant, lane = _valid_tenant_and_lane(raw_spec)
        outcome = Failed("InvalidSpec", str(error))
        keys = store.outcome_keys(job_id)
        keys.update(job=store.keys.job(job_id), live=store.keys.live(tenant))
        webhook_url = _valid_callback(raw_spec, store.settings.webhook_allow_private_addresses)
        store.scripts.record_invalid(
            keys=keys,
            args={"job_id": job_id, "now": time.time(),
                  **store.outcome_args(outcome, tenant, lane), "webhook_url": webhook_url,
                  "batch": batch_id,
                  "fields": job_fields({"status": JobState.FAILED, "spec": stored_spec(raw_spec),
                                         "tenant": tenant, "lane": lane})},
        )
