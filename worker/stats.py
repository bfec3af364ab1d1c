"""`Stats`: counters and Astria latencies in Redis, shared by every worker (`astria-queue stats`).

Counters live in one hash (`{prefix}:stats`); latencies in a list capped at the last 2,000
requests, from which the CLI computes percentiles.
"""

from __future__ import annotations

from typing import Any

import redis

LATENCY_SAMPLES = 2000


class Stats:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._counters = f"{prefix}:stats"
        self._latency = f"{prefix}:stats:latency"

    def request(self, method: str, status: str, seconds: float) -> None:
        """One Astria request and how it ended (an HTTP status, or a network error's name)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hincrby(self._counters, f"http:{method}:{status}", 1)
        pipe.lpush(self._latency, round(seconds * 1000, 1))
        pipe.ltrim(self._latency, 0, LATENCY_SAMPLES - 1)
        pipe.execute()

    def count(self, *names: str) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.hincrby(self._counters, name, 1)
        pipe.execute()

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
