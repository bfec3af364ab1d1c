"""`DueJobScheduler`: a worker bootstep handing due jobs (polls, retries, take-overs) to the pool.

Every worker runs one; `JobStore.claim_due` is atomic, so each due job is dispatched by exactly one
of them. Due jobs go out as `astria.advance` messages carrying several job ids each when many are
due at once: at most one message per pool slot per tick, each with up to SCHEDULER_BATCH_SIZE ids,
so under load a poll costs a fraction of a Celery task, and when few are due each job still gets
its own message (no job waits behind another). A message expires after one lease: by then its
jobs have fallen due again and been dispatched anew, so a backlog never multiplies messages.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any, ClassVar

from celery import bootsteps

log = logging.getLogger("astria.scheduler")

CLAIM = 500


def batches(job_ids: list[str], slots: int, max_size: int) -> list[list[str]]:
    """Split due jobs into at most `slots` messages (more only beyond `max_size` ids each)."""
    size = min(max_size, max(1, math.ceil(len(job_ids) / max(1, slots))))
    return [job_ids[i:i + size] for i in range(0, len(job_ids), size)]


class DueJobScheduler(bootsteps.StartStopStep):
    requires: ClassVar[set[str]] = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._app = parent.app
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._slots = 1

    def start(self, parent: Any) -> None:
        self._slots = int(getattr(parent.pool, "limit", None) or 1)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="astria-due-scheduler", daemon=True)
        self._thread.start()

    def stop(self, parent: Any) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    shutdown = stop

    def _run(self) -> None:
        from worker.app import ADVANCE_TASK
        from worker.pipeline import runtime

        rt = runtime()
        s = rt.settings
        while not self._stop.is_set():
            try:
                due = rt.jobs.claim_due(CLAIM)
                if due:  # one pipelined write for all the messages
                    with self._app.producer_or_acquire() as producer, producer.batch():
                        for ids in batches(due, self._slots, s.scheduler_batch_size):
                            self._app.send_task(ADVANCE_TASK, args=[ids], producer=producer,
                                                expires=s.job_lease_seconds)
            except Exception:  # Redis restarting, broker away: keep going, jobs stay due
                log.warning("due-job scheduler: cycle failed, retrying", exc_info=True)
                due = []
            if len(due) < CLAIM:
                self._stop.wait(s.scheduler_tick_seconds)
