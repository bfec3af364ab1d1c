"""The two tasks of a job. The work itself is in `worker.pipeline`.

`astria.submit_prompt` is the public entry (producers send it by name with `kwargs={"spec": ...}`).
Both tasks have `ignore_result`: the job's outcome is written to the result backend by the pipeline
when the images are there, not when a task returns, so no task waits for Astria. (Raising `Ignore`
would do the same at the price of a formatted traceback per task.)
"""

from __future__ import annotations

from typing import Any

import redis
from celery.exceptions import Reject

from worker import pipeline
from worker.app import ADVANCE_TASK, SUBMIT_TASK, app


@app.task(name=SUBMIT_TASK, bind=True, ignore_result=True)
def submit_prompt(self: Any, spec: Any) -> None:
    """Validate and register the job (its id is this task's id), then take its first step."""
    try:
        pipeline.accept(self.request.id, spec)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        # Redis is away: no failure is recorded; the message goes back to the queue, or, if even
        # that cannot be done, comes back after the broker's visibility timeout.
        raise Reject(str(exc), requeue=True) from None


@app.task(name=ADVANCE_TASK, ignore_result=True)
def advance(job_ids: list[str]) -> None:
    """Move registered jobs one step each: submit, poll once, or deliver the outcome.

    Errors need no handling here: a job whose step failed stays in the `due` set and falls due
    again. The scheduler sends several ids per message only when many jobs are due at once."""
    pipeline.advance(job_ids)
