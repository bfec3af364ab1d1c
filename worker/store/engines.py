"""Engines' heartbeats: which worker hosts are working, as Redis sees it.

Each engine (`worker.flow.engine`) writes the time of its last successful grant, at most every few
seconds, under its id (`host:pid`), and removes it when it stops cleanly. A beat older than
STALE_SECONDS means an engine that stopped working (or a worker killed without a clean stop): the
health checks (`worker.edge.health`) report it; beats older than FORGET_SECONDS are pruned.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import redis

from worker.constants import Keys
from worker.records import as_text

STALE_SECONDS = 30.0
FORGET_SECONDS = 3600.0


@dataclass(frozen=True)
class EngineBeats:
    fresh: list[str]
    stale: dict[str, int]  #: engine id -> whole seconds since its last beat
    #: pool (astria, webhook, copy) -> [threads busy, threads], summed over the fresh engines
    threads: dict[str, list[int]] = field(default_factory=dict)


class EngineRegistry:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._redis = client
        self._key, self._threads = keys.engines, keys.engine_threads

    def beat(self, engine_id: str, now: float, threads: dict[str, tuple[int, int]]) -> None:
        """A beat, with the engine's pools: pool -> (threads busy, threads)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(self._key, engine_id, now)
        pipe.hset(self._threads, engine_id, json.dumps(threads))
        pipe.execute()

    def gone(self, engine_id: str) -> None:
        self._redis.hdel(self._key, engine_id)
        self._redis.hdel(self._threads, engine_id)

    def beats(self, now: float) -> EngineBeats:
        ages = {as_text(k): now - float(v) for k, v in self._redis.hgetall(self._key).items()}
        fresh = sorted(e for e, age in ages.items() if age < STALE_SECONDS)
        threads: dict[str, list[int]] = {}
        for raw in self._redis.hmget(self._threads, fresh) if fresh else []:
            for pool, (busy, size) in json.loads(raw or "{}").items():
                total = threads.setdefault(pool, [0, 0])
                total[0], total[1] = total[0] + busy, total[1] + size
        return EngineBeats(fresh, {e: round(age) for e, age in sorted(ages.items())
                                   if age >= STALE_SECONDS}, threads)

    def beating_on(self, host: str, now: float) -> bool:
        """Whether an engine of this host (its ids are `host:pid`) beat within STALE_SECONDS."""
        return any(e.startswith(host + ":") for e in self.beats(now).fresh)

    def prune(self, now: float) -> int:
        old = [e for e, age in self.beats(now).stale.items() if age > FORGET_SECONDS]
        if old:
            self._redis.hdel(self._threads, *old)
        return int(self._redis.hdel(self._key, *old)) if old else 0
