"""Benchmark: throughput, latency, Astria requests per job and worker memory, beside the ceiling.

    python -m bench [--repeat 3]         # the four target scenarios of issue 4, one table
    python -m bench --jobs 2000 --generation 3 [--callbacks] [--workers 2 --pool threads -c 16]

It starts its own Redis, the simulator and W worker processes; nothing else is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from worker.redis_server import ThrowawayRedis, free_port
from worker.simulator import AstriaSimulator, SimConfig

ROOT = Path(__file__).resolve().parent.parent
CEILING_TASKS = 3000


@dataclass
class Figures:
    jobs: int
    generation: float
    makespan: float
    latencies: list[float]
    posts: int
    gets: int
    peak_rss_mb: float
    total_rss_mb: float
    errors: int
    ceiling: float

    def row(self) -> dict[str, str]:
        lat = sorted(self.latencies) or [0.0]

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p * len(lat)))]

        ideal = self.generation + self.jobs / self.ceiling
        rate = self.jobs / self.makespan
        return {
            "jobs": str(self.jobs), "gen s": f"{self.generation:g}",
            "jobs/s": f"{rate:.0f}", "p50 s": f"{pct(0.5):.2f}", "p95 s": f"{pct(0.95):.2f}",
            "p99 s": f"{pct(0.99):.2f}", "POST/job": f"{self.posts / self.jobs:.2f}",
            "GET/job": f"{self.gets / self.jobs:.2f}", "peak RSS MB": f"{self.peak_rss_mb:.0f}",
            "all RSS MB": f"{self.total_rss_mb:.0f}",
            "errors": str(self.errors), "ceiling/s": f"{self.ceiling:.0f}",
            "throughput/ceiling": f"{rate / self.ceiling:.0%}",
            "ideal s": f"{ideal:.1f}", "makespan s": f"{self.makespan:.1f}",
            "makespan/ideal": f"{self.makespan / ideal:.2f}",
        }


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _tree(pid: int) -> list[int]:
    """A process and its descendants (a prefork worker's pool processes)."""
    pids, i = [pid], 0
    while i < len(pids):
        try:
            children = Path(f"/proc/{pids[i]}/task/{pids[i]}/children").read_text().split()
        except OSError:
            children = []
        pids += [int(c) for c in children]
        i += 1
    return pids


class RssSampler(threading.Thread):
    """Peak resident memory, every 250 ms: of any one worker process (a prefork worker's pool
    processes included), and of all worker processes together."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids, self.peak, self.peak_total, self._done = pids, 0.0, 0.0, threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.25):
            sizes = [_rss_mb(p) for root in self.pids for p in _tree(root)]
            self.peak = max([self.peak, *sizes])
            self.peak_total = max(self.peak_total, sum(sizes))

    def stop(self) -> tuple[float, float]:
        self._done.set()
        self.join()
        return self.peak, self.peak_total


def _start(args: list[str], env: dict[str, str], count: int) -> list[subprocess.Popen[bytes]]:
    def name(i: int) -> list[str]:  # distinct Celery node names
        return ["-n", f"bench{i}-{secrets.token_hex(3)}@%h"] if args[0] == "celery" else []

    return [
        subprocess.Popen([sys.executable, "-m", *args, *name(i)], cwd=ROOT,
                         env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
        for i in range(count)
    ]


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _wait_all(client: redis.Redis, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Poll the result backend until every id is SUCCESS or FAILURE.

    Times come from each result's `date_done`, not from this loop, so it looks only twice a
    second and decodes only finished results: it shares the CPU with what it measures."""
    done: dict[str, dict[str, Any]] = {}
    pending = list(ids)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        still = []
        for start in range(0, len(pending), 1000):
            chunk = pending[start:start + 1000]
            for job_id, raw in zip(chunk, client.mget([f"celery-task-meta-{j}" for j in chunk]),
                                   strict=True):
                if raw and (b'"SUCCESS"' in raw or b'"FAILURE"' in raw):
                    done[job_id] = json.loads(raw)
                else:
                    still.append(job_id)
        pending = still
        if pending:
            time.sleep(0.5)
    return done


def _last_done(done: dict[str, dict[str, Any]]) -> float:
    """When the last of these results was written (by the worker, to the millisecond)."""
    return max(datetime.fromisoformat(m["date_done"]).timestamp() for m in done.values())


def _worker_args(pool: str, concurrency: int, app: str) -> list[str]:
    return ["celery", "-A", app, "worker", "-P", pool, "-c", str(concurrency), "--loglevel",
            "ERROR", "--without-mingle", "--without-gossip"]


def ceiling(url: str, jobs: int, workers: int, pool: str, concurrency: int) -> float:
    """No-op Celery tasks per second on this Redis with these workers: the median of three bursts
    (on a shared machine one burst can be off by a third either way)."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    procs = _start(_worker_args(pool, concurrency, "bench.noop"), {"REDIS_URL": url}, workers)
    app = Celery(broker=url, backend=url)
    try:
        app.send_task("noop.ping").get(timeout=60)  # workers are up
        rates = []
        for _ in range(3):
            started = time.time()
            ids = [app.send_task("noop.ping").id for _ in range(jobs)]
            rates.append(jobs / (_last_done(_wait_all(client, ids, 600)) - started))
        return sorted(rates)[1]
    finally:
        _stop(procs)
        app.close()


def pipeline(url: str, jobs: int, generation: float, workers: int, pool: str, concurrency: int,
             callbacks: bool, ceiling_rate: float) -> Figures:
    client = redis.Redis.from_url(url)
    client.flushdb()
    key = secrets.token_hex(8)
    sim = AstriaSimulator(SimConfig(api_key=key, generation_seconds=generation)).start()
    env = {
        "REDIS_URL": url, "ASTRIA_API_KEY": key, "ASTRIA_BASE_URL": sim.url,
        "ASTRIA_RATE_LIMIT_PER_SECOND": "100000", "ASTRIA_RATE_LIMIT_BURST": "100000",
        "ASTRIA_FIRST_POLL_SECONDS": str(generation), "ASTRIA_POLL_INTERVAL": "1",
        "ASTRIA_POLL_BACKOFF": "1.5", "SCHEDULER_TICK_SECONDS": "0.1",
        "ASTRIA_CALLBACK_FALLBACK_SECONDS": "30",
    }
    procs: list[subprocess.Popen[bytes]] = []
    if callbacks:
        port = free_port()
        env["ASTRIA_CALLBACK_URL"] = f"http://127.0.0.1:{port}/astria/callback"
        procs += _start(["worker.cli", "callbacks", "--host", "127.0.0.1", "--port", str(port)],
                        env, 1)
    worker_procs = _start(_worker_args(pool, concurrency, "worker"), env, workers)
    procs += worker_procs
    app = Celery(broker=url, backend=url)
    sampler = RssSampler([p.pid for p in worker_procs])
    sampler.start()
    try:
        time.sleep(2)  # workers connect
        enqueued: dict[str, float] = {}
        started = time.time()
        for i in range(jobs):
            job = app.send_task("astria.submit_prompt",
                                kwargs={"spec": {"tune_id": 42, "text": f"bench {i}"}})
            enqueued[job.id] = time.time()
        done = _wait_all(client, list(enqueued), 900)
        peak, total = sampler.stop()
        latencies = [datetime.fromisoformat(m["date_done"]).timestamp() - enqueued[j]
                     for j, m in done.items()]
        counters = sim.counters
        return Figures(
            jobs=jobs, generation=generation,
            makespan=_last_done(done) - started if done else float("inf"),
            latencies=latencies, posts=counters.get("created", 0), gets=counters.get("get", 0),
            peak_rss_mb=peak, total_rss_mb=total, ceiling=ceiling_rate,
            errors=sum(1 for m in done.values() if m["status"] != "SUCCESS") + jobs - len(done),
        )
    finally:
        _stop(procs)
        sim.stop()
        app.close()


def print_table(rows: list[dict[str, str]]) -> None:
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    print("| " + " | ".join(c.ljust(widths[c]) for c in columns) + " |")
    print("|" + "|".join("-" * (widths[c] + 2) for c in columns) + "|")
    for r in rows:
        print("| " + " | ".join(r[c].ljust(widths[c]) for c in columns) + " |")


@dataclass(frozen=True)
class Scenario:
    label: str
    jobs: int
    generation: float
    callbacks: bool
    workers: int
    pool: str
    concurrency: int

    @property
    def workers_text(self) -> str:
        return f"{self.workers}x -P {self.pool} -c {self.concurrency}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, help="run one scenario with this many jobs")
    parser.add_argument("--generation", type=float, default=3.0)
    parser.add_argument("--callbacks", action="store_true")
    parser.add_argument("--workers", type=int, default=1, help="worker hosts (celery processes)")
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each scenario this many times; the table shows the median run")
    args = parser.parse_args()
    pool = (args.workers, args.pool, args.concurrency)
    if args.jobs:
        label = f"custom{' +callbacks' if args.callbacks else ''}"
        scenarios = [Scenario(label, args.jobs, args.generation, args.callbacks, *pool)]
    else:
        scenarios = [
            Scenario("gen 3 s, polling", 2000, 3.0, False, *pool),
            Scenario("gen 0 s, polling", 2000, 0.0, False, *pool),
            Scenario("gen 3 s, callbacks", 2000, 3.0, True, *pool),
            # One worker process holds all 10,000 (the threads pool has no child processes).
            Scenario("10k in flight, 1 process", 10000, 60.0, True, 1, "threads", 16),
        ]
    rows = []
    with ThrowawayRedis() as server:
        for sc in scenarios:
            runs = []
            for _ in range(args.repeat):
                # Measured next to each run: a shared machine's speed drifts within minutes.
                rate = ceiling(server.url, CEILING_TASKS, sc.workers, sc.pool, sc.concurrency)
                figures = pipeline(server.url, sc.jobs, sc.generation, sc.workers, sc.pool,
                                   sc.concurrency, sc.callbacks, rate)
                runs.append({"scenario": sc.label, "workers": sc.workers_text, **figures.row()})
                print(json.dumps(runs[-1]), flush=True)
            runs.sort(key=lambda r: float(r["makespan/ideal"]))
            rows.append(runs[len(runs) // 2])
    print()
    print_table(rows)


if __name__ == "__main__":
    main()
