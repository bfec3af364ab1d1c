"""The copies of succeeded jobs' images (worker.flow.copies): due ones (`Keys.copies_due`, put
there by finish.lua with the decision itself), their results (`lua/copied.lua`) and the dead
letters an operator lists and sends again (`Keys.copies_dead`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from worker.constants import Keys
from worker.records import as_text
from worker.store.scripts import Scripts


class Copied(StrEnum):
    """How an attempt at a job's copies ended (copied.lua)."""

    STORED = "stored"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True)
class DeadCopy:
    job_id: str
    attempts: int
    last_error: str


class CopyStore:
    def __init__(self, client: redis.Redis, keys: Keys, scripts: Scripts, retention: int) -> None:
        self._redis, self._keys, self._scripts, self._retention = client, keys, scripts, retention

    def done(self, job_id: str, result: Copied, *, stored: list[dict[str, Any]] | None = None,
             error: str = "", next_at: float = 0.0) -> None:
        """Record an attempt: STORED with what was stored, RETRY at `next_at`, or DEAD."""
        k = self._keys
        self._scripts.copied(
            keys={"job": k.job(job_id), "copies_due": k.copies_due, "copies_dead": k.copies_dead,
                  "webhooks_due": k.webhooks_due},
            args={"job_id": job_id, "now": time.time(), "result": result.value,
                  "next_at": next_at, "stored": json.dumps(stored or []), "error": error[:500],
                  "events": k.events_channel, "webhook_prefix": k.webhook(""),
                  "retention": self._retention, "batch_prefix": k.batch("")})

    def dead(self, limit: int = 100) -> list[DeadCopy]:
        """Jobs whose copies ran out of attempts, newest first."""
        out = []
        for raw in self._redis.zrevrange(self._keys.copies_dead, 0, limit - 1):
            job_id = as_text(raw)
            attempts, error = self._redis.hmget(self._keys.job(job_id),
                                                ["copy_attempts", "copy_error"])
            out.append(DeadCopy(job_id, int(attempts or 0), as_text(error or b"")))
        return out

    def redrive(self, job_id: str) -> bool:
        """Copy a dead letter's images again, with a fresh count of attempts; False when it is
        not one."""
        k = self._keys
        if self._redis.zscore(k.copies_dead, job_id) is None:
            return False
        pipe = self._redis.pipeline(transaction=True)
        pipe.zrem(k.copies_dead, job_id)
        pipe.hset(k.job(job_id), "copy_attempts", 0)
        pipe.zadd(k.copies_due, {job_id: time.time()})
        pipe.execute()
        return True
