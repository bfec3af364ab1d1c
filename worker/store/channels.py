"""What a process listens to: the wake channel (new work was published: a registration, a
callback, a redrive), the events channel (a job has a new event) and each job's event stream
(`Keys.events`: queued, following, posted, reconciling, retrying, waiting, redriven, then
succeeded, failed or revoked with its outcome)."""

from __future__ import annotations

import json
import re
from typing import Any

import redis
from redis.client import PubSub

from worker.constants import Keys
from worker.records import as_text

#: Celery states after which a job's result document does not change.
FINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
#: The last event of a job's stream (until a redrive).
FINAL_EVENTS = frozenset({"succeeded", "failed", "revoked"})
EVENT_ID = re.compile(r"\d{1,20}-\d{1,20}")


class Channels:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._redis, self._keys = client, keys

    def wakes(self) -> PubSub:
        """Subscribed to the wake channel: each message says work may be granted now."""
        pubsub: PubSub = self._redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self._keys.wake)
        return pubsub

    def events(self) -> PubSub:
        """Subscribed to the events channel: each message is the id of a job with a new event."""
        pubsub: PubSub = self._redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self._keys.events_channel)
        return pubsub

    def events_after(self, job_id: str, after: str = "0-0") -> list[tuple[str, dict[str, Any]]]:
        """The job's events after the one with id `after` (a stream id), oldest first."""
        return self._after(self._keys.events(job_id), after)

    def batch_events_after(self, batch_id: str, after: str = "0-0"
                           ) -> list[tuple[str, dict[str, Any]]]:
        """The batch's events (`member`: one decided, then `completed`; the last hundred or so)
        after the one with id `after`, oldest first. They are published as `batch:<id>`."""
        return self._after(self._keys.batch_events(batch_id), after)

    def _after(self, stream: str, after: str) -> list[tuple[str, dict[str, Any]]]:
        if not EVENT_ID.fullmatch(after):
            after = "0-0"
        entries: Any = self._redis.xrange(stream, f"({after}", "+", count=200)
        return [(as_text(entry_id), json.loads(fields[b"event"])) for entry_id, fields in entries]

    def is_decided(self, job_id: str) -> bool:
        """Whether the job's result document holds its outcome now."""
        return final_document(self._redis.get(self._keys.result(job_id))) is not None


def final_document(raw: object) -> dict[str, Any] | None:
    """A result document that holds its job's outcome, parsed; None for anything else (not
    there yet, WAITING, not JSON)."""
    if not isinstance(raw, bytes | str):
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and doc.get("status") in FINAL_STATES else None
