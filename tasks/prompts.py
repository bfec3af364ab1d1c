"""The public task. Its work is in `worker.flow.accept`.

`astria.submit_prompt` is what producers send (by name, with `kwargs={"spec": ...}`). It only
reads its arguments, validates and registers the job; its POST, polls and outcome follow from
the dispatcher, and the outcome is written to the result backend when the images are there, not
when this task returns (hence `ignore_result`). It takes any arguments, so that wrong ones end the
job in FAILURE with an InvalidSpec saying what was wrong, rather than a TypeError no one sees.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery.exceptions import Reject

from worker.broker.app import app
from worker.constants import SUBMIT_TASK
from worker.flow.accept import accept
from worker.runtime import runtime

log = logging.getLogger("astria.accept")


@app.task(name=SUBMIT_TASK, bind=True, ignore_result=True, typing=False)
def submit_prompt(self: Any, *args: Any, **kwargs: Any) -> None:
    """Validate and register the job (its id is this task's id)."""
    try:
        accept(runtime(), self.request.id, args, kwargs, message_expires=self.request.expires,
               traceparent=self.request.get("traceparent"))
    except redis.RedisError as exc:
        # Not registered: Redis is away, out of memory (OOM under maxmemory), read-only after a
        # failover, ... Nothing is recorded and the message is not acknowledged: it goes back to
        # the queue, or, if even that cannot be written, is restored after the broker's
        # visibility timeout. Never lost.
        log.warning("job %s: not registered (%s); the message goes back to the queue",
                    self.request.id, type(exc).__name__, extra={"job_id": self.request.id})
        raise Reject(type(exc).__name__, requeue=True) from None
