"""The hostile scenario: what a producer's bad choices cost everyone else.

1. Another tenant beside a trickling webhook endpoint: tenant `slow` enqueues 600 jobs whose
   webhook endpoint answers one byte every half second for ever; right after, tenant `other`
   enqueues 300 jobs with no webhook. Tenant other's throughput and p95, beside the same run
   where slow's endpoint answers at once. Generation 1 s, answers in 250 ms, the rate limit out
   of the way (what is measured is the pool, not Astria's limit).
2. Redis bytes per job with a 4 MiB inline image (`input_image_base64`): 20 such jobs waiting
   for their prompts (generation 1 h), then 20 finished; `used_memory` against the same Redis
   before the first enqueue.
"""

from __future__ import annotations

import base64
import os
import time
from typing import Any

from astria_local.simulator import SimConfig
from astria_local.webhook_endpoint import WebhookEndpoint
from bench.run import TUNED, Pool, Run, done_at, wait_all
from worker.constants import Keys
from worker.store.stats import percentile

SECRET = "whsec_" + base64.b64encode(b"bench-hostile-webhooks-key-32byt").decode()
#: A 4 MiB data URL: 3 MiB of image bytes, base64.
IMAGE = "data:image/png;base64," + base64.b64encode(os.urandom(3 * 1024 * 1024 - 64)).decode()


def beside_an_endpoint(url: str, pool: Pool, *, trickle: bool) -> dict[str, Any]:
    endpoint = WebhookEndpoint(SECRET, trickle=trickle)
    env = {**TUNED, "WEBHOOK_SECRET": SECRET, "WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "true"}
    try:
        with Run(url, SimConfig(generation_seconds=1.0, latency_seconds=0.25), pool,
                 tuned=False, callbacks=False, env=env) as run:
            slow = [run.send({"tune_id": 42, "text": f"slow {i}", "tenant": "slow",
                              "callback": endpoint.url}) for i in range(600)]
            started = time.time()
            other: dict[str, float] = {}
            for i in range(300):
                other[run.send({"tune_id": 42, "text": f"other {i}", "tenant": "other"})] = (
                    time.time())
            done = wait_all(run.client, list(other), 600)
            slow_done = wait_all(run.client, slow, 600)
            makespan = max(map(done_at, done.values())) - started if done else float("inf")
            latencies = [done_at(m) - other[j] for j, m in done.items()]
            return {"endpoint": "trickling" if trickle else "answers at once",
                    "other done": f"{len(done)}/300", "other jobs/s": f"{len(done) / makespan:.1f}",
                    "other p95 s": f"{percentile(latencies, 0.95) or 0:.2f}",
                    "other makespan s": f"{makespan:.1f}", "slow done": f"{len(slow_done)}/600",
                    "endpoint connections": str(endpoint.connections),
                    "most open at once": str(endpoint.most_open)}
    finally:
        endpoint.close()


def inline_image_bytes(url: str, pool: Pool, jobs: int = 20) -> list[dict[str, Any]]:
    keys = Keys("astria")
    rows = []
    for label, generation in (("waiting for its prompt", 3600.0), ("finished", 1.0)):
        with Run(url, SimConfig(generation_seconds=generation), pool, tuned=True,
                 callbacks=False) as run:
            before = int(run.client.info("memory")["used_memory"])
            ids = [run.send({"tune_id": 42, "text": f"inline {i}", "input_image_base64": IMAGE})
                   for i in range(jobs)]
            if generation > 60:
                deadline = time.monotonic() + 300
                while sum(int(v) for v in run.client.hvals(keys.inflight)) < jobs:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the jobs did not all reach Astria")
                    time.sleep(0.5)
                while run.client.hlen(keys.leases):
                    time.sleep(0.2)
            else:
                wait_all(run.client, ids, 300)
            used = int(run.client.info("memory")["used_memory"]) - before
            rows.append({"check": f"Redis bytes per job with a 4 MiB inline image, {label}",
                         "measured": f"{used / jobs:,.0f} B ({jobs} jobs)"})
    return rows


def main(url: str, pool: Pool) -> None:
    rows = [beside_an_endpoint(url, pool, trickle=False),
            beside_an_endpoint(url, pool, trickle=True)]
    print(f"tenant other (300 jobs) beside tenant slow's 600 webhooks, worker: {pool}")
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in columns) + " |")
    print()
    for r in inline_image_bytes(url, pool):
        print(f"{r['check']}: {r['measured']}", flush=True)
