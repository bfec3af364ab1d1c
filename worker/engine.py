"""`Engine`: the I/O layer of a worker, where Astria requests are made.

Celery's pool only validates and registers jobs (`worker.accept`). Every HTTP request, to Astria
or to a producer's webhook, runs here, in the worker's main process, in a thread pool of
WORKER_HTTP_CONCURRENCY threads sharing one connection pool: a request in flight costs a thread
blocked on a socket, not a process, so one 2-core host keeps hundreds in flight. Nothing here
sleeps for a back-off, a Retry-After, a rate limit or a grace period: those are due times in
Redis, and the dispatcher loop only hands out work that may run now.

The loop asks the dispatcher (`worker.dispatch`) for as many units as it has free threads, loads
the granted jobs in one round trip, records their POSTs in another, and hands each unit to the
pool (`worker.steps`; polls of one tune go together, `worker.wait.poll_many`, as do the jobs
whose callbacks came, `worker.wait.apply_callbacks`). It sleeps until the next token or due
time, a free thread, or a message on the wake channel, which a registration, a callback or a
redrive publishes from any process.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis

from worker import steps, submit, wait, webhooks
from worker.dispatch import Grant, Unit
from worker.errors import InvalidSpec
from worker.fdlimit import raise_open_file_limit
from worker.records import Job, JobState, RequestKind
from worker.runtime import Runtime, runtime
from worker.store.types import Lease, LeaseLost

log = logging.getLogger("astria.engine")
#: Most units one grant hands out: a slow process does not hoard work another could start.
GRANT_LIMIT = 64
#: After a wake, wait this long for more jobs to register, so that one grant serves a burst of
#: new jobs rather than one grant (one Lua call) each.
GATHER_SECONDS = 0.05


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
        threading.Thread(target=self._listen, name="astria-wake", daemon=True).start()
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
        """New work was published: ask for work now rather than at the next tick."""
        with self._changed:
            self._woken = True
            self._changed.notify_all()

    def _listen(self) -> None:
        """Wake on every message of the wake channel (a lost one only delays work to the next
        tick)."""
        while not self._stopping:
            try:
                pubsub = self._rt.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self._rt.keys.wake)
                while not self._stopping:
                    if pubsub.get_message(timeout=1.0):
                        self.wake()
            except redis.RedisError:
                log.warning("wake channel: Redis unavailable, listening again", exc_info=True)
                time.sleep(1.0)

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
                    if self._woken and not self._stopping:
                        self._changed.wait(GATHER_SECONDS)

    def _start(self, grant: Grant) -> None:
        """Load the granted jobs in one round trip, record their POSTs in another, and hand
        the units to the pool; polls of waiting prompts on one tune go as one listing."""
        job_units = [u for u in grant.units if u.kind is not RequestKind.WEBHOOK]
        jobs = self._rt.jobs.load_many([u.id for u in job_units]) if job_units else []
        loaded = dict(zip((u.id for u in job_units), jobs, strict=True))
        tasks: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        handled: set[str] = set()
        for group in self._poll_groups(grant, job_units, loaded):
            tasks.append((self._run_polls, (group,)))
            handled |= {lease.job_id for lease, _ in group}
        called_back = [(Lease(u.id, grant.owner), loaded[u.id]) for u in job_units
                       if loaded[u.id].status is JobState.WAITING and loaded[u.id].callback_prompt]
        if called_back:
            tasks.append((self._run_callbacks, (called_back,)))
            handled |= {lease.job_id for lease, _ in called_back}
        plans = self._plans(grant, job_units, loaded)
        if plans:
            replies = self._rt.jobs.mark_posting_many(
                [(lease, planned.job, planned.record) for lease, planned in plans])
            for (lease, planned), reply in zip(plans, replies, strict=True):
                handled.add(lease.job_id)
                if reply == "ok":
                    tasks.append((self._run_send, (lease, planned)))
        tasks += [(self._run, (unit, grant.owner, loaded.get(unit.id)))
                  for unit in grant.units if unit.id not in handled]
        with self._changed:
            self._busy += len(tasks)
        for run, args in tasks:
            self._pool.submit(run, *args)

    @staticmethod
    def _poll_groups(grant: Grant, units: list[Unit], loaded: dict[str, Job]
                     ) -> list[list[tuple[Lease, Job]]]:
        by_tune: dict[int, list[tuple[Lease, Job]]] = {}
        for unit in units:
            job = loaded[unit.id]
            if (unit.kind is RequestKind.POLL and job.status is JobState.WAITING
                    and job.prompt_id and not job.callback_prompt):
                by_tune.setdefault(job.tune_id, []).append((Lease(unit.id, grant.owner), job))
        return [group for group in by_tune.values() if len(group) > 1]

    def _plans(self, grant: Grant, units: list[Unit], loaded: dict[str, Job]
               ) -> list[tuple[Lease, submit.Plan]]:
        """The POSTs of this grant that can be recorded together (the rest, such as a spec
        that breaks a rule, take their own path)."""
        plans = []
        for unit in units:
            job = loaded[unit.id]
            if (unit.kind is RequestKind.SUBMIT and job.status is JobState.QUEUED
                    and not job.pending_post and not (job.post_by and time.time() >= job.post_by)):
                try:
                    plans.append((Lease(unit.id, grant.owner), submit.plan(self._rt, job)))
                except InvalidSpec:
                    continue
        return plans

    def _run_send(self, lease: Lease, planned: submit.Plan) -> None:
        self._guarded(lambda: submit.send(self._rt, lease, planned), f"job {lease.job_id}",
                      lease, planned.job)

    def _run_polls(self, group: list[tuple[Lease, Job]]) -> None:
        self._guarded(lambda: wait.poll_many(self._rt, group), f"polls of {len(group)} jobs")

    def _run_callbacks(self, items: list[tuple[Lease, Job]]) -> None:
        self._guarded(lambda: wait.apply_callbacks(self._rt, items),
                      f"callbacks of {len(items)} jobs")

    def _run(self, unit: Unit, owner: str, job: Job | None) -> None:
        if job is None:
            self._guarded(lambda: webhooks.deliver(self._rt, unit.id), f"webhook {unit.id}")
        else:
            lease = Lease(unit.id, owner)
            self._guarded(lambda: steps.run(self._rt, unit.kind, lease, job),
                          f"job {unit.id}", lease, job)

    def _guarded(self, work: Callable[[], None], what: str, lease: Lease | None = None,
                 job: Job | None = None) -> None:
        """One task of the pool. A lost lease means another worker has the job; any other
        failure leaves the job due again when its lease ends."""
        try:
            work()
        except LeaseLost:
            log.info("%s: lease lost, another worker carries on", what)
        except Exception as exc:
            log.exception("%s failed; due again when its lease ends", what,
                          extra={"job_id": job.id if job else None})
            if lease and job and not isinstance(exc, redis.RedisError):
                with contextlib.suppress(redis.RedisError):
                    self._rt.jobs.release(lease, job)
        finally:
            with self._changed:
                self._busy -= 1
                if self._busy == self._size - 1:  # the loop waits for a free thread only then
                    self._changed.notify_all()


_engine: Engine | None = None
_lock = threading.Lock()


def start_engine() -> Engine:
    """Start this process's engine (once)."""
    global _engine
    with _lock:
        if _engine is None:
            raise_open_file_limit()  # a socket to Astria and one to Redis per thread, at worst
            _engine = Engine(runtime()).start()
        return _engine


def stop_engine() -> None:
    global _engine
    with _lock:
        engine, _engine = _engine, None
    if engine is not None:
        engine.stop()


def forget_after_fork() -> None:
    """In a forked child (a prefork pool process): the parent's engine is not ours."""
    global _engine
    _engine = None
