"""JSON logs (LOG_FORMAT=json): one object a line with the job's fields, for log pipelines."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from worker.settings import get_settings

FIELDS = ("job_id", "tune_id", "prompt_id", "attempt", "outcome", "task_id", "task_name")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: getattr(record, k) for k in FIELDS if hasattr(record, k)})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def use_json_handlers() -> None:
    """With LOG_FORMAT=json, the handlers Celery set up for this worker (the root logger's and
    its task logger's) write JSON lines. Called by the worker once its logging is set up, not on
    import: importing `worker` leaves a host process's logging alone."""
    if get_settings().log_format != "json":
        return
    for logger in (logging.getLogger(), logging.getLogger("celery.task")):
        for handler in logger.handlers:
            handler.setFormatter(JsonFormatter())
