"""The capacity scenario: what one Redis holds and sustains, measured from outside.

1. Bytes per waiting job: 10,000 jobs whose prompts take an hour, all POSTed and waiting; Redis'
   `used_memory` against the same Redis before the first enqueue.
2. Commands, Redis CPU and bytes kept per job: 2,000 jobs, generation 1 s, from enqueue to outcome
   (Redis' `commandstats`, `used_cpu_*` and `used_memory` against the same before the first
   enqueue). Redis runs commands on one
   core, so one core's seconds divided by the CPU per job is the job rate one Redis sustains
   before it becomes the bottleneck.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from astria_local.simulator import SimConfig
from bench.run import Pool, Run, wait_all
from worker.constants import Keys


def _until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.5)


def _cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def bytes_per_waiting_job(url: str, pool: Pool, jobs: int = 10_000) -> dict[str, Any]:
    keys = Keys("astria")
    with Run(url, SimConfig(generation_seconds=3600), pool, tuned=True, callbacks=False) as run:
        before = int(run.client.info("memory")["used_memory"])
        for i in range(jobs):
            run.send({"tune_id": 42, "text": f"waiting {i}", "num_images": 4})

        def all_waiting() -> bool:
            inflight = sum(int(v) for v in run.client.hvals(keys.inflight))
            return inflight == jobs and run.client.hlen(keys.leases) == 0

        _until(all_waiting, 900, "jobs did not all reach Astria")
        used = int(run.client.info("memory")["used_memory"]) - before
        per_job = used / jobs
        return {"check": f"Redis bytes per waiting job ({jobs:,} waiting)",
                "measured": f"{per_job:,.0f} B ({used / 2**20:.1f} MiB in all): a million "
                            f"waiting is about {per_job * 1e6 / 2**30:.1f} GiB"}


def commands_per_job(url: str, pool: Pool, jobs: int = 2000) -> list[dict[str, Any]]:
    with Run(url, SimConfig(generation_seconds=1.0), pool, tuned=True, callbacks=False) as run:
        run.client.config_resetstat()
        memory = int(run.client.info("memory")["used_memory"])
        cpu = _cpu(run.client)
        ids = [run.send({"tune_id": 42, "text": f"job {i}"}) for i in range(jobs)]
        done = wait_all(run.client, ids, 600)
        cpu = _cpu(run.client) - cpu
        kept = (int(run.client.info("memory")["used_memory"]) - memory) / jobs
        stats = run.client.info("commandstats")
        calls = sum(int(v["calls"]) for v in stats.values())
        top = sorted(stats.items(), key=lambda kv: -int(kv[1]["calls"]))[:6]
        per_job_cpu = cpu / jobs
        return [
            {"check": f"Redis commands per job ({len(done)}/{jobs} done)",
             "measured": f"{calls / jobs:.1f} (most: " + ", ".join(
                 f"{name.removeprefix('cmdstat_')} {int(v['calls']) / jobs:.1f}"
                 for name, v in top) + ")"},
            {"check": "Redis bytes per finished job (record and result, kept "
                      "JOB_RETENTION_SECONDS)", "measured": f"{kept:,.0f} B"},
            {"check": "Redis CPU per job, and the job rate one Redis core sustains",
             "measured": f"{per_job_cpu * 1e6:.0f} µs: about {1 / per_job_cpu:,.0f} jobs/s "
                         "with Redis alone on a core"},
        ]


def main(url: str, pool: Pool) -> None:
    for result in (bytes_per_waiting_job(url, pool), *commands_per_job(url, pool)):
        print(f"{result['check']}: {result['measured']}", flush=True)
