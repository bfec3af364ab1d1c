"""Webhook records in Redis: each delivery's state, its destination's, and the dead letters an
operator lists and sends again.

A webhook is queued by the script that decides its job's outcome (`lua/lib/decide.lua`), granted
by `grant_webhooks.lua`, and each attempt's result is recorded by `webhook_done.lua`, which also
keeps its destination's attempts without an answer in a row (timeouts, refused or reset
connections, TLS failures): from FAILURES_TO_HOLD on, the destination is held back (HOLD_BASE
seconds, doubling with each further one, at most HOLD_MAX) and gets one attempt at a time, so an
endpoint that hangs or is down costs its own webhooks, not anyone else's. Any answer, an error
status included, ends the streak: a quick 500 holds no thread, and its webhook is retried on its
own schedule.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from worker.constants import Keys
from worker.records import Outcome, as_text, outcome_from_json
from worker.store.scripts import Scripts
from worker.store.types import Delivery

#: Attempts without an answer in a row after which a destination is held back.
FAILURES_TO_HOLD = 5
HOLD_BASE = 5.0
HOLD_MAX = 300.0


@dataclass(frozen=True)
class DeadWebhook:
    webhook_id: str
    job_id: str
    type: str
    url: str
    attempts: int
    last_error: str


@dataclass(frozen=True)
class Webhook:
    """One webhook as stored: what to send, where, and how it has gone so far."""

    id: str
    job_id: str
    tenant: str  #: its job's ('' once the job's record is gone)
    type: str
    url: str
    body: bytes  #: the bytes sent by the first attempt (b'' before it)
    created_at: float
    first_attempt_at: float  #: 0 before the first attempt
    attempts: int
    outcome: Outcome | None  #: the job's outcome, to build the body of a first attempt
    finished_at: float
    data: dict[str, Any] | None = None  #: a batch's or a job event's webhook: its `data`
    traceparent: str = ""  #: its job's (`Job.traceparent`), where it was read


class WebhookStore:
    def __init__(self, client: redis.Redis, keys: Keys, scripts: Scripts,
                 retention: int) -> None:
        self._redis = client
        self._keys = keys
        self._scripts = scripts
        self._retention = retention

    def load(self, message_id: str, *, traced: bool = False) -> Webhook | None:
        """The webhook and, before its first attempt, its job's outcome; None when gone. With
        `traced`, its job's traceparent too (one more read for a batch's or an event's)."""
        raw = self._redis.hgetall(self._keys.webhook(message_id))
        if not raw:
            return None
        hook = {as_text(k): as_text(v) for k, v in raw.items()}
        job_key = self._keys.job(hook.get("job_id", ""))
        traceparent = ""
        if "data" in hook:  # a batch's or a job event's holds what it needs (lib/batch.lua,
            # lib/job_event.lua)
            tenant, outcome, at = hook.get("tenant", ""), None, hook.get("finished_at")
            if traced and hook.get("job_id"):
                traceparent = as_text(self._redis.hget(job_key, "traceparent") or b"")
        else:
            pipe = self._redis.pipeline(transaction=False)
            pipe.hmget(job_key, ["tenant", "traceparent"])
            pipe.hmget(self._keys.job(hook.get("source", "")), ["outcome", "finished_at"])
            (found_tenant, found_trace), (found, found_at) = pipe.execute()
            tenant, at = as_text(found_tenant or b""), as_text(found_at) if found_at else None
            traceparent = as_text(found_trace or b"")
            outcome = outcome_from_json(as_text(found)) if found and not hook.get("body") else None
        return Webhook(message_id, hook.get("job_id", ""), tenant, hook.get("type", ""),
                       hook.get("url", ""), hook.get("body", "").encode(),
                       float(hook.get("created_at") or 0), float(hook.get("first_attempt_at") or 0),
                       int(hook.get("attempts") or 0), outcome, float(at) if at else 0.0,
                       json.loads(hook["data"]) if "data" in hook else None, traceparent)

    def done(self, message_id: str, *, result: Delivery, next_at: float, error: str,
             body: bytes, now: float, answered: bool) -> None:
        """Record an attempt (RETRY at `next_at`); `answered`: the destination answered at all
        (with any status)."""
        k = self._keys
        self._scripts.webhook_done(
            keys={"webhook": k.webhook(message_id), "webhooks_due": k.webhooks_due,
                  "webhooks_dead": k.webhooks_dead, "stats": k.stats},
            args={"message_id": message_id, "now": now, "result": result.value,
                  "next_at": next_at,
                  "error": error, "body": body.decode(), "destination_prefix": k.destination(""),
                  "failures_to_hold": FAILURES_TO_HOLD, "hold_base": HOLD_BASE,
                  "hold_max": HOLD_MAX, "answered": int(answered)})

    def dead(self, limit: int = 100) -> list[DeadWebhook]:
        """Webhooks whose deliveries ran out, newest first."""
        out = []
        for raw in self._redis.zrevrange(self._keys.webhooks_dead, 0, limit - 1):
            message_id = as_text(raw)
            hook = {as_text(k): as_text(v)
                    for k, v in self._redis.hgetall(self._keys.webhook(message_id)).items()}
            out.append(DeadWebhook(message_id, hook.get("job_id", ""), hook.get("type", ""),
                                   hook.get("url", ""), int(hook.get("attempts") or 0),
                                   hook.get("last_error", "")))
        return out

    def redrive(self, message_id: str) -> str:
        """Send a dead webhook again (same webhook-id and body, a new retry window)."""
        k = self._keys
        return as_text(self._scripts.webhook_redrive(
            keys={"webhook": k.webhook(message_id), "webhooks_due": k.webhooks_due,
                  "webhooks_dead": k.webhooks_dead},
            args={"message_id": message_id, "now": time.time(), "retention": self._retention}))
