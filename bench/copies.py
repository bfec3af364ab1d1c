"""The copies scenario: durable copies' cost (STORAGE_URL to a throwaway SeaweedFS S3 server).

500 jobs of 2 images of 1 MiB each, generation 1 s, answers in 250 ms, the rate limit out of the
way; the same run without copies beside it. Outcomes: jobs/s and p95 (do copies slow the
outcomes?); copies: images/s and MB/s from the first outcome to the last `stored`, and each
job's outcome-to-stored time (its `stored` event against its result's `date_done`); the
worker's RSS (the whole prefork tree) with and without.
"""

from __future__ import annotations

import json
import time
from typing import Any

from astria_local.s3_server import ThrowawayS3
from astria_local.simulator import SimConfig
from bench.run import Pool, Run, done_at
from worker.constants import Keys
from worker.store.stats import percentile

JOBS, IMAGES, KIB = 500, 2, 1024


def stored_at(run: Run, keys: Keys, job_id: str) -> float | None:
    """When the job's `stored` event was appended, if it was."""
    for _, fields in run.client.xrevrange(keys.events(job_id), count=5):
        event = json.loads(fields[b"event"])
        if event["type"] == "stored":
            return float(event["at"])
    return None


def one(url: str, pool: Pool, storage: dict[str, str]) -> dict[str, Any]:
    keys = Keys("astria")
    with Run(url, SimConfig(generation_seconds=1.0, latency_seconds=0.25, image_kib=KIB), pool,
             tuned=True, callbacks=False, env=storage) as run:
        started = time.time()
        enqueued = {run.send({"tune_id": 42, "text": f"copy {i}", "num_images": IMAGES}):
                    time.time() for i in range(JOBS)}
        figures = run.measure(enqueued, started, 600)
        row: dict[str, Any] = {
            "copies": "S3 (SeaweedFS)" if storage else "none",
            "outcomes jobs/s": f"{figures.jobs / figures.makespan:.1f}",
            "outcome p95 s": f"{percentile(figures.latencies, 0.95) or 0:.2f}",
            "worker RSS MB": f"{figures.total_rss_mb:.0f}"}
        if storage:
            done = {job_id: meta for job_id in enqueued
                    if (meta := json.loads(run.client.get(f"celery-task-meta-{job_id}") or "{}"))}
            deadline, stored = time.monotonic() + 600, {}
            while len(stored) < len(done) and time.monotonic() < deadline:
                stored = {j: at for j in done if (at := stored_at(run, keys, j)) is not None}
                time.sleep(0.5)
            lags = [stored[j] - done_at(done[j]) for j in stored]
            span = max(stored.values()) - min(done_at(m) for m in done.values())
            images = len(stored) * IMAGES
            row.update({"stored": f"{len(stored)}/{len(done)} jobs",
                        "images/s": f"{images / span:.1f}",
                        "MB/s": f"{images * KIB / 1024 / span:.1f}",
                        "outcome→stored p50/p95 s": f"{percentile(lags, 0.5) or 0:.2f} / "
                                                   f"{percentile(lags, 0.95) or 0:.2f}"})
        return row


def main(url: str, pool: Pool) -> None:
    rows = [one(url, pool, {})]
    with ThrowawayS3() as s3:
        rows.append(one(url, pool, {
            "STORAGE_URL": "s3://images/bench", "STORAGE_ENDPOINT_URL": s3.endpoint,
            "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1"}))
    from bench.__main__ import print_table

    print_table([{k: str(r.get(k, "")) for k in {k: 0 for r in rows for k in r}} for r in rows])
