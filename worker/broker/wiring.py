"""What only an Astria worker does, wired when its worker starts, never when `worker` is
imported: a producer, or a service that runs a Celery of its own, imports us with no side
effect (no current app, no signal, no control command).

`AstriaWorker` is a step of this app's worker blueprint (`app.steps["worker"]`), so it exists
only in a worker of this app. Built before the pool forks, it:
- refuses to start without a valid configuration and ASTRIA_API_KEY, or on a Redis that evicts
  keys (REDIS_ALLOW_EVICTION=true: start, and say so loudly);
- puts JSON on the worker's log handlers (LOG_FORMAT=json);
- wraps Celery's `revoke` control command and records discarded messages
  (`worker.broker.control`);
- runs the engine (`worker.flow.engine`): in the first prefork child (index 0, kept by its
  replacement if it dies), or in the worker's own process with the threads, gevent or solo
  pool. Not in prefork's main process: that one consumes the broker for every child (measured:
  the main process with the engine used 7.2 ms of CPU per job, the children 0.7).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import redis
from billiard.process import current_process
from celery import bootsteps
from celery.signals import worker_process_init, worker_process_shutdown

from worker import logs
from worker.broker import control
from worker.edge import health
from worker.errors import ConfigError
from worker.flow import engine
from worker.net.tracing import require_sdk
from worker.runtime import runtime
from worker.settings import get_settings

log = logging.getLogger("astria.app")


class AstriaWorker(bootsteps.StartStopStep):
    requires: ClassVar[set[str]] = {"celery.worker.components:Pool"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        _refuse_to_start_unfit()
        logs.use_json_handlers()
        control.install()
        self._here = "prefork" not in getattr(parent.pool_cls, "__module__", "")
        if not self._here:
            worker_process_init.connect(_prefork_child, weak=False)
            worker_process_shutdown.connect(_prefork_child_exits, weak=False)

    def start(self, parent: Any) -> None:
        if self._here:
            engine.start_engine(runtime())

    def stop(self, parent: Any) -> None:
        if self._here:
            engine.stop_engine()

    shutdown = stop


def _refuse_to_start_unfit() -> None:
    try:
        get_settings().api_key()
        if get_settings().tracing_on:
            require_sdk()
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


def _prefork_child(**_: Any) -> None:
    """A prefork child has Redis connections of its own; the first one runs the engine."""
    runtime.cache_clear()
    engine.forget_after_fork()
    if getattr(current_process(), "index", None) == 0:
        engine.start_engine(runtime())


def _prefork_child_exits(**_: Any) -> None:
    engine.stop_engine()
