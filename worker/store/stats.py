"""`Stats`: counters and latencies in Redis, shared by every process (`astria-queue stats`,
`GET /metrics`).

Outcomes are counted exactly, by the scripts that decide them (`worker.store`), globally
(`outcome:<STATE>`, `error:<class>`) and per tenant and lane (`t|<tenant>|<lane>|<what>`, see
`worker.constants.tenant_counter`). Astria requests are counted in memory by kind, method and
status, with a latency histogram, and written by a background thread every FLUSH_SECONDS: one
round trip a second instead of one per request, at the price of losing up to a second of these
counts if the process is killed.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import redis

from worker.constants import Keys, read_tenant_counter
from worker.records import LANES, as_text

LATENCY_SAMPLES = 2000
FLUSH_SECONDS = 1.0
#: Upper bounds (seconds) of the Astria request latency histogram's buckets.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Upper bounds (seconds) of the enqueue-to-outcome histogram (lua/lib/decide.lua counts it).
JOB_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)

log = logging.getLogger("astria.stats")


def percentile(samples: list[float], p: float) -> float | None:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else None


@dataclass(frozen=True)
class Gauges:
    """What the queue holds now, read in one round trip (`Stats.gauges`)."""

    queued: int  #: jobs not sent to Astria yet
    oldest_queued_seconds: float  #: how long the oldest of them has waited (0: none)
    backlog: dict[str, int]  #: lane -> jobs waiting in its queue for their turn
    oldest_by_lane: dict[str, float]  #: lane -> seconds its oldest such job has waited
    in_flight: dict[str, int]  #: tenant -> prompts at Astria
    polling: int  #: jobs due for a non-POST request
    retrying: int  #: jobs waiting out a back-off before their POST
    dead: int
    dead_messages: int  #: broker messages that could not be read
    webhooks_pending: int
    webhooks_dead: int
    rates: dict[str, float | None]  #: the limiter's current rate by kind (None: never used)


class Stats:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._redis = client
        self._keys = keys
        self._lock = threading.Lock()
        self._pending: Counter[str] = Counter()
        self._seconds: defaultdict[str, float] = defaultdict(float)
        self._samples: list[float] = []
        self._flusher_pid = 0  # the process whose thread flushes (a forked child starts its own)

    def request(self, kind: str, method: str, status: str, seconds: float) -> None:
        """One Astria request and how it ended (an HTTP status, or 'network')."""
        bucket = next((f"{b:g}" for b in LATENCY_BUCKETS if seconds <= b), "+Inf")
        with self._lock:
            self._pending[f"http:{method}:{status}"] += 1
            self._pending[f"http_kind:{kind}:{status}"] += 1
            self._pending[f"latency_bucket:{method}:{bucket}"] += 1
            self._pending[f"latency_count:{method}"] += 1
            self._seconds[f"latency_sum:{method}"] += seconds
            self._samples.append(round(seconds * 1000, 1))
        self._start_flusher()

    def count(self, *names: str) -> None:
        with self._lock:
            self._pending.update(names)
        self._start_flusher()

    def flush(self) -> None:
        """Write what was counted since the last flush (kept for the next one if Redis is away)."""
        with self._lock:
            pending, seconds, samples = (self._pending, self._seconds,
                                         self._samples[-LATENCY_SAMPLES:])
            self._pending, self._seconds, self._samples = Counter(), defaultdict(float), []
        if not pending and not samples:
            return
        pipe = self._redis.pipeline(transaction=False)
        for name, n in pending.items():
            pipe.hincrby(self._keys.stats, name, n)
        for name, total in seconds.items():
            pipe.hincrbyfloat(self._keys.stats, name, total)
        if samples:
            pipe.lpush(self._keys.latency, *samples)
            pipe.ltrim(self._keys.latency, 0, LATENCY_SAMPLES - 1)
        try:
            pipe.execute()
        except redis.RedisError:
            with self._lock:
                self._pending.update(pending)
                for name, total in seconds.items():
                    self._seconds[name] += total
                self._samples[:0] = samples
            raise

    def _start_flusher(self) -> None:
        if self._flusher_pid != os.getpid():
            with self._lock:
                if self._flusher_pid != os.getpid():
                    self._flusher_pid = os.getpid()
                    threading.Thread(target=self._flush_forever, name="astria-stats",
                                     daemon=True).start()
                    atexit.register(self._flush_quietly)

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            try:
                self.flush()
            except redis.RedisError:
                log.warning("stats: flush failed, keeping the counts for the next one")
            except Exception:  # the counts of this second are lost; the thread goes on
                log.exception("stats: flush failed")

    def _flush_quietly(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.flush()

    # --- reading ------------------------------------------------------------------------------
    def counters(self) -> dict[str, float]:
        return {as_text(k): float(v) for k, v in self._redis.hgetall(self._keys.stats).items()}

    def oldest_queued_at(self) -> dict[str, float]:
        """Lane -> when its oldest job still waiting for its turn was registered (its seq):
        each tenant's first job in each lane, in two round trips."""
        pipe = self._redis.pipeline(transaction=False)
        for lane in LANES:
            pipe.zrange(self._keys.turns(lane), 0, -1)
        asked = []
        for lane, tenants in zip(LANES, pipe.execute(), strict=True):
            for tenant in map(as_text, tenants):
                asked.append(lane)
                pipe.zrangebylex(self._keys.ready(lane), f"[{tenant}|", f"({tenant}}}",
                                 start=0, num=1)
        oldest: dict[str, float] = {}
        for lane, first in zip(asked, pipe.execute(), strict=True):
            if first:
                at = float(as_text(first[0]).split("|")[1]) / 1_000_000
                oldest[lane] = min(at, oldest.get(lane, at))
        return oldest

    def backlog(self) -> dict[str, int]:
        """Lane -> jobs waiting in its queue for their turn."""
        pipe = self._redis.pipeline(transaction=False)
        for lane in LANES:
            pipe.zcard(self._keys.ready(lane))
        return {lane: int(n) for lane, n in zip(LANES, pipe.execute(), strict=True)}

    def gauges(self) -> Gauges:
        k = self._keys
        pipe = self._redis.pipeline(transaction=False)
        pipe.hlen(k.queued)
        pipe.hgetall(k.inflight)
        pipe.zcard(k.due_poll)
        pipe.zcard(k.due_submit)
        pipe.zcard(k.dead)
        pipe.xlen(k.dead_messages)
        pipe.zcard(k.webhooks_due)
        pipe.zcard(k.webhooks_dead)
        pipe.hmget(k.limiter, ["rate:submit", "rate:poll"])
        (queued, inflight, polling, retrying, dead, dead_messages, hooks_due, hooks_dead,
         rates) = pipe.execute()
        now = time.time()
        oldest = {lane: now - at for lane, at in self.oldest_queued_at().items()}
        return Gauges(
            queued=int(queued),
            oldest_queued_seconds=max(oldest.values(), default=0.0),
            backlog=self.backlog(), oldest_by_lane=oldest,
            in_flight={as_text(tenant): int(n) for tenant, n in inflight.items()},
            polling=int(polling), retrying=int(retrying), dead=int(dead),
            dead_messages=int(dead_messages),
            webhooks_pending=int(hooks_due), webhooks_dead=int(hooks_dead),
            rates={kind: float(rate) if rate else None
                   for kind, rate in zip(("submit", "poll"), rates, strict=True)})

    def snapshot(self) -> dict[str, Any]:
        """Everything `astria-queue stats` shows."""
        k = self._keys
        counters = self.counters()
        gauges = self.gauges()
        pipe = self._redis.pipeline(transaction=False)
        pipe.lrange(k.latency, 0, -1)
        pipe.lrange(k.job_latency, 0, -1)
        latency, job_latency = pipe.execute()
        samples = [float(x) for x in latency]
        http = {name.removeprefix("http:"): int(v) for name, v in counters.items()
                if name.startswith("http:")}
        return {
            "jobs": {
                "waiting_for_post": gauges.queued,
                "oldest_waiting_seconds": round(gauges.oldest_queued_seconds, 1) or 0,
                "in_flight_at_astria": sum(gauges.in_flight.values()),
                "succeeded": int(counters.get("outcome:SUCCESS", 0)),
                "failed": int(counters.get("outcome:FAILURE", 0)),
                "revoked": int(counters.get("outcome:REVOKED", 0)),
                "dead_letters": gauges.dead,
                "dead_messages": gauges.dead_messages,
                "polling_or_retrying": gauges.polling,
            },
            "by_tenant_and_lane": self._by_tenant(counters, gauges.in_flight, job_latency),
            "failures_by_error": {name.removeprefix("error:"): int(v)
                                  for name, v in counters.items() if name.startswith("error:")},
            "reroutes": int(counters.get("rerouted", 0)),
            "routes_learnt_from_422": int(counters.get("route_learnt", 0)),
            "adopted_after_lost_answer": int(counters.get("adopted", 0)),
            "astria_requests": http,
            "retried_by_status": {name: v for name, v in http.items()
                                  if name.split(":")[1] in {"429", "500", "502", "503", "504",
                                                            "network"}},
            "astria_latency_ms": {"samples": len(samples), "p50": percentile(samples, 0.5),
                                  "p95": percentile(samples, 0.95),
                                  "p99": percentile(samples, 0.99)},
            "webhooks": {"pending": gauges.webhooks_pending, "dead_letters": gauges.webhooks_dead},
        }

    def _by_tenant(self, counters: dict[str, float], inflight: dict[str, int],
                   job_latency: list[Any]) -> dict[str, dict[str, Any]]:
        """Counts, in flight, cost and latency per `tenant/lane`."""
        rows: dict[str, dict[str, Any]] = {}
        for name, value in counters.items():
            if read := read_tenant_counter(name):
                tenant, lane, what = read
                row = rows.setdefault(f"{tenant}/{lane}", {"enqueued": 0, "SUCCESS": 0,
                                                          "FAILURE": 0, "REVOKED": 0,
                                                          "cost_mc": 0})
                row[what] = int(value)
        latencies: defaultdict[str, list[float]] = defaultdict(list)
        for entry in job_latency:
            if read := read_tenant_counter(as_text(entry)):
                tenant, lane, seconds = read
                latencies[f"{tenant}/{lane}"].append(float(seconds))
        for name, row in rows.items():
            done = latencies.get(name, [])
            row["latency_s"] = {"samples": len(done), "p50": percentile(done, 0.5),
                                "p95": percentile(done, 0.95)}
        for tenant, n in inflight.items():
            for name, row in rows.items():
                if name.startswith(f"{tenant}/"):
                    row.setdefault("tenant_in_flight", n)
        return dict(sorted(rows.items()))
