"""`DueJobScheduler`: a worker bootstep handing due jobs (polls, retries, take-overs) to the pool.

Every worker runs one; `JobStore.claim_due` is atomic, so each due job is dispatched by exactly one
of them, and a dispatched `astria.advance` message expires after one lease: by then the job has
fallen due again and been dispatched anew, so a backlog never multiplies messages.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, ClassVar

from celery import bootsteps

log = logging.getLogger("astria.scheduler")

BATCH = 500


class DueJobScheduler(bootsteps.StartStopStep):
    requires: ClassVar[set[str]] = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._app = parent.app
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
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
        tick = rt.settings.scheduler_tick_seconds
        while not self._stop.is_set():
            try:
                due = rt.jobs.claim_due(BATCH)
                for job_id in due:
                    self._app.send_task(
                        ADVANCE_TASK, args=[job_id], expires=rt.settings.job_lease_seconds
                    )
            except Exception:  # Redis restarting, broker away: keep going, jobs stay due
                log.warning("due-job scheduler: cycle failed, retrying", exc_info=True)
                due = []
            if len(due) < BATCH:
                self._stop.wait(tick)
