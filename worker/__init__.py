"""Astria job queue: enqueue a prompt spec, get images back from the Redis result backend.

`celery -A worker worker` starts a worker (this package's `app`). The public surface:
"""

from worker.astria.client import AstriaClient
from worker.broker.app import app
from worker.constants import QUEUE, SUBMIT_TASK
from worker.errors import (
    AstriaError,
    AstriaQueueError,
    AstriaRejected,
    AstriaUnavailable,
    ConfigError,
    DestinationRefused,
    InternalError,
    InvalidMessage,
    InvalidSpec,
    PromptFailed,
    PromptTimeout,
    TuneExpired,
)
from worker.flow.webhooks import verify as verify_webhook
from worker.producer import (
    batch,
    cancel,
    cancel_batch,
    cancel_tenant,
    check_spec,
    enqueue,
    enqueue_batch,
    job_result,
    outcome,
)
from worker.records import JobState, Lane
from worker.settings import Settings, get_settings
from worker.spec import PromptSpec, parse_spec

__all__ = [
    "QUEUE",
    "SUBMIT_TASK",
    "AstriaClient",
    "AstriaError",
    "AstriaQueueError",
    "AstriaRejected",
    "AstriaUnavailable",
    "ConfigError",
    "DestinationRefused",
    "InternalError",
    "InvalidMessage",
    "InvalidSpec",
    "JobState",
    "Lane",
    "PromptFailed",
    "PromptSpec",
    "PromptTimeout",
    "Settings",
    "TuneExpired",
    "app",
    "batch",
    "cancel",
    "cancel_batch",
    "cancel_tenant",
    "check_spec",
    "enqueue",
    "enqueue_batch",
    "get_settings",
    "job_result",
    "outcome",
    "parse_spec",
    "verify_webhook",
]
