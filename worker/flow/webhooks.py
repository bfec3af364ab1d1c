"""Webhooks to producers, signed per Standard Webhooks (standardwebhooks.com).

When a job ends, however it ended (Astria's callback, a poll, a failure, the deadline, a cancel),
the script that decides its outcome also queues a webhook for the spec's `callback` URL, so the
webhook cannot be lost between the two. A worker then POSTs:

    webhook-id: msg_<job id>              (the same on every retry: receivers dedupe on it)
    webhook-timestamp: <unix seconds of this attempt>
    webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body" with the tenant's secret>
                                          (TENANTS_FILE, else WEBHOOK_SECRET; one per secret
                                          while a rotation lasts)
    {"type": "job.succeeded" | "job.failed" | "job.revoked", "timestamp": "<the outcome's time>",
     "data": <the outcome, with job_id> | {"job_id", "error", "message"} | {"job_id", "reason"}}
    (schema/webhook-event.schema.json)

A batch's (`worker.store.batches`) is `webhook-id: msg_batch_<batch id>`, `{"type":
"batch.completed", "timestamp": "<when its last member was decided>", "data": {"batch_id",
"counts": {"size", "queued", "waiting", "succeeded", "failed", "revoked", "cost_mc"}}}`.

A non-2xx answer or a timeout is retried under the same id and body
(`worker.astria.retry.webhook_policy`: first retry within WEBHOOK_FIRST_RETRY_SECONDS, then
exponential back-off with jitter, for WEBHOOK_RETRY_FOR_SECONDS); the waits are due times in Redis,
never a sleeping worker. Deliveries that ran out are dead letters: `astria-queue webhooks list`,
`astria-queue webhooks redrive`. Signing and verifying use the `standardwebhooks` package, the
specification's own.

An endpoint is whatever a producer wrote, so deliveries cannot take the pool: they run on their
own WEBHOOK_CONCURRENCY threads, each attempt within a total deadline on a checked address
(`worker.net.egress`), a few attempts in flight per destination, and a destination that keeps not
answering is held back (`worker.store.webhooks`). A destination that is not public is refused and
the webhook is dead at once (`worker.net.addresses`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from standardwebhooks import Webhook as Signer

from worker.astria.retry import next_attempt_in, webhook_policy
from worker.errors import AstriaQueueError
from worker.net.tracing import current_traceparent, note
from worker.records import Failed, Outcome, Succeeded
from worker.runtime import Runtime
from worker.store.types import Delivery
from worker.store.webhooks import Webhook

log = logging.getLogger("astria.webhooks")


class WebhookFailed(AstriaQueueError):
    """A delivery attempt got no 2xx answer."""


def event_body(job_id: str, event_type: str, outcome: Outcome, finished_at: float) -> bytes:
    """A job's webhook body: the same bytes on every attempt."""
    if isinstance(outcome, Succeeded):
        data: dict[str, Any] = {**outcome.result, "job_id": job_id}
    elif isinstance(outcome, Failed):
        data = {"job_id": job_id, "error": outcome.error, "message": outcome.message}
    else:
        data = {"job_id": job_id, "reason": outcome.reason}
    return webhook_body(event_type, data, finished_at)


def webhook_body(event_type: str, data: Mapping[str, Any], finished_at: float) -> bytes:
    """A webhook's body (schema/webhook-event.schema.json): the same bytes on every attempt."""
    timestamp = datetime.fromtimestamp(finished_at, UTC).isoformat(timespec="milliseconds")
    body = {"type": event_type, "timestamp": timestamp.replace("+00:00", "Z"), "data": data}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def signed_headers(secrets: list[str], message_id: str, body: bytes, at: float | None = None
                   ) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt: a signature by each secret (newest
    first; several while a rotation lasts, and a receiver accepts any one)."""
    when = datetime.fromtimestamp(int(time.time() if at is None else at), UTC)
    signatures = " ".join(Signer(s).sign(message_id, when, body.decode()) for s in secrets)
    return {"webhook-id": message_id, "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": signatures, "content-type": "application/json"}


def verify(headers: Mapping[str, str], body: bytes | str, secret: str) -> Any:
    """Check a webhook's signature and timestamp (within 5 minutes); return its parsed body.

    Raises `standardwebhooks.WebhookVerificationError` when the webhook is not genuine."""
    return Signer(secret).verify(body, dict(headers))


def deliver(rt: Runtime, message_id: str) -> None:
    """One delivery attempt of a queued webhook (`worker.net.egress`: checked address, total
    deadline, a few KiB of answer); the result goes back to Redis. Traced, the attempt is a
    span of its job's trace and carries that span's `traceparent` to the producer."""
    hook = rt.webhooks.load(message_id, traced=rt.tracing.on)
    with rt.tracing.spans("astria_queue.webhook",
                          [(hook.job_id, hook.traceparent)] if hook else []):
        _attempt(rt, message_id, hook)


def _attempt(rt: Runtime, message_id: str, hook: Webhook | None) -> None:
    now = time.time()
    body = hook.body if hook else b""
    if hook and not body and hook.outcome is not None:
        body = event_body(hook.job_id, hook.type, hook.outcome, hook.finished_at or now)
    elif hook and not body and hook.data is not None:  # a batch's, or an event's of a job
        body = webhook_body(hook.type, hook.data, hook.finished_at or now)
    retry_for = rt.settings.webhook_retry_for_seconds
    error, next_at, answered = "", 0.0, False
    secrets = rt.settings.webhook_keys(hook.tenant) if hook else []
    if hook is None or not body:
        result, error = Delivery.DEAD, "the job's outcome is gone (past JOB_RETENTION_SECONDS)"
    elif not secrets:
        result = Delivery.DEAD
        error = (f"no webhook secret for tenant {hook.tenant!r} (TENANTS_FILE, WEBHOOK_SECRET): "
                 "webhooks cannot be signed")
    elif not hook.first_attempt_at and now - hook.created_at > retry_for:
        result = Delivery.DEAD
        error = "its retry window ended while its destination was held back"
    else:
        headers = signed_headers(secrets, message_id, body, now)
        if rt.tracing.on and (traceparent := current_traceparent()):
            headers["traceparent"] = traceparent
        answer = rt.egress.post(hook.url, body, headers,
                                deadline=rt.settings.webhook_timeout_seconds)
        note(**{"http.response.status_code": answer.status or 0, "astria_queue.webhook_id":
                message_id})
        error, result, answered = answer.error, Delivery.DELIVERED, answer.status is not None
        if answer.refused:
            result = Delivery.DEAD
        elif error:
            delay = next_attempt_in(webhook_policy(rt.settings), attempt=hook.attempts + 1,
                                    started_at=hook.first_attempt_at or now,
                                    error=WebhookFailed(error), now=now)
            result = Delivery.DEAD if delay is None else Delivery.RETRY
            next_at = now + (delay or 0.0)
    rt.webhooks.done(message_id, result=result, next_at=next_at, error=error, body=body,
                     now=now, answered=answered)
    job_id = hook.job_id if hook else None
    log.info("webhook %s for job %s: %s%s", message_id, job_id, result,
             f" ({error})" if error else "", extra={"job_id": job_id})
