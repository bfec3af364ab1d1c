"""Celery's own cancellation, carried through to the job.

`app.control.revoke(job_id)` and `AsyncResult(job_id).revoke()` from any producer broadcast a
revoke to every worker; Celery keeps the id in memory and discards the message if it has not run.
Our job outlives its message, so the wrapper below first cancels the job in Redis
(`JobStore.cancel`), where every worker sees it: a job not yet POSTed never is, a waiting one stops
polling, and the result backend says REVOKED at once. A message that expired before any worker
took it (Celery's `expires`) ends its job REVOKED with the reason `expired`.

A revoke sent while no worker runs reaches nobody (Celery's own limit); `worker.cancel` writes to
Redis directly and has no such gap.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import task_revoked
from celery.utils.functional import maybe_list
from celery.worker import control

from worker.constants import SUBMIT_TASK
from worker.flow.accept import record_revoked_message
from worker.runtime import runtime

log = logging.getLogger("astria.control")


def install() -> None:
    """In a worker of this app (`worker.broker.wiring`): wrap Celery's `revoke` command and
    record the jobs of discarded messages."""
    celery_revoke = control.Panel.data["revoke"]
    if getattr(celery_revoke, "astria", False):
        return

    @control.control_command(variadic="task_id", signature="[id1 [id2 [... [idN]]]]")
    def revoke(state: Any, task_id: Any, terminate: bool = False, signal: Any = None,
               **kwargs: Any) -> Any:
        """Revoke task by task id (or list of ids); an Astria job is cancelled in Redis first."""
        cancel_quietly([str(i) for i in maybe_list(task_id) or []], "revoked")
        return celery_revoke(state, task_id, terminate=terminate, signal=signal, **kwargs)

    revoke.astria = True
    task_revoked.connect(message_discarded, weak=False)


def cancel_quietly(job_ids: list[str], reason: str) -> None:
    for job_id in job_ids:
        try:
            runtime().jobs.cancel(job_id, reason=reason)
        except Exception:  # Celery's own revoke still runs
            log.exception("job %s: cancel failed", job_id, extra={"job_id": job_id})


def message_discarded(sender: Any = None, request: Any = None, expired: bool = False,
                      **_: Any) -> None:
    """Celery dropped a job's message unrun: revoked (the job was cancelled above), or expired
    (cancelled here). Either way the job gets its REVOKED record."""
    if getattr(sender, "name", None) != SUBMIT_TASK or request is None:
        return
    reason = "expired" if expired else "revoked"
    if expired:
        cancel_quietly([request.id], reason)
    try:
        record_revoked_message(runtime(), request.id, request.args, request.kwargs, reason)
    except Exception:
        log.exception("job %s: could not record its revoked message", request.id)
