"""Astria job queue: enqueue a prompt spec, get images back from the Redis result backend.

`celery -A worker worker` starts a worker (this module's `app`).
"""

from worker.app import ADVANCE_TASK, SUBMIT_TASK, app
from worker.client import AstriaClient
from worker.errors import (
    AstriaError,
    AstriaQueueError,
    AstriaRejected,
    AstriaUnavailable,
    ConfigError,
    InvalidSpec,
    PromptFailed,
    PromptTimeout,
)
from worker.producer import enqueue, job_result, outcome
from worker.settings import Settings, get_settings
from worker.spec import PromptSpec, parse_spec

__all__ = [
    "ADVANCE_TASK",
    "SUBMIT_TASK",
    "AstriaClient",
    "AstriaError",
    "AstriaQueueError",
    "AstriaRejected",
    "AstriaUnavailable",
    "ConfigError",
    "InvalidSpec",
    "PromptFailed",
    "PromptSpec",
    "PromptTimeout",
    "Settings",
    "app",
    "enqueue",
    "get_settings",
    "job_result",
    "outcome",
    "parse_spec",
]
