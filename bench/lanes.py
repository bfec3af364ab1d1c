"""The lanes scenario: priority lanes, fair tenants and cancellation under the default rate limit
(10 POSTs a second), generation 1 s, answers in 250 ms, the recommended worker command.

1. From a cold start (no generation time learnt), 2,000 batch jobs of tenant `bulk`, then 10
   interactive jobs of tenant `app`, one a second: the interactive jobs' p95 from enqueue to
   outcome, with answers at once (target: at most 3 s) and in 250 ms (reported beside it).
2. Tenant `big` enqueues 3,000 normal jobs, then tenant `small` 100: when small's last job is
   done, from its first enqueue (target: within 60 s).
3. 400 jobs, the last 200 revoked with `app.control.revoke` right after enqueueing: all 200
   REVOKED, none reaches Astria, the other 200 succeed.
"""

from __future__ import annotations

import time
from typing import Any

from astria_local.simulator import SimConfig
from bench.run import Pool, Run, done_at, wait_all
from worker.store.stats import percentile

GENERATION, LATENCY = 1.0, 0.25


def _stack(url: str, pool: Pool, latency: float = LATENCY) -> Run:
    return Run(url, SimConfig(generation_seconds=GENERATION, latency_seconds=latency), pool,
               tuned=False, callbacks=False)


def interactive_behind_batch(url: str, pool: Pool, latency: float) -> dict[str, Any]:
    with _stack(url, pool, latency) as run:
        for i in range(2000):
            run.send({"tune_id": 42, "text": f"bulk {i}", "priority": "batch",
                      "tenant": "bulk"})
        enqueued: dict[str, float] = {}
        for i in range(10):
            job = run.send({"tune_id": 42, "text": f"app {i}", "priority": "interactive",
                            "tenant": "app"})
            enqueued[job] = time.time()
            time.sleep(1.0)
        done = wait_all(run.client, list(enqueued), 120)
        latencies = [done_at(m) - enqueued[j] for j, m in done.items()]
        p95 = percentile(latencies, 0.95) or float("inf")
        return {"check": f"10 interactive jobs behind 2,000 batch jobs, cold start, answers in "
                         f"{latency * 1000:.0f} ms",
                "measured": f"p50 {percentile(latencies, 0.5) or 0:.1f} s, p95 {p95:.1f} s, "
                            f"{len(done)}/10 succeeded",
                "target": "p95 <= 3 s", "met": len(done) == 10 and p95 <= 3}


def small_tenant_behind_big(url: str, pool: Pool) -> dict[str, Any]:
    with _stack(url, pool) as run:
        for i in range(3000):
            run.send({"tune_id": 42, "text": f"big {i}", "tenant": "big"})
        started = time.time()
        small = [run.send({"tune_id": 42, "text": f"small {i}", "tenant": "small"})
                 for i in range(100)]
        done = wait_all(run.client, small, 300)
        last = max(map(done_at, done.values())) - started if done else float("inf")
        big_posts = sum(1 for p in run.sim.prompts() if p["text"].startswith("big"))
        return {"check": "100 jobs of tenant small behind 3,000 of tenant big",
                "measured": f"small's last done after {last:.1f} s "
                            f"({len(done)}/100; big had {big_posts} prompts by then)",
                "target": "<= 60 s", "met": len(done) == 100 and last <= 60}


def revoked_right_after_enqueueing(url: str, pool: Pool) -> dict[str, Any]:
    with _stack(url, pool) as run:
        jobs = [run.send({"tune_id": 42, "text": f"job {i}"}) for i in range(400)]
        for job in jobs[200:]:
            run.app.control.revoke(job)
        done = wait_all(run.client, jobs, 300)
        revoked = sum(1 for j in jobs[200:] if done.get(j, {}).get("status") == "REVOKED")
        succeeded = sum(1 for j in jobs[:200] if done.get(j, {}).get("status") == "SUCCESS")
        texts = {p["text"] for p in run.sim.prompts()}
        posted = sum(1 for i in range(200, 400) if f"job {i}" in texts)
        return {"check": "400 jobs, the last 200 revoked right after enqueueing",
                "measured": f"{revoked}/200 REVOKED, {posted} of them reached Astria, "
                            f"{succeeded}/200 others succeeded",
                "target": "200 REVOKED, 0 posted, 200 succeeded",
                "met": revoked == 200 and posted == 0 and succeeded == 200}


def main(url: str, pool: Pool) -> None:
    rows = [interactive_behind_batch(url, pool, 0.0), interactive_behind_batch(url, pool, LATENCY),
            *(check(url, pool) for check in (small_tenant_behind_big,
                                             revoked_right_after_enqueueing))]
    print(f"lanes, worker: {pool}, default settings, generation {GENERATION:g} s, "
          f"latency {LATENCY:g} s unless a row says otherwise")
    print("| check | measured | target | met |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['check']} | {r['measured']} | {r['target']} | {'yes' if r['met'] else 'NO'} |")
