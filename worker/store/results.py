"""`ResultFormat`: a job's state as Celery's Redis result backend stores it.

Why not `app.backend.store_result`: it reads the key before writing it, one job at a time. Our
outcome is decided once, atomically, in a Lua script (`worker.store`), and that same script writes
it for the job and its followers, so deciding and delivering cannot be split by a crash. This
module builds exactly what Celery would write: the same key (`celery-task-meta-<id>`), expiry
(`result_expires`), JSON document and exception encoding, and the same PUBLISH that
`AsyncResult.get()` listens for. A failed job's exception is its `worker.errors` class; a revoked
one's is Celery's own `TaskRevokedError`, so `.get()` raises it as Celery producers expect.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from celery import states

from worker.records import Failed, Outcome, Revoked, Succeeded

#: Where a revoked job's exception comes from (`celery.exceptions.TaskRevokedError`).
_REVOKED_ERROR = {"exc_type": "TaskRevokedError", "exc_module": "celery.exceptions"}
#: Where a failed job's exception comes from.
_ERRORS_MODULE = "worker.errors"
#: The state a job shows while its prompt generates; `info` has prompt_id, tune_id, ...
WAITING = "WAITING"


class ResultFormat:
    def __init__(self, ttl: int) -> None:
        self.ttl = ttl
        self._revoked: dict[str, tuple[str, float]] = {}

    @staticmethod
    def prefix(state: str, result: Any) -> str:
        """The result document up to its `task_id` value, which the Lua scripts append per job
        (JSON-escaped by `cjson.encode`), closing the object with `}`."""
        done = datetime.now(UTC).isoformat() if state in states.READY_STATES else None
        meta = {"status": state, "result": result, "traceback": None, "children": [],
                "date_done": done}
        return json.dumps(meta)[:-1] + ', "task_id": '

    def outcome_prefix(self, outcome: Outcome) -> str:
        if isinstance(outcome, Succeeded):
            return self.prefix(states.SUCCESS, outcome.result)
        if isinstance(outcome, Failed):
            return self.prefix(states.FAILURE, {"exc_type": outcome.error,
                                                "exc_message": [outcome.message],
                                                "exc_module": _ERRORS_MODULE})
        return self.prefix(states.REVOKED, {**_REVOKED_ERROR, "exc_message": [outcome.reason]})

    def revoked_prefix(self, reason: str) -> str:
        """The document of a job cancelled before it arrived, made at most once a second per
        reason: every registration passes it, few use it."""
        now = time.monotonic()
        made, until = self._revoked.get(reason, ("", 0.0))
        if now >= until:
            made = self.outcome_prefix(Revoked(reason))
            self._revoked[reason] = (made, now + 1.0)
        return made

    @staticmethod
    def waiting_prefix(info: dict[str, Any]) -> str:
        return ResultFormat.prefix(WAITING, info)


def outcome_status(outcome: Outcome) -> str:
    """The job's final JobState value for an outcome."""
    if isinstance(outcome, Succeeded):
        return "succeeded"
    return "failed" if isinstance(outcome, Failed) else "revoked"


def webhook_type(outcome: Outcome) -> str:
    """The Standard Webhooks event type for an outcome."""
    if isinstance(outcome, Succeeded):
        return "job.succeeded"
    return "job.failed" if isinstance(outcome, Failed) else "job.revoked"
