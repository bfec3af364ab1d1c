"""`Engine`: the I/O layer of a worker process, where Astria requests are made.

Celery's pool only validates and registers jobs (`worker.accept`). Every HTTP request, to Astria
or to a producer's webhook, runs here, in a thread pool of WORKER_HTTP_CONCURRENCY threads sharing
one connection pool: a request in flight costs a thread blocked on a socket, not a process, so one
2-core host keeps hundreds in flight. Nothing here sleeps for a back-off, a Retry-After, a rate
limit or a grace period: those are due times in Redis, and the dispatcher loop only hands out work
that may run now.

The loop asks the dispatcher (`worker.dispatch`) for as many units as it has free threads, loads
the granted jobs in one round trip, and runs each unit's step (`worker.steps`); it sleeps until
the next token or due time, a free thread, or a newly registered job (`wake`).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import redis

from worker import steps, webhooks
from worker.dispatch import Grant, Unit
from worker.records import Job, JobState, RequestKind
from worker.runtime import Runtime, runtime
from worker.store.jobs import Lease, LeaseLost

log = logging.getLogger("astria.engine")
#: Most units one grant hands out: a slow process does not hoard work another could start.
GRANT_LIMIT = 64


class Engine:
    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._size = rt.settings.worker_http_concurrency
        self._pool = ThreadPoolExecutor(self._size, thread_name_prefix="astria-http")
        self._busy = 0
        self._changed = threading.Condition()
        self._woken = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> Engine:
        self._thread = threading.Thread(target=self._loop, name="astria-dispatch", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop asking for work and let the requests in flight finish (what does not finish in
        time is taken over by another worker when its lease ends)."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._thread:
            self._thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def wake(self) -> None:
        """A job was registered in this process: ask for work now rather than at the next tick."""
        with self._changed:
            self._woken = True
            self._changed.notify_all()

    # --- the dispatcher loop --------------------------------------------------------------------
    def _loop(self) -> None:
        tick = self._rt.settings.scheduler_tick_seconds
        while True:
            with self._changed:
                while not self._stopping and self._busy >= self._size:
                    self._changed.wait()
                if self._stopping:
                    return
                room = min(GRANT_LIMIT, self._size - self._busy)
                self._woken = False
            try:
                grant = self._rt.dispatcher.grant(room)
                self._start(grant)
            except redis.RedisError:
                log.warning("dispatcher: Redis unavailable, trying again", exc_info=True)
                grant = Grant([], "", 1.0)
            if len(grant.units) < room:
                with self._changed:
                    if not self._woken and not self._stopping:
                        self._changed.wait(min(grant.wait, tick))

    def _start(self, grant: Grant) -> None:
        job_units = [u for u in grant.units if u.kind is not RequestKind.WEBHOOK]
        jobs = self._rt.jobs.load_many([u.id for u in job_units]) if job_units else []
        loaded = dict(zip((u.id for u in job_units), jobs, strict=True))
        with self._changed:
            self._busy += len(grant.units)
        for unit in grant.units:
            self._pool.submit(self._run, unit, grant.owner, loaded.get(unit.id))

    def _run(self, unit: Unit, owner: str, job: Job | None) -> None:
        try:
            if job is None:
                webhooks.deliver(self._rt, unit.id)
            else:
                self._step(unit, Lease(unit.id, owner), job)
        except Exception:
            log.exception("unit %s (%s) failed; it is due again when its lease ends", unit.id,
                          unit.kind, extra={"job_id": unit.id})
        finally:
            with self._changed:
                self._busy -= 1
                self._changed.notify_all()

    def _step(self, unit: Unit, lease: Lease, job: Job) -> None:
        try:
            steps.run(self._rt, unit.kind, lease, job)
        except LeaseLost:
            log.info("job %s: lease lost, another worker carries on", job.id)
        except redis.RedisError:
            raise  # Redis is away: the job is due again when its lease ends
        except Exception:
            if job.status is not JobState.MISSING:
                self._rt.jobs.release(lease, job)  # due again at its lease's end
            raise


_engine: Engine | None = None
_lock = threading.Lock()


def start_engine() -> Engine:
    """Start this process's engine (once)."""
    global _engine
    with _lock:
        if _engine is None:
            _engine = Engine(runtime()).start()
        return _engine


def stop_engine() -> None:
    global _engine
    with _lock:
        engine, _engine = _engine, None
    if engine is not None:
        engine.stop()


def wake() -> None:
    """Tell this process's engine, if it runs one, that a job was registered."""
    if _engine is not None:
        _engine.wake()
