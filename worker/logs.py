"""One log configuration for every process: the worker, the receiver under gunicorn, the API
under uvicorn, the CLI. LOG_FORMAT=json writes one JSON object a line (python-json-logger): `ts`,
`level`, `logger`, `message`, and the job's fields where a line has them (`job_id`, `tenant`,
`lane`, `attempt`, `prompt_id`, `tune_id`, `outcome`, ...: each passed as `extra`); LOG_FORMAT=text
the usual lines. LOG_LEVEL sets the level (INFO)."""

from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from worker.settings import get_settings

TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def formatter() -> logging.Formatter:
    """The formatter LOG_FORMAT asks for."""
    if get_settings().log_format != "json":
        return logging.Formatter(TEXT)
    return _JobJsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                             rename_fields={"asctime": "ts", "levelname": "level",
                                            "name": "logger"},
                             datefmt="%Y-%m-%dT%H:%M:%S%z", json_default=str)


class _JobJsonFormatter(JsonFormatter):
    """A line about a job carries that job's trace and span ids, where the work running has a
    span of its own for it (a listing serves many jobs: tracing puts `_job_span_ids` on the
    record, `worker.net.tracing`); other lines the current span's."""

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord,
                   message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        ids_of = getattr(record, "_job_span_ids", None)
        ids = ids_of(getattr(record, "job_id", None)) if ids_of else None
        if ids:
            log_data["trace_id"], log_data["span_id"] = ids


def configure() -> None:
    """For a process that sets up no logging of its own (the API, the receiver): one handler
    on the root logger, to stderr; servers' own loggers propagate to it."""
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter())
    root.addHandler(handler)
    root.setLevel(get_settings().log_level)


def use_json_handlers() -> None:
    """In a worker: Celery set up its handlers (the root logger's and its task logger's); they
    take our formatter. Called by the worker once its logging is set up, not on import:
    importing `worker` leaves a host process's logging alone."""
    if get_settings().log_format != "json":
        return
    for logger in (logging.getLogger(), logging.getLogger("celery.task")):
        for handler in logger.handlers:
            handler.setFormatter(formatter())
