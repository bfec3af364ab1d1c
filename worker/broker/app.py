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

Every worker runs one `Engine` (`worker.flow.engine`), where the Astria requests are made: in the
first prefork child (index 0), or in the worker's own process with the threads, gevent or solo
pool. The other pool processes only validate and register jobs. The engine is not in prefork's
main process because that one consumes the broker for every child: it is busy enough (measured:
the main process with the engine used 7.2 ms of CPU per job, the children 0.7).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import redis
from billiard.process import current_process
from celery import Celery, bootsteps
from celery.signals import worker_init, worker_process_init, worker_process_shutdown
from kombu.entity import Queue

from worker import logs  # noqa: F401  (JSON log format)
from worker.broker import control  # noqa: F401  (the revoke hook)
from worker.constants import QUEUE
from worker.edge import health
from worker.errors import ConfigError
from worker.flow import engine
from worker.runtime import runtime
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
        "task_queues": (Queue(QUEUE),),
        "task_default_queue": QUEUE,
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


class EngineStep(bootsteps.StartStopStep):
    """Runs the worker's engine in its own process, unless the prefork pool's first child
    does."""

    requires: ClassVar[set[str]] = {"celery.worker.components:Pool"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._here = "prefork" not in getattr(parent.pool_cls, "__module__", "")

    def start(self, parent: Any) -> None:
        if self._here:
            engine.start_engine(runtime())

    def stop(self, parent: Any) -> None:
        if self._here:
            engine.stop_engine()

    shutdown = stop


log = logging.getLogger("astria.app")
app = AstriaCelery("astria", include=["tasks"])
app.steps["worker"].add(EngineStep)


@worker_init.connect
def _refuse_to_start_unfit(sender: Any = None, **_: Any) -> None:
    """Refuse to start an Astria worker without a valid configuration and ASTRIA_API_KEY, or on
    a Redis that evicts keys (REDIS_ALLOW_EVICTION=true: start, and say so loudly)."""
    if getattr(sender, "app", app) is not app:
        return
    try:
        get_settings().api_key()
    except ConfigError as exc:
        raise SystemExit(f"astria worker: {exc}") from None
    try:
        problem = health.eviction_problem(runtime())
    except redis.RedisError as exc:
        log.warning("could not read Redis's maxmemory-policy (%s): not checked",
                    type(exc).__name__)
        return
    if problem and not get_settings().redis_allow_eviction:
        raise SystemExit(f"astria worker: {problem}")
    if problem:
        log.warning("REDIS_ALLOW_EVICTION=true: %s", problem)


@worker_process_init.connect
def _prefork_child(**_: Any) -> None:
    """A prefork child has Redis connections of its own; the first one (index 0, kept by its
    replacement if it dies) runs the engine."""
    runtime.cache_clear()
    engine.forget_after_fork()
    if getattr(current_process(), "index", None) == 0:
        engine.start_engine(runtime())


@worker_process_shutdown.connect
def _prefork_child_exits(**_: Any) -> None:
    engine.stop_engine()
