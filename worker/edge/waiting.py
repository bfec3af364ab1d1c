"""Requests of the HTTP API that wait on a job (`Prefer: wait=N`, the event stream), all served
by one subscription per process to the events channel (`Channels.events`), on one thread,
however many wait: a waiting request holds an asyncio future, not a thread or a connection.

A future is registered before the job is read, so an event published in between is not missed;
a waiter reads again at least every RECHECK seconds, so a message lost while the subscription
reconnects costs at most that long."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from starlette.concurrency import run_in_threadpool

from worker.records import as_text
from worker.runtime import Runtime

log = logging.getLogger("astria.api")
RECHECK = 5.0

_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class Waiters:
    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._lock = threading.Lock()
        self._waiting: dict[str, list[_Waiter]] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False

    async def decided(self, job_id: str, timeout: float) -> bool:
        """Whether the job's outcome is decided within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with self.watching(job_id) as changed:
                if await run_in_threadpool(self._rt.channels.is_decided, job_id):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                await changed(min(remaining, RECHECK))

    def watching(self, job_id: str) -> _Watch:
        """`with waiters.watching(job_id) as changed: ... await changed(seconds)`: registered
        on entry, so what happens after it is heard."""
        self._start()
        return _Watch(self, job_id)

    def stop(self) -> None:
        self._stopping = True

    def _add(self, job_id: str, waiter: _Waiter) -> None:
        with self._lock:
            self._waiting.setdefault(job_id, []).append(waiter)

    def _remove(self, job_id: str, waiter: _Waiter) -> None:
        with self._lock:
            left = [w for w in self._waiting.get(job_id, []) if w is not waiter]
            if left:
                self._waiting[job_id] = left
            else:
                self._waiting.pop(job_id, None)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._listen, name="api-waiters",
                                                daemon=True)
                self._thread.start()

    def _listen(self) -> None:
        while not self._stopping:
            try:
                pubsub = self._rt.channels.events()
                while not self._stopping:
                    message = pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message":
                        self._wake(as_text(message["data"]))
            except Exception:
                log.warning("events channel failed, subscribing again", exc_info=True)
                time.sleep(1.0)

    def _wake(self, job_id: str) -> None:
        with self._lock:
            waiting = self._waiting.pop(job_id, [])
        for loop, future in waiting:
            loop.call_soon_threadsafe(_resolve, future)


class _Watch:
    def __init__(self, waiters: Waiters, job_id: str) -> None:
        self._waiters, self._job_id = waiters, job_id
        loop = asyncio.get_running_loop()
        self._waiter: _Waiter = (loop, loop.create_future())

    def __enter__(self) -> _Watch:
        self._waiters._add(self._job_id, self._waiter)
        return self

    def __exit__(self, *exc: object) -> None:
        self._waiters._remove(self._job_id, self._waiter)

    async def __call__(self, timeout: float) -> bool:
        """Whether the job had an event within `timeout` seconds."""
        try:
            await asyncio.wait_for(asyncio.shield(self._waiter[1]), timeout)
            return True
        except TimeoutError:
            return False


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
