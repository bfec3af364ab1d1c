"""`Stats`: counters and Astria latencies in Redis, shared by every worker (`astria-queue stats`).

Counters live in one hash (`{prefix}:stats`); latencies in a list capped at the last 2,000
requests, from which the CLI computes percentiles. Outcomes are counted exactly, by the script
that decides them (`worker.jobs`). Requests and other events are counted in memory and written by
a background thread every FLUSH_SECONDS: one round trip a second instead of one per request, at
the price of losing up to a second of these counts if the process is killed.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
from collections import Counter
from typing import Any

import redis

LATENCY_SAMPLES = 2000
FLUSH_SECONDS = 1.0

log = logging.getLogger("astria.stats")


class Stats:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._counters = self.counters_key(prefix)
        self._latency = f"{prefix}:stats:latency"
        self._lock = threading.Lock()
        self._pending: Counter[str] = Counter()
        self._samples: list[float] = []
        self._flusher_pid = 0  # the process whose thread flushes (a forked child starts its own)

    @staticmethod
    def counters_key(prefix: str) -> str:
        return f"{prefix}:stats"

    def request(self, method: str, status: str, seconds: float) -> None:
        """One Astria request and how it ended (an HTTP status, or a network error's name)."""
        with self._lock:
            self._pending[f"http:{method}:{status}"] += 1
            self._samples.append(round(seconds * 1000, 1))
        self._start_flusher()

    def count(self, *names: str) -> None:
        with self._lock:
            self._pending.update(names)
        self._start_flusher()

    def flush(self) -> None:
        """Write what was counted since the last flush (kept for the next one if Redis is away)."""
        with self._lock:
            pending, samples = self._pending, self._samples[-LATENCY_SAMPLES:]
            self._pending, self._samples = Counter(), []
        if not pending and not samples:
            return
        pipe = self._redis.pipeline(transaction=False)
        for name, n in pending.items():
            pipe.hincrby(self._counters, name, n)
        if samples:
            pipe.lpush(self._latency, *samples)
            pipe.ltrim(self._latency, 0, LATENCY_SAMPLES - 1)
        try:
            pipe.execute()
        except redis.RedisError:
            with self._lock:
                self._pending.update(pending)
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

    def _flush_quietly(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.flush()

    def snapshot(self) -> dict[str, Any]:
        counters = {
            (k.decode() if isinstance(k, bytes) else str(k)): int(v)
            for k, v in self._redis.hgetall(self._counters).items()
        }
        samples = sorted(float(x) for x in self._redis.lrange(self._latency, 0, -1))

        def pct(p: float) -> float | None:
            return samples[min(len(samples) - 1, int(p * len(samples)))] if samples else None

        http = {k.removeprefix("http:"): v for k, v in counters.items() if k.startswith("http:")}
        retried = {k: v for k, v in http.items()
                   if k.split(":")[1] in {"429", "500", "502", "503", "504"}
                   or not k.split(":")[1].isdigit()}
        return {
            "jobs": {
                "in_flight": int(self._redis.zcard(f"{self._prefix}:due")),
                "succeeded": counters.get("outcome:SUCCESS", 0),
                "failed": counters.get("outcome:FAILURE", 0),
                "dead_letters": int(self._redis.zcard(f"{self._prefix}:dead")),
            },
            "failures_by_error": {k.removeprefix("error:"): v for k, v in counters.items()
                                  if k.startswith("error:")},
            "reroutes": counters.get("rerouted", 0),
            "routes_learnt_from_422": counters.get("route_learnt", 0),
            "adopted_after_lost_answer": counters.get("adopted", 0),
            "astria_requests": http,
            "retried_by_status": retried,
            "astria_latency_ms": {"samples": len(samples), "p50": pct(0.5), "p95": pct(0.95),
                                  "p99": pct(0.99)},
        }
