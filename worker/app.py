"""The Celery app: broker and result backend on REDIS_URL, JSON only, settings for crash safety.

Configuration is read when the app is first used, not when this module is imported, so a process
can set its environment (the demo, the tests) after importing `worker`.

Why these settings (see README "Crash safety"):
- `task_acks_late` + `task_reject_on_worker_lost`: a message is acknowledged only after its task
  ran, so a worker killed mid-task leaves it to be delivered again.
- `visibility_timeout` (BROKER_VISIBILITY_TIMEOUT) exceeds `task_time_limit`; nothing we schedule
  lives in the broker (waiting jobs live in Redis' `due` set), so it need not exceed a generation.
- Unacknowledged messages of a dead worker are swept back every few seconds, not every 100 s.
- `worker.transport` consumes with an atomic move, so no message is lost between kombu's pop and
  its bookkeeping; it wants one queue and no priority steps, so both tasks share `celery` (FIFO:
  polls and submissions take turns, neither starves the other).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_init
from kombu.entity import Queue

from worker import logs  # noqa: F401  (connects the JSON log formatter)
from worker.errors import ConfigError
from worker.scheduler import DueJobScheduler
from worker.settings import Settings, get_settings

SUBMIT_TASK = "astria.submit_prompt"
ADVANCE_TASK = "astria.advance"
DEFAULT_QUEUE = "celery"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from ours."""
    return {
        "broker_url": settings.redis_url,
        "result_backend": settings.redis_url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_time_limit": settings.task_time_limit,
        "task_queues": (Queue(DEFAULT_QUEUE),),
        "task_default_queue": DEFAULT_QUEUE,
        "broker_transport": "worker.transport:Transport",
        "worker_prefetch_multiplier": 4,
        "worker_send_task_events": settings.worker_task_events,
        "task_send_sent_event": settings.worker_task_events,
        "result_expires": settings.job_retention_seconds,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "broker_transport_options": {
            "visibility_timeout": settings.broker_visibility_timeout,
            "unacked_restore_interval": min(10.0, settings.broker_visibility_timeout / 4),
            "unacked_restore_throttle": 1,
            "priority_steps": [0],
            "socket_timeout": 15,
            "health_check_interval": 15,
        },
        "result_backend_transport_options": {"retry_policy": {"timeout": 30.0}},
        "redis_socket_timeout": 15,
        "redis_backend_health_check_interval": 15,
        "redis_retry_on_timeout": True,
    }


class AstriaCelery(Celery):
    def on_configure(self) -> None:
        """A method, not the signal: a signal would log a bad setting and carry on with defaults."""
        self.config_from_object(celery_config(get_settings()))


app = AstriaCelery("astria", include=["tasks"])
app.steps["consumer"].add(DueJobScheduler)


@worker_init.connect
def _require_api_key(**_: Any) -> None:
    """Refuse to start a worker without a valid configuration and ASTRIA_API_KEY."""
    try:
        get_settings().api_key()
    except ConfigError as exc:
        raise SystemExit(f"astria worker: {exc}") from None
