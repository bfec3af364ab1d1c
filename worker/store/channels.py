"""The pub/sub channels a process listens to: the wake channel (new work was published: a
registration, a callback, a redrive) and the result documents Celery's Redis backend publishes
on each job's result key (a decision, or a job that began to wait)."""

from __future__ import annotations

import json

import redis
from redis.client import PubSub

from worker.constants import RESULT_KEY_PREFIX, Keys
from worker.records import as_text

#: Celery states after which a job's result document does not change.
FINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


class Channels:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._redis, self._keys = client, keys

    def wakes(self) -> PubSub:
        """Subscribed to the wake channel: each message says work may be granted now."""
        pubsub: PubSub = self._redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self._keys.wake)
        return pubsub

    def results(self) -> PubSub:
        """Subscribed to every job's result document (`decided_job` reads a message)."""
        pubsub: PubSub = self._redis.pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe(RESULT_KEY_PREFIX + "*")
        return pubsub

    def is_decided(self, job_id: str) -> bool:
        """Whether the job's result document holds its outcome now."""
        return _final(self._redis.get(self._keys.result(job_id)))


def decided_job(message: dict[str, object]) -> str | None:
    """The job a message of `Channels.results` says was decided, else None."""
    channel = as_text(message.get("channel") or b"")
    if not channel.startswith(RESULT_KEY_PREFIX) or not _final(message.get("data")):
        return None
    return channel.removeprefix(RESULT_KEY_PREFIX)


def _final(doc: object) -> bool:
    if not isinstance(doc, bytes | str):
        return False
    try:
        parsed = json.loads(doc)
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("status") in FINAL_STATES
