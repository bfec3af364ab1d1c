"""Running one benchmark scenario: its own Redis database, the simulator, the worker processes,
the jobs; and measuring what the table shows."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from astria_local.redis_server import free_port
from astria_local.simulator import AstriaSimulator, SimConfig
from worker.store.stats import percentile

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Pool:
    """How workers are started: W processes of `celery -A worker worker -P pool -c N`."""

    pool: str = "threads"
    concurrency: int = 8
    processes: int = 1

    def args(self, app: str) -> list[str]:
        return ["celery", "-A", app, "worker", "-P", self.pool, "-c", str(self.concurrency),
                "--loglevel", "ERROR", "--without-mingle", "--without-gossip"]

    def __str__(self) -> str:
        return f"{self.processes}x -P {self.pool} -c {self.concurrency}"


@dataclass
class Figures:
    jobs: int
    makespan: float
    latencies: list[float]
    states: dict[str, int]
    sim: dict[str, int]
    prompts: list[dict[str, Any]]
    peak_rss_mb: float
    total_rss_mb: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def succeeded(self) -> int:
        return self.states.get("SUCCESS", 0)

    def pct(self, p: float) -> float:
        return percentile(self.latencies, p) or 0.0


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
    """Peak resident memory every 250 ms: of any one worker process, and of all together."""

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


def start(args: list[str], env: dict[str, str], count: int = 1) -> list[subprocess.Popen[bytes]]:
    def name(i: int) -> list[str]:  # distinct Celery node names
        return ["-n", f"bench{i}-{secrets.token_hex(3)}@%h"] if args[0] == "celery" else []

    return [subprocess.Popen([sys.executable, "-m", *args, *name(i)], cwd=ROOT,
                             env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
            for i in range(count)]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


FINAL = (b'"SUCCESS"', b'"FAILURE"', b'"REVOKED"')


def wait_all(client: redis.Redis, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Poll the result backend until every id is final. Times come from each result's
    `date_done` (written by the worker), so this looks only twice a second."""
    done: dict[str, dict[str, Any]] = {}
    pending = list(ids)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        still = []
        for i in range(0, len(pending), 1000):
            chunk = pending[i:i + 1000]
            for job_id, raw in zip(chunk, client.mget([f"celery-task-meta-{j}" for j in chunk]),
                                   strict=True):
                if raw and any(state in raw for state in FINAL):
                    done[job_id] = json.loads(raw)
                else:
                    still.append(job_id)
        pending = still
        if pending:
            time.sleep(0.5)
    return done


def created(prompt: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(prompt["created_at"]).replace("Z", "+00:00")).timestamp()


def since(counters: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """The simulator's counters less a snapshot's (a peak, such as max_in_flight, as it is)."""
    return {k: v if k.startswith("max_") else v - before.get(k, 0) for k, v in counters.items()}


def done_at(meta: dict[str, Any]) -> float:
    return datetime.fromisoformat(meta["date_done"]).timestamp()


def ceiling(url: str, pool: Pool, tasks: int = 3000) -> float:
    """No-op Celery tasks per second on this Redis with this worker command: the median of
    three bursts (on a shared machine one burst can be off by a third either way)."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    procs = start(pool.args("bench.noop"), {"REDIS_URL": url}, pool.processes)
    app = Celery(broker=url, backend=url)
    try:
        app.send_task("noop.ping").get(timeout=60)  # workers are up
        rates = []
        for _ in range(3):
            started = time.time()
            ids = [app.send_task("noop.ping").id for _ in range(tasks)]
            rates.append(tasks / (max(map(done_at, wait_all(client, ids, 600).values()))
                                  - started))
        return sorted(rates)[1]
    finally:
        stop(procs)
        app.close()


TUNED = {  # the rate limit out of the way, polls at the generation time: the pipeline's own cost
    "ASTRIA_RATE_LIMIT_PER_SECOND": "100000", "ASTRIA_RATE_LIMIT_BURST": "100000",
    "ASTRIA_POLL_INTERVAL": "1", "SCHEDULER_TICK_SECONDS": "0.1",
}


class Run:
    """One scenario's stack: Redis database, simulator, receiver, workers; `with` cleans up."""

    def __init__(self, url: str, sim: SimConfig, pool: Pool, *, tuned: bool, callbacks: bool,
                 env: dict[str, str] | None = None) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url)
        self.client.flushdb()
        sim.api_key = secrets.token_hex(8)
        self.sim = AstriaSimulator(sim).start()
        self.env = {"REDIS_URL": url, "ASTRIA_API_KEY": sim.api_key,
                    "ASTRIA_BASE_URL": self.sim.url, **(env or {})}
        if tuned:
            self.env.update(TUNED, ASTRIA_FIRST_POLL_SECONDS=str(sim.generation_seconds))
        self.procs: list[subprocess.Popen[bytes]] = []
        if callbacks:
            port = free_port()
            self.env["ASTRIA_CALLBACK_URL"] = f"http://127.0.0.1:{port}/astria/callback"
            self.procs += start(["gunicorn", "-c", "python:worker.edge.gunicorn_conf",
                                 "worker.edge.receiver:app"],
                                {**self.env, "CALLBACK_HOST": "127.0.0.1",
                                 "CALLBACK_PORT": str(port), "CALLBACK_WORKERS": "1"})
        self.workers = start(pool.args("worker"), self.env, pool.processes)
        self.procs += self.workers
        self.app = Celery(broker=url, backend=url)
        self.sampler = RssSampler([p.pid for p in self.workers])
        self.sampler.start()
        time.sleep(2)  # workers connect

    def send(self, spec: dict[str, Any], **options: Any) -> str:
        return str(self.app.send_task("astria.submit_prompt", kwargs={"spec": spec},
                                      **options).id)

    def measure(self, enqueued: dict[str, float], started: float, timeout: float,
                before: dict[str, int] | None = None) -> Figures:
        """The jobs `enqueued`, once done; the simulator's counters counted from `before` (a
        snapshot taken after a warm-up), its prompts those created since `started`."""
        done = wait_all(self.client, list(enqueued), timeout)
        peak, total = self.sampler.stop()
        states: dict[str, int] = {}
        for meta in done.values():
            states[meta["status"]] = states.get(meta["status"], 0) + 1
        states["lost"] = len(enqueued) - len(done)
        return Figures(
            jobs=len(enqueued),
            makespan=max(map(done_at, done.values())) - started if done else float("inf"),
            latencies=[done_at(m) - enqueued[j] for j, m in done.items()],
            states=states, sim=since(self.sim.counters, before or {}),
            prompts=[p for p in self.sim.prompts() if created(p) >= started],
            peak_rss_mb=peak, total_rss_mb=total)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        stop(self.procs)
        self.sim.stop()
        self.app.close()
