"""Batches: many jobs of one tenant that answer once, when the last of them is decided.

A batch is created (`lua/create_batch.lua`) with its members' job ids before their messages are
sent; each member's message names the batch, and registration admits only a job the batch was
created with, of its tenant (`lib/batch.lua` join_batch). Each member's decision is counted in
the batch by the script that decides it, and the last one completes the batch and queues its one
`batch.completed` webhook, so no crash can lose or repeat it. Counts read in O(1): one hash.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

import redis

from worker.constants import Keys
from worker.records import as_text
from worker.store.scripts import Scripts


class BatchCreated(StrEnum):
    """What `Batches.create` did (create_batch.lua)."""

    NEW = "new"
    EXISTS = "exists"  #: the same batch again (a resumed enqueue_batch): nothing changed
    CONFLICT = "conflict"  #: that id is another tenant's batch, or has other members


@dataclass(frozen=True)
class Batch:
    """A batch's counts as stored: `queued` is every member not yet waiting for images nor
    decided (its message may not have arrived yet)."""

    id: str
    tenant: str
    size: int
    queued: int
    waiting: int
    succeeded: int
    failed: int
    revoked: int
    cost_mc: int
    stored: int  #: members whose images are copied (STORAGE_URL)
    created_at: float
    completed_at: float | None  #: when its last member was decided

    @property
    def completed(self) -> bool:
        return self.completed_at is not None


class Batches:
    def __init__(self, client: redis.Redis, keys: Keys, scripts: Scripts, retention: int) -> None:
        self._redis, self._keys, self._scripts, self._retention = client, keys, scripts, retention

    @staticmethod
    def member_ids(batch_id: str, size: int) -> list[str]:
        """Its members' job ids: `<batch id>-<n>`, n from 0 (the same on every resume)."""
        return [f"{batch_id}-{n}" for n in range(size)]

    def create(self, batch_id: str, tenant: str, size: int, callback: str | None
               ) -> BatchCreated:
        """The batch and its members' ids (`member_ids`), before any member is sent."""
        k = self._keys
        return BatchCreated(as_text(self._scripts.create_batch(
            keys={"batch": k.batch(batch_id), "members": k.batch_members(batch_id)},
            args={"tenant": tenant, "now": time.time(), "retention": self._retention,
                  "callback": callback or "", "job_ids": self.member_ids(batch_id, size)})))

    def load(self, batch_id: str) -> Batch | None:
        raw = self._redis.hgetall(self._keys.batch(batch_id))
        if not raw:
            return None
        f = {as_text(k): as_text(v) for k, v in raw.items()}

        def n(name: str) -> int:
            return int(f.get(name) or 0)

        return Batch(batch_id, f.get("tenant", ""), n("size"),
                     n("size") - n("waiting") - n("decided"), n("waiting"), n("succeeded"),
                     n("failed"), n("revoked"), n("cost_mc"), n("stored"),
                     float(f.get("created_at") or 0),
                     float(f["completed_at"]) if f.get("completed_at") else None)

    def members(self, batch_id: str) -> list[str]:
        """Its job ids, in order ([] when the batch is gone)."""
        batch = self.load(batch_id)
        return self.member_ids(batch_id, batch.size) if batch else []
