"""`Engine`: the I/O layer of a worker, where Astria requests and webhooks are made.

Celery's pool only validates and registers jobs (`worker.flow.accept`). Every HTTP request runs
here, on three thread pools: WORKER_HTTP_CONCURRENCY threads for Astria (sharing one connection
pool: a request in flight costs a thread blocked on a socket, not a process, so one 2-core host
keeps hundreds in flight), WEBHOOK_CONCURRENCY threads for producers' webhooks, so that no
producer's endpoint can hold a thread an Astria request needs, and STORAGE_CONCURRENCY threads
for durable copies (with STORAGE_URL), so that a slow store holds neither. Nothing here sleeps
for a back-off, a Retry-After, a rate limit or a grace period: those are due times in Redis, and
the dispatcher loop only hands out work that may run now.

The loop asks the dispatcher (`worker.store.dispatch`) for as many units as each pool has free
threads and hands the work the decision table makes of them (`worker.flow.steps.plan`: which
step each job needs, which run together) to the pools; it knows nothing of job states. It sleeps
until the next token or due time, a free thread, or a message on the wake channel, which a
registration, a callback or a redrive publishes from any process. While a task runs, the leases
of the jobs it holds are renewed.

Nothing may end the loop quietly: any error is logged and the loop backs off (up to
MAX_BACKOFF seconds) and goes on. After each grant it beats (`worker.store.engines`), so that
`astria-queue health` and the receiver's `/healthz` see an engine that stopped working. A task
that fails unexpectedly counts against the jobs it holds (`worker.flow.steps.step_failed`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import redis

from worker.flow import steps
from worker.flow.steps import Work
from worker.net.fdlimit import raise_open_file_limit
from worker.runtime import Runtime
from worker.store.dispatch import Grant
from worker.store.types import Lease, LeaseLost

log = logging.getLogger("astria.engine")
#: Most units one grant hands out: a slow process does not hoard work another could start.
GRANT_LIMIT = 64
#: After a wake, wait this long for more jobs to register, so that one grant serves a burst of
#: new jobs rather than one grant (one Lua call) each.
GATHER_SECONDS = 0.05
#: Longest pause of the loop after errors in a row (it doubles from 0.5 s).
MAX_BACKOFF = 30.0
#: Seconds between two heartbeats.
HEARTBEAT_SECONDS = 5.0


class Slots:
    """A thread pool and how many of its threads are taken."""

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.busy = 0
        self.pool = ThreadPoolExecutor(size, thread_name_prefix=name)

    @property
    def free(self) -> int:
        return min(GRANT_LIMIT, self.size - self.busy)


class Engine:
    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        self._astria = Slots(rt.settings.worker_http_concurrency, "astria-http")
        self._hooks = Slots(rt.settings.webhook_concurrency, "astria-webhook")
        self._copies = Slots(rt.settings.storage_concurrency, "astria-copy")
        self._copying = rt.settings.copies_on  #: durable copies are made
        self._changed = threading.Condition()
        self._woken = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._beat_at = 0.0
        self._held: dict[str, Lease] = {}  #: leases of the jobs whose tasks run now

    def start(self) -> Engine:
        self._thread = threading.Thread(target=self._loop, name="astria-dispatch", daemon=True)
        self._thread.start()
        threading.Thread(target=self._listen, name="astria-wake", daemon=True).start()
        threading.Thread(target=self._renew, name="astria-leases", daemon=True).start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop asking for work and let the requests in flight finish (what does not finish in
        time is taken over by another worker when its lease ends)."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._thread:
            self._thread.join(timeout)
        for slots in (self._astria, self._hooks, self._copies):
            slots.pool.shutdown(wait=True, cancel_futures=True)
        with contextlib.suppress(redis.RedisError):
            self._rt.engines.gone(self.id)

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
                pubsub = self._rt.channels.wakes()
                while not self._stopping:
                    if pubsub.get_message(timeout=1.0):
                        self.wake()
            except Exception:
                log.warning("wake channel failed, listening again", exc_info=True)
                time.sleep(1.0)

    def _renew(self) -> None:
        """Renew the leases of the jobs whose requests run, every third of a lease: a POST or a
        poll that takes long is never taken over by another worker while it may be answered."""
        seconds = self._rt.settings.job_lease_seconds
        while not self._stopping:
            time.sleep(seconds / 3)
            with self._changed:
                held = list(self._held.values())
            try:
                self._rt.jobs.renew(held, time.time() + seconds)
            except Exception:
                log.warning("leases: could not renew %d, trying again", len(held), exc_info=True)

    # --- the dispatcher loop --------------------------------------------------------------------
    def _loop(self) -> None:
        tick = self._rt.settings.scheduler_tick_seconds
        failures = 0
        while True:
            with self._changed:
                while not self._stopping and not (self._astria.free or self._hooks.free
                                                  or (self._copying and self._copies.free)):
                    self._changed.wait()
                if self._stopping:
                    return
                room, hook_room = self._astria.free, self._hooks.free
                copy_room = self._copies.free if self._copying else 0
                self._woken = False
            try:
                grant = self._rt.dispatcher.grant(room, hook_room, copy_room)
                self._rt.clock.seen(grant.now)
                self._start(grant)
                self._beat()
                failures = 0
            except Exception as exc:
                failures += 1
                pause = min(MAX_BACKOFF, 0.5 * 2 ** (failures - 1))
                log.error("dispatcher: %s (%d in a row); trying again in %.1fs",
                          type(exc).__name__, failures, pause,
                          exc_info=not isinstance(exc, redis.ConnectionError))
                grant = Grant([], "", pause)
            granted = ((len(grant.units), room), (len(grant.webhooks), hook_room),
                       (len(grant.copies), copy_room))
            if not any(given >= asked for given, asked in granted if asked):
                # no pool with free threads got all it asked for: nothing more is due now (a
                # full pool asked for nothing, and a freed thread wakes the loop)
                delay = grant.wait if failures else min(grant.wait, tick)
                with self._changed:
                    if not self._woken and not self._stopping:
                        self._changed.wait(delay)
                    if self._woken and not self._stopping:
                        self._changed.wait(GATHER_SECONDS)

    def _beat(self) -> None:
        """Tell health checks that this engine works, and run the pool's housekeeping when it
        is due (one engine does it, `worker.store.housekeeping`)."""
        now = time.time()
        if now - self._beat_at >= HEARTBEAT_SECONDS:
            self._beat_at = now
            with self._changed:
                threads = {"astria": (self._astria.busy, self._astria.size),
                           "webhook": (self._hooks.busy, self._hooks.size),
                           **({"copy": (self._copies.busy, self._copies.size)}
                              if self._copying else {})}
            self._rt.engines.beat(self.id, now, threads)
            self._submit(self._astria, [Work("housekeeping", self._rt.housekeeping.run_if_due)])

    def _start(self, grant: Grant) -> None:
        """Hand the grant's work to the pools, as the decision table (`worker.flow.steps`)
        says."""
        work, hooks, copying = steps.plan(self._rt, grant)
        self._submit(self._astria, work)
        self._submit(self._hooks, hooks)
        self._submit(self._copies, copying)

    def _submit(self, slots: Slots, tasks: list[Work]) -> None:
        with self._changed:
            slots.busy += len(tasks)
        for work in tasks:
            slots.pool.submit(self._counted, slots, work)

    def _counted(self, slots: Slots, work: Work) -> None:
        with self._changed:
            self._held.update((lease.job_id, lease) for lease, _ in work.holds)
        try:
            self._guarded(work)
        finally:
            with self._changed:
                for lease, _ in work.holds:
                    self._held.pop(lease.job_id, None)
                slots.busy -= 1
                if slots.busy == slots.size - 1:  # the loop waits for a free thread only then
                    self._changed.notify_all()

    # --- each task, on a thread of its pool -----------------------------------------------------
    def _guarded(self, work: Work) -> None:
        """A lost lease means another worker has the job; any other failure counts against each
        job it holds (`steps.step_failed`)."""
        try:
            work.call()
        except LeaseLost:
            log.info("%s: lease lost, another worker carries on", work.what)
        except Exception as exc:
            log.exception("%s failed; due again when its lease ends", work.what,
                          extra={"job_id": work.holds[0][1].id if work.holds else None})
            if not isinstance(exc, redis.RedisError):
                for lease, job in work.holds:
                    with contextlib.suppress(Exception):
                        steps.step_failed(self._rt, lease, job, exc)


_engine: Engine | None = None
_lock = threading.Lock()


def start_engine(rt: Runtime) -> Engine:
    """Start this process's engine (once) on its runtime."""
    global _engine
    with _lock:
        if _engine is None:
            raise_open_file_limit()  # a socket to Astria and one to Redis per thread, at worst
            _engine = Engine(rt).start()
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
