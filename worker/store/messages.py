"""Dead messages: broker messages that could not be read (`worker.broker.intake`), kept with their
reason for an operator to list, send again or purge (`astria-queue dead messages ...`).

They live in a Redis stream: at most MAX_ENTRIES, and pruned past JOB_RETENTION_SECONDS
(`worker.store.housekeeping`). Of each, the first MAX_KEPT_BYTES are kept; a message cut so cannot
be sent again (it would not be the same message). Sending one again pushes it back onto the queue
it came from: a message rejected by an older release's stricter rule, say, once a fixed release
runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from worker.constants import QUEUE, Keys
from worker.records import Failed, as_text
from worker.store.results import ResultFormat
from worker.store.scripts import Scripts

MAX_ENTRIES = 10_000
MAX_KEPT_BYTES = 64 * 1024


@dataclass(frozen=True)
class DeadMessage:
    id: str
    reason: str
    queue: str
    task_id: str
    size: int  #: bytes, as it was on the queue
    truncated: bool
    raw: bytes  #: as it was on the queue (its first MAX_KEPT_BYTES when truncated)


class DeadMessages:
    def __init__(self, client: redis.Redis, keys: Keys, results: ResultFormat) -> None:
        self._redis = client
        self._keys = keys
        self._scripts = Scripts(client)
        self._results = results

    def bury(self, raw: bytes, *, reason: str, queue: str, task_id: str | None,
             processing: str) -> str:
        """Move a message from a consumer's processing list to the dead messages."""
        k, task = self._keys, task_id or ""
        return as_text(self._scripts.bury_message(
            keys={"processing": processing, "dead_messages": k.dead_messages,
                  "job": k.job(task), "result": k.result(task)},
            args={"raw": raw, "kept": raw[:MAX_KEPT_BYTES], "reason": reason, "queue": queue,
                  "task_id": task, "size": len(raw), "max_entries": MAX_ENTRIES,
                  "doc": self._results.outcome_prefix(Failed(
                      "InvalidMessage", f"the broker message could not be read: {reason}")),
                  "ttl": self._results.ttl}))

    def newest(self, limit: int = 100) -> list[DeadMessage]:
        """The dead messages, newest first."""
        found: Any = self._redis.xrevrange(self._keys.dead_messages, count=limit)
        return [self._entry(entry_id, fields) for entry_id, fields in found]

    def redrive(self, entry_id: str) -> str:
        """Push a dead message back onto the queue it came from: 'redriven', 'truncated' (it
        cannot be) or 'missing'."""
        found: Any = self._redis.xrange(self._keys.dead_messages, entry_id, entry_id)
        if not found:
            return "missing"
        entry = self._entry(*found[0])
        if entry.truncated:
            return "truncated"
        pipe = self._redis.pipeline(transaction=True)  # on the queue, or still here: never both
        pipe.lpush(entry.queue or QUEUE, entry.raw)
        pipe.xdel(self._keys.dead_messages, entry_id)
        pipe.execute()
        return "redriven"

    def purge(self, entry_ids: list[str]) -> int:
        return int(self._redis.xdel(self._keys.dead_messages, *entry_ids)) if entry_ids else 0

    def prune(self, before: float) -> int:
        """Drop dead messages older than `before` (unix time)."""
        return int(self._redis.xtrim(self._keys.dead_messages, minid=int(before * 1000)))

    @staticmethod
    def _entry(entry_id: bytes | str, raw: dict[bytes, bytes]) -> DeadMessage:
        f = {as_text(k): v for k, v in raw.items()}

        def text(name: str) -> str:
            return f.get(name, b"").decode(errors="replace")

        return DeadMessage(as_text(entry_id), text("reason"), text("queue"), text("task_id"),
                           int(text("bytes") or 0), text("truncated") == "1", f.get("raw", b""))
