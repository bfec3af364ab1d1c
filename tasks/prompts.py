"""The public task. Its work is in `worker.accept`.

`astria.submit_prompt` is what producers send (by name, with `kwargs={"spec": ...}`). It only
validates and registers the job; its POST, polls and outcome follow from the dispatcher, and the
outcome is written to the result backend when the images are there, not when this task returns
(hence `ignore_result`).
"""

from __future__ import annotations

from typing import Any

import redis
from celery.exceptions import Reject

from worker.accept import accept
from worker.app import app
from worker.constants import SUBMIT_TASK


@app.task(name=SUBMIT_TASK, bind=True, ignore_result=True)
def submit_prompt(self: Any, spec: Any) -> None:
    """Validate and register the job (its id is this task's id)."""
    try:
        accept(self.request.id, spec, message_expires=self.request.expires)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        # Redis is away: no failure is recorded; the message goes back to the queue, or, if even
        # that cannot be done, comes back after the broker's visibility timeout.
        raise Reject(str(exc), requeue=True) from None
