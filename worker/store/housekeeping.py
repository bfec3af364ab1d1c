"""Housekeeping: what grows with what producers choose is pruned with retention.

Tenant names, dead letters and broker messages that could not be read all come from outside;
left alone they grow for ever. Every HOUSEKEEPING_SECONDS one engine (whichever takes the lock
first, `Keys.housekeeping`) prunes:
- the counters (`astria-queue stats`, metrics) of tenants that registered no job for
  JOB_RETENTION_SECONDS and have none live or in flight;
- failed jobs and dead webhooks listed longer than JOB_RETENTION_SECONDS (their records expire
  with it anyway);
- dead broker messages past JOB_RETENTION_SECONDS (`worker.store.messages`; their number is
  also capped as they come);
- engines whose last beat is an hour old (`worker.store.engines`).
"""

from __future__ import annotations

import logging
import time

import redis

from worker.constants import TENANT_COUNTS, Keys, tenant_counter
from worker.records import LANES, as_text
from worker.store.engines import EngineRegistry
from worker.store.messages import DeadMessages

log = logging.getLogger("astria.housekeeping")
HOUSEKEEPING_SECONDS = 300
#: Tenants looked at per run (the rest wait for the next one).
TENANTS_PER_RUN = 10_000


class Housekeeping:
    """The pool's pruning; `run_if_due` is called by every engine at each heartbeat."""

    def __init__(self, client: redis.Redis, keys: Keys, retention: float,
                 dead_messages: DeadMessages, engines: EngineRegistry) -> None:
        self._redis, self._keys, self._retention = client, keys, retention
        self._dead_messages, self._engines = dead_messages, engines

    def run_if_due(self, *, now: float | None = None) -> bool:
        """Prune, if no engine did within HOUSEKEEPING_SECONDS; True if this call did."""
        k = self._keys
        if not self._redis.set(k.housekeeping, "1", nx=True, ex=HOUSEKEEPING_SECONDS):
            return False
        now = time.time() if now is None else now
        cutoff = now - self._retention
        tenants = self.prune_idle_tenants(cutoff)
        pipe = self._redis.pipeline(transaction=False)
        pipe.zremrangebyscore(k.dead, "-inf", cutoff)
        pipe.zremrangebyscore(k.webhooks_dead, "-inf", cutoff)
        dead, hooks = pipe.execute()
        messages = self._dead_messages.prune(cutoff)
        engines = self._engines.prune(now)
        if tenants or dead or hooks or messages or engines:
            log.info("housekeeping: pruned %d idle tenants, %d dead jobs, %d dead webhooks, "
                     "%d dead messages, %d engines", tenants, dead, hooks, messages, engines)
        return True

    def prune_idle_tenants(self, cutoff: float) -> int:
        """Drop the counters of tenants idle since `cutoff`; how many were dropped."""
        k = self._keys
        idle = [as_text(t) for t in self._redis.zrangebyscore(k.tenants, "-inf", cutoff,
                                                               start=0, num=TENANTS_PER_RUN)]
        if not idle:
            return 0
        pipe = self._redis.pipeline(transaction=False)
        for tenant in idle:
            pipe.scard(k.live(tenant))
            pipe.hexists(k.inflight, tenant)
        busy = pipe.execute()
        gone = [t for i, t in enumerate(idle) if not busy[2 * i] and not busy[2 * i + 1]]
        for tenant in gone:
            pipe.hdel(k.stats, *[f"{tenant_counter(tenant, lane)}|{what}"
                                 for lane in LANES for what in TENANT_COUNTS])
            pipe.zrem(k.tenants, tenant)
        pipe.execute()
        return len(gone)
