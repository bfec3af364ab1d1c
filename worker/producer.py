"""The producer side: `enqueue(spec) -> job id` validates before sending; `outcome` waits for it.

Producers that do not import this project send the same message by name:
`Celery(broker=REDIS_URL, backend=REDIS_URL)`
`.send_task("astria.submit_prompt", kwargs={"spec": {...}})`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery.result import AsyncResult

from worker.app import SUBMIT_TASK, app
from worker.settings import get_settings
from worker.spec import parse_spec


def enqueue(spec: Mapping[str, Any]) -> str:
    """Validate the spec (InvalidSpec names the field and the rule), send it, return the job id."""
    parse_spec(dict(spec), sdxl_base_tune_id=get_settings().astria_sdxl_base_tune_id)
    return str(app.send_task(SUBMIT_TASK, kwargs={"spec": dict(spec)}).id)


def job_result(job_id: str) -> AsyncResult:
    """The job's Celery result: `.state`, `.info`, `.get(timeout=...)`."""
    return AsyncResult(job_id, app=app)


def outcome(job_id: str, timeout: float | None = None) -> dict[str, Any]:
    """Block until the job is done; return its outcome or raise its typed error."""
    result: dict[str, Any] = job_result(job_id).get(timeout=timeout, propagate=True)
    return result
