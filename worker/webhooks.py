"""Webhooks to producers, signed per Standard Webhooks (standardwebhooks.com).

When a job ends, however it ended (Astria's callback, a poll, a failure, the deadline, a cancel),
the script that decides its outcome also queues a webhook for the spec's `callback` URL, so the
webhook cannot be lost between the two. A worker then POSTs:

    webhook-id: msg_<job id>              (the same on every retry: receivers dedupe on it)
    webhook-timestamp: <unix seconds of this attempt>
    webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body" with WEBHOOK_SECRET>
    {"type": "job.succeeded" | "job.failed" | "job.revoked", "timestamp": "<the outcome's time>",
     "data": <the outcome, with job_id> | {"job_id", "error", "message"} | {"job_id", "reason"}}

A non-2xx answer or a timeout is retried under the same id and body (`worker.retry.webhook_policy`:
first retry within WEBHOOK_FIRST_RETRY_SECONDS, then exponential back-off with jitter, for
WEBHOOK_RETRY_FOR_SECONDS); the waits are due times in Redis, never a sleeping worker. Deliveries
that ran out are dead letters: `astria-queue webhooks list`, `astria-queue webhooks redrive`.
Signing and verifying use the `standardwebhooks` package, the specification's own.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import requests
from standardwebhooks import Webhook

from worker.errors import AstriaQueueError
from worker.records import Failed, Outcome, Succeeded, as_text, outcome_from_json
from worker.retry import next_attempt_in, webhook_policy
from worker.runtime import Runtime

log = logging.getLogger("astria.webhooks")


class WebhookFailed(AstriaQueueError):
    """A delivery attempt got no 2xx answer."""


def event_body(job_id: str, event_type: str, outcome: Outcome, finished_at: float) -> bytes:
    """The webhook's body: the same bytes on every attempt."""
    if isinstance(outcome, Succeeded):
        data: dict[str, Any] = {**outcome.result, "job_id": job_id}
    elif isinstance(outcome, Failed):
        data = {"job_id": job_id, "error": outcome.error, "message": outcome.message}
    else:
        data = {"job_id": job_id, "reason": outcome.reason}
    timestamp = datetime.fromtimestamp(finished_at, UTC).isoformat(timespec="milliseconds")
    body = {"type": event_type, "timestamp": timestamp.replace("+00:00", "Z"), "data": data}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def signed_headers(secret: str, message_id: str, body: bytes, at: float | None = None
                   ) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt."""
    when = datetime.fromtimestamp(int(time.time() if at is None else at), UTC)
    return {"webhook-id": message_id, "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": Webhook(secret).sign(message_id, when, body.decode()),
            "content-type": "application/json"}


def verify(headers: Mapping[str, str], body: bytes | str, secret: str) -> Any:
    """Check a webhook's signature and timestamp (within 5 minutes); return its parsed body.

    Raises `standardwebhooks.WebhookVerificationError` when the webhook is not genuine."""
    return Webhook(secret).verify(body, dict(headers))


def deliver(rt: Runtime, message_id: str) -> None:
    """One delivery attempt of a queued webhook; the outcome goes back to Redis."""
    k = rt.keys
    hook = {as_text(a): as_text(b) for a, b in rt.redis.hgetall(k.webhook(message_id)).items()}
    now = time.time()
    body = hook.get("body", "").encode()
    if hook and not body:
        raw, finished = rt.redis.hmget(k.job(hook["source"]), ["outcome", "finished_at"])
        if raw:
            body = event_body(hook["job_id"], hook["type"], outcome_from_json(as_text(raw)),
                              float(as_text(finished)) if finished else now)
    secret = rt.settings.webhook_key()
    error, next_at = "", 0.0
    if not hook or not body:
        result, error = "dead", "the job's outcome is gone (past JOB_RETENTION_SECONDS)"
    elif secret is None:
        result, error = "dead", "WEBHOOK_SECRET is not set: webhooks cannot be signed"
    else:
        error = _post(rt, hook["url"], signed_headers(secret, message_id, body, now), body)
        result = "delivered"
        if error:
            attempt = int(hook.get("attempts") or 0) + 1
            started = float(hook.get("first_attempt_at") or now)
            delay = next_attempt_in(webhook_policy(rt.settings), attempt=attempt,
                                    started_at=started, error=WebhookFailed(error), now=now)
            result = "dead" if delay is None else "retry"
            next_at = now + (delay or 0.0)
    rt.scripts.webhook_done(
        keys={"webhook": k.webhook(message_id), "webhooks_due": k.webhooks_due,
              "webhooks_dead": k.webhooks_dead},
        args={"message_id": message_id, "now": now, "result": result,
              "next_at": next_at, "error": error,
              "body": body.decode()})
    log.info("webhook %s for job %s: %s%s", message_id, hook.get("job_id"), result,
             f" ({error})" if error else "", extra={"job_id": hook.get("job_id")})


def _post(rt: Runtime, url: str, headers: dict[str, str], body: bytes) -> str:
    """POST once; '' when the receiver answered 2xx, else what went wrong."""
    try:
        answer = rt.http.post(url, data=body, headers=headers, allow_redirects=False,
                              timeout=rt.settings.webhook_timeout_seconds)
    except requests.RequestException as exc:
        return type(exc).__name__
    return "" if 200 <= answer.status_code < 300 else f"HTTP {answer.status_code}"
