"""Operators' search over job records (`astria-queue jobs list`): a SCAN of the job hashes,
filtered by state, tenant and lane. O(all keys): a tool for a person, never a hot path."""

from __future__ import annotations

from collections.abc import Iterator

import redis

from worker.constants import Keys
from worker.records import Job, JobState, as_text


class JobSearch:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._redis, self._keys = client, keys

    def find(self, *, state: JobState | None = None, tenant: str | None = None,
             lane: str | None = None, limit: int = 100) -> Iterator[Job]:
        """Up to `limit` jobs that match every filter given, in no particular order."""
        found = 0
        prefix = self._keys.job("")
        for key in self._redis.scan_iter(prefix + "*", count=1000, _type="hash"):
            job_id = as_text(key).removeprefix(prefix)
            status, job_tenant, job_lane = (
                as_text(v) if v is not None else None
                for v in self._redis.hmget(key, ["status", "tenant", "lane"]))
            if ((state and status != state) or (tenant and job_tenant != tenant)
                    or (lane and job_lane != lane)):
                continue
            job = Job.from_hash(job_id, self._redis.hgetall(key))
            if job.status is JobState.MISSING:
                continue
            yield job
            found += 1
            if found >= limit:
                return
