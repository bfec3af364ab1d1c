"""The ceiling: a no-op Celery task round trip on the same Redis, with the same pool."""

from __future__ import annotations

import os

from celery import Celery

app = Celery("noop", broker=os.environ["REDIS_URL"], backend=os.environ["REDIS_URL"])
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                task_acks_late=True, worker_prefetch_multiplier=4)


@app.task(name="noop.ping")
def ping() -> None:
    """Does nothing: what is left is Celery's own cost per task."""
