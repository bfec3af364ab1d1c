"""The producer side: `enqueue(spec) -> job id` validates before sending, `outcome` waits for it,
`cancel` ends it.

Producers that do not import this project send the same message by name:
`Celery(broker=REDIS_URL, backend=REDIS_URL)`
`.send_task("astria.submit_prompt", kwargs={"spec": {...}})`, and cancel with Celery's own
`app.control.revoke(job_id)`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from celery.result import AsyncResult

from worker.broker.app import app
from worker.constants import SUBMIT_TASK
from worker.flow import batching
from worker.flow.accept import check
from worker.flow.batching import OpenBatch, open_batch
from worker.net.tracing import caller_traceparent
from worker.runtime import runtime
from worker.spec import PromptSpec
from worker.store.batches import Batch


def check_spec(spec: Any) -> PromptSpec:
    """What `enqueue` checks before sending (`worker.flow.accept.check`)."""
    return check(runtime(), spec)


def enqueue(spec: Mapping[str, Any]) -> str:
    """Validate the spec (`check_spec`), send it, return the job id.

    A spec with `expires_in` also sets Celery's own `expires` on the message; a caller inside
    an OpenTelemetry span sends it as the `traceparent` header (the job's spans are its
    children: `worker.net.tracing`)."""
    parsed = check_spec(spec)
    return str(app.send_task(SUBMIT_TASK, kwargs={"spec": dict(spec)},
                             expires=parsed.expires_in, headers=_trace_headers()).id)


def _trace_headers() -> dict[str, str] | None:
    traceparent = caller_traceparent()
    return {"traceparent": traceparent} if traceparent else None


def enqueue_batch(specs: Sequence[Mapping[str, Any]], *, callback: str | None = None,
                  batch_id: str | None = None) -> OpenBatch:
    """Validate every spec (one tenant for all), create the batch, send its members; return
    its id and its members' job ids (`specs[n]` is `job_ids[n]`). One `batch.completed`
    webhook goes to `callback` when the last member is decided. Calling it again with the same
    `batch_id` and specs resumes an interrupted send (members already sent are not sent twice).
    """
    opened = open_batch(runtime(), specs, callback=callback, batch_id=batch_id)
    headers = _trace_headers()
    for job_id, raw, spec in zip(opened.job_ids, specs, opened.specs, strict=True):
        app.send_task(SUBMIT_TASK, task_id=job_id, expires=spec.expires_in,
                      kwargs={"spec": dict(raw), "batch_id": opened.id}, headers=headers)
    return opened


def batch(batch_id: str) -> Batch | None:
    """The batch's counts (one read), None when there is no such batch (or it expired)."""
    return runtime().batches.load(batch_id)


def cancel_batch(batch_id: str, *, delete_prompt: bool = False) -> dict[str, str]:
    """Cancel every member of the batch that has no outcome (one not arrived yet is refused when
    it does); job id -> what `cancel` said."""
    return batching.cancel_batch(runtime(), batch_id, delete_prompt=delete_prompt)


def job_result(job_id: str) -> AsyncResult:
    """The job's Celery result: `.state`, `.info`, `.get(timeout=...)`."""
    return AsyncResult(job_id, app=app)


def outcome(job_id: str, timeout: float | None = None) -> dict[str, Any]:
    """Block until the job is done; return its outcome or raise its typed error (a cancelled
    job raises Celery's `TaskRevokedError`)."""
    result: dict[str, Any] = job_result(job_id).get(timeout=timeout, propagate=True)
    return result


def cancel(job_id: str, *, delete_prompt: bool = False) -> str:
    """Cancel a job: not yet POSTed, it never is; waiting, it stops polling; the result backend
    says REVOKED at once. With `delete_prompt`, a prompt it created is deleted at Astria.
    Returns 'revoked', or the state the job kept ('succeeded', 'failed', ...)."""
    return runtime().jobs.cancel(job_id, delete_prompt=delete_prompt)


def cancel_tenant(tenant: str, *, delete_prompt: bool = False) -> dict[str, str]:
    """Cancel every job of a tenant that has no outcome yet; job id -> what `cancel` said."""
    jobs = runtime().jobs
    return {job_id: jobs.cancel(job_id, delete_prompt=delete_prompt)
            for job_id in jobs.live_jobs(tenant)}
