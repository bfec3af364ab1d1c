"""Is the pool working? Redis answers, and the engines beat (`worker.store.engines`); and is
Redis fit for it (`eviction_problem`, checked when a worker starts).

Used by `astria-queue health` and the receiver's `GET /healthz`. Unhealthy: Redis does not
answer, or engines have beaten before and none has within STALE_SECONDS (an engine that stopped
working, however its process looks). No engine ever seen (a receiver started before any worker)
is not unhealthy: there is nothing to report. A stale engine beside fresh ones is reported and
not unhealthy (a host was killed; the others carry on and take over its jobs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import redis

from worker.runtime import Runtime
from worker.store.engines import EngineBeats


@dataclass(frozen=True)
class Health:
    redis: str  #: 'ok', or the error
    engines: EngineBeats = field(default_factory=lambda: EngineBeats([], {}))

    @property
    def ok(self) -> bool:
        return self.redis == "ok" and bool(self.engines.fresh or not self.engines.stale)

    def problems(self) -> list[str]:
        out = [] if self.redis == "ok" else [f"redis: {self.redis}"]
        if self.engines.stale:
            out.append("engine stale: " + ", ".join(
                f"{engine} (last beat {age:g}s ago)" for engine, age in self.engines.stale.items()))
        return out

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "redis": self.redis,
                "engines": {"fresh": len(self.engines.fresh), "stale": self.engines.stale}}


def eviction_problem(rt: Runtime) -> str | None:
    """Why this Redis may silently lose the queue's data, or None: a maxmemory-policy other than
    noeviction drops keys when memory is full (idempotency keys, tokens, results, jobs). With
    noeviction, a full Redis refuses writes instead, and every write here is retried or goes
    back to the queue (a registration that meets OOM is not acknowledged)."""
    policy = str(rt.redis.info("memory").get("maxmemory_policy", "noeviction"))
    if policy == "noeviction":
        return None
    return (f"Redis maxmemory-policy is {policy}: when memory is full it deletes keys, and with "
            "them jobs, results and idempotency keys. Set `maxmemory-policy noeviction`, or "
            "REDIS_ALLOW_EVICTION=true to run anyway")


def check(rt: Runtime) -> Health:
    try:
        rt.redis.ping()
        return Health("ok", rt.engines.beats(time.time()))
    except redis.RedisError as exc:
        return Health(type(exc).__name__)
