"""`ResultFormat`: a job's outcome as Celery's Redis result backend stores it.

Why not `app.backend.store_result`: it reads the key before writing it (GET, then SET + PUBLISH),
one outcome at a time. Our outcome is decided once, atomically, in a Lua script (`worker.jobs`),
and that same script writes it for the job and its followers, so deciding and delivering cannot
be split by a crash and cost one round trip. This module builds exactly what Celery would write:
the same key (`celery-task-meta-<id>`), expiry (`result_expires`), JSON document, and the same
PUBLISH on the key that `AsyncResult.get()` listens for.
"""

from __future__ import annotations

import json
from typing import Any

from celery import Celery, states

from worker import errors


class ResultFormat:
    def __init__(self, app: Celery) -> None:
        self._app = app
        backend = app.backend
        prefix = backend.task_keyprefix
        self.key_prefix: str = prefix.decode() if isinstance(prefix, bytes) else str(prefix)
        self.ttl = int(backend.expires or 0)

    def meta_prefix(self, state: str, result: Any) -> str:
        """The result document up to its `task_id` value, which the Lua script appends per job
        (JSON-escaped by `cjson.encode`), closing the object with `}`."""
        date_done = self._app.now().isoformat() if state in states.READY_STATES else None
        meta = {"status": state, "result": result, "traceback": None, "children": [],
                "date_done": date_done}
        return json.dumps(meta)[:-1] + ', "task_id": '

    def outcome_prefix(self, outcome: dict[str, Any]) -> str:
        """The document for a decided outcome: the job's result, or its error as Celery encodes
        an exception (so `AsyncResult.get()` raises the matching `worker.errors` class)."""
        if outcome["state"] == states.SUCCESS:
            return self.meta_prefix(states.SUCCESS, outcome["result"])
        error = outcome["error"]
        cls = getattr(errors, error["type"], errors.AstriaQueueError)
        return self.meta_prefix(states.FAILURE,
                                self._app.backend.prepare_exception(cls(error["message"])))

    def document(self, prefix: str, job_id: str) -> str:
        """What the Lua scripts build from a prefix, for writes made from Python."""
        return prefix + json.dumps(job_id) + "}"
