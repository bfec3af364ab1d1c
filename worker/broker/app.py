"""The Celery app: broker and result backend on REDIS_URL, JSON only, settings for crash safety.

Configuration is read when the app is first used, not when this module is imported, so a process
can set its environment (the demo, the tests) after importing `worker`.

Why these settings (see README "Exactly once and crash safety"):
- `task_acks_late` + `task_reject_on_worker_lost`: a message is acknowledged only after its task
  ran, so a worker killed mid-task leaves it to be delivered again.
- `visibility_timeout` (BROKER_VISIBILITY_TIMEOUT) exceeds `task_time_limit`; nothing we schedule
  lives in the broker (jobs wait in Redis' queues and due sets), so it need not exceed anything
  else.
- `worker.broker.transport` consumes with an atomic move, so no message is lost between kombu's
  pop and its bookkeeping; it wants one queue and no priority steps.

Importing this module has no effect on other apps: what a worker does (the engine, the revoke
hook, JSON logs, the start-up checks) is wired by `worker.broker.wiring` when a worker of this
app starts.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.entity import Queue

from worker.broker.wiring import AstriaWorker
from worker.settings import Settings, get_settings
from worker.store.connections import sentinel_hosts


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from ours."""
    transport_options: dict[str, Any] = {
        "visibility_timeout": settings.broker_visibility_timeout,
        "unacked_restore_interval": min(10.0, settings.broker_visibility_timeout / 4),
        "unacked_restore_throttle": 1,
        "priority_steps": [0],
        "socket_timeout": 15,
        "health_check_interval": 15,
        "max_connections": 64,
    }
    backend_options: dict[str, Any] = {"retry_policy": {"timeout": 30.0}}
    transport = "worker.broker.transport:Transport"
    if settings.redis_url.startswith("sentinel://"):
        transport = "worker.broker.transport:SentinelTransport"
        transport_options["master_name"] = settings.redis_sentinel_master
        backend_options["master_name"] = settings.redis_sentinel_master
        _, _, password = sentinel_hosts(settings.redis_url)
        if password:
            transport_options["sentinel_kwargs"] = backend_options["sentinel_kwargs"] = {
                "password": password}
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
        "task_queues": (Queue(settings.broker_queue),),
        "task_default_queue": settings.broker_queue,
        "broker_transport": transport,
        "worker_prefetch_multiplier": 4,
        "worker_send_task_events": settings.worker_task_events,
        "task_send_sent_event": settings.worker_task_events,
        "result_expires": settings.job_retention_seconds,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "broker_transport_options": transport_options,
        "result_backend_transport_options": backend_options,
        "redis_socket_timeout": 15,
        "redis_backend_health_check_interval": 15,
        "redis_retry_on_timeout": True,
    }


class AstriaCelery(Celery):
    def on_configure(self) -> None:
        """A method, not the signal: a signal would log a bad setting and carry on with defaults."""
        self.config_from_object(celery_config(get_settings()))


#: Not the current app: a process that imports us to enqueue keeps its own (see wiring).
app = AstriaCelery("astria", include=["tasks"], set_as_current=False)
app.steps["worker"].add(AstriaWorker)
