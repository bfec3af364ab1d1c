"""`Prefer: wait=N`: requests of the HTTP API that wait for their job's outcome, all served by one
subscription per process (`Channels.results`), on one thread, however many wait: a waiting
request holds an asyncio future, not a thread or a connection.

A future is registered before the job's record is read, so a decision published in between is
not missed; a waiter reads the record again every RECHECK seconds, so a message lost while the
subscription reconnects costs at most that long."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from starlette.concurrency import run_in_threadpool

from worker.runtime import Runtime
from worker.store.channels import decided_job

log = logging.getLogger("astria.api")
RECHECK = 5.0


class Waiters:
    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._lock = threading.Lock()
        self._waiting: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False

    async def decided(self, job_id: str, timeout: float) -> bool:
        """Whether the job's outcome is decided within `timeout` seconds."""
        self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._waiting.setdefault(job_id, []).append((loop, future))
        try:
            deadline = loop.time() + timeout
            while True:
                if await run_in_threadpool(self._rt.channels.is_decided, job_id):
                    return True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                try:
                    await asyncio.wait_for(asyncio.shield(future), min(remaining, RECHECK))
                    return True
                except TimeoutError:
                    continue
        finally:
            with self._lock:
                left = [w for w in self._waiting.get(job_id, []) if w[1] is not future]
                if left:
                    self._waiting[job_id] = left
                else:
                    self._waiting.pop(job_id, None)

    def stop(self) -> None:
        self._stopping = True

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._listen, name="api-waiters",
                                                daemon=True)
                self._thread.start()

    def _listen(self) -> None:
        while not self._stopping:
            try:
                pubsub = self._rt.channels.results()
                while not self._stopping:
                    message = pubsub.get_message(timeout=1.0)
                    if message and (job_id := decided_job(message)):
                        self._wake(job_id)
            except Exception:
                log.warning("result channel failed, subscribing again", exc_info=True)
                time.sleep(1.0)

    def _wake(self, job_id: str) -> None:
        with self._lock:
            waiting = self._waiting.pop(job_id, [])
        for loop, future in waiting:
            loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
