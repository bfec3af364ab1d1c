"""Test harness: a real Redis, the simulator over real HTTP, and real Celery worker processes.

Each `Stack` gets its own Redis database (on the throwaway server) or its own key prefix (on a
REDIS_URL you gave), its own simulator, and starts workers as subprocesses with its environment.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import requests
from celery import Celery
from celery.result import AsyncResult

from astria_local.redis_server import free_port
from astria_local.simulator import AstriaSimulator, SimConfig
from worker.constants import Keys
from worker.settings import Settings
from worker.store.batches import Batches
from worker.store.jobs import JobStore
from worker.store.results import ResultFormat
from worker.store.scripts import Scripts

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk-test-" + uuid.uuid4().hex  # a key that must never show up anywhere
PTI_TUNE, FACEID_TUNE, SLOW_TUNE, FLUX_TUNE, LIST_TUNE = 2001, 2002, 2003, 2004, 2005
_databases = itertools.count(1)


def terminal_states(client: redis.Redis, job_ids: list[str]) -> dict[str, str]:
    """Job id -> SUCCESS, FAILURE or REVOKED, for the jobs whose result document says so."""
    states: dict[str, str] = {}
    for start in range(0, len(job_ids), 200):
        chunk = job_ids[start:start + 200]
        for job_id, raw in zip(chunk, client.mget([f"celery-task-meta-{j}" for j in chunk]),
                               strict=True):
            if raw:
                status = json.loads(raw)["status"]
                if status in ("SUCCESS", "FAILURE", "REVOKED"):
                    states[job_id] = status
    return states


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Stack:
    def __init__(self, base_url: str, owns_server: bool, sim_config: SimConfig | None = None,
                 **env: Any) -> None:
        if owns_server:
            db = next(_databases) % 16
            self.redis_url = base_url.rsplit("/", 1)[0] + f"/{db}"
            redis.Redis.from_url(self.redis_url).flushdb()
        else:
            self.redis_url = base_url
        self.prefix = "astria-test-" + uuid.uuid4().hex[:8]
        cfg = sim_config or SimConfig()
        cfg.api_key = API_KEY
        cfg.pti_tunes = cfg.pti_tunes or {PTI_TUNE}
        cfg.faceid_tunes = cfg.faceid_tunes or {FACEID_TUNE}
        cfg.flux_tunes = cfg.flux_tunes or {FLUX_TUNE}
        cfg.list_answer_tunes = cfg.list_answer_tunes or {LIST_TUNE: 3}
        cfg.generation_seconds_by_tune.setdefault(SLOW_TUNE, 3600)
        self.sim = AstriaSimulator(cfg).start()
        self.env = {
            "REDIS_URL": self.redis_url, "ASTRIA_API_KEY": API_KEY,
            "ASTRIA_BASE_URL": self.sim.url, "KEY_PREFIX": self.prefix,
            "ASTRIA_FIRST_POLL_SECONDS": "0.5", "ASTRIA_POLL_INTERVAL": "0.5",
            "ASTRIA_POLL_BACKOFF": "1", "ASTRIA_RETRY_INITIAL_DELAY": "0.05",
            "ASTRIA_RETRY_MAX_DELAY": "0.5", "ASTRIA_READ_TIMEOUT": "5",
            "ASTRIA_AMBIGUOUS_GRACE_SECONDS": "15",  # the least a 5 s read timeout allows
            "ASTRIA_RATE_LIMIT_PER_SECOND": "500", "ASTRIA_RATE_LIMIT_BURST": "500",
            "SCHEDULER_TICK_SECONDS": "0.1",
            # the tests' webhook endpoints listen on loopback
            "WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "true",
            **{k.upper(): str(v) for k, v in env.items()},
        }
        self.app = Celery(broker=self.redis_url, backend=self.redis_url)
        self.app.conf.update(task_serializer="json", result_serializer="json",
                             accept_content=["json"])
        self.redis = redis.Redis.from_url(self.redis_url)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start_worker(self, concurrency: int = 8, pool: str = "threads",
                     **env: Any) -> subprocess.Popen[bytes]:
        log = Path(f"/tmp/astria-test-worker-{self.prefix}-{len(self.workers)}.log")
        full_env = {**os.environ, **self.env, **{k.upper(): str(v) for k, v in env.items()}}
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker", "worker", "-P", pool, "-c",
             str(concurrency), "--loglevel", "INFO", "--without-mingle", "--without-gossip",
             "-n", f"w{len(self.workers)}-{self.prefix}@%h"],
            cwd=ROOT, env=full_env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(proc)
        self.logs.append(log)
        return proc

    def wait_ready(self, timeout: float = 60) -> None:
        """Until a worker answers a broadcast (so that a revoke reaches it)."""
        wait_for(lambda: self.app.control.ping(timeout=0.5), timeout, "a worker to answer")

    def cancel(self, job_id: str) -> str:
        """`worker.cancel` against this stack: straight to its Redis, no worker needed."""
        settings = Settings(redis_url=self.redis_url, key_prefix=self.prefix)
        store = JobStore(redis.Redis.from_url(self.redis_url), settings, Keys(self.prefix),
                         ResultFormat(settings.job_retention_seconds))
        return store.cancel(job_id)

    def send(self, spec: Any, **options: Any) -> str:
        """Enqueue by name, exactly as a producer that does not import this project does."""
        return str(self.app.send_task("astria.submit_prompt", kwargs={"spec": spec}, **options).id)

    def batches(self, client: redis.Redis | None = None) -> Batches:
        """This stack's batches in the store (on `client`, by default its Redis)."""
        client = client or redis.Redis.from_url(self.redis_url)
        return Batches(client, Keys(self.prefix), Scripts(client), 3600)

    def send_batch(self, specs: list[dict[str, Any]], tenant: str, callback: str | None = None
                   ) -> tuple[str, list[str]]:
        """A batch of `specs` (all of `tenant`) created, then its members sent by name with
        their batch_id, as `enqueue_batch` does; its id and its members' job ids."""
        batch_id = "batch-" + uuid.uuid4().hex[:12]
        self.batches().create(batch_id, tenant, len(specs), callback)
        ids = Batches.member_ids(batch_id, len(specs))
        for job_id, spec in zip(ids, specs, strict=True):
            self.app.send_task("astria.submit_prompt", task_id=job_id,
                               kwargs={"spec": spec, "batch_id": batch_id})
        return batch_id, ids

    def result(self, job_id: str) -> AsyncResult:
        return AsyncResult(job_id, app=self.app)

    def outcome(self, job_id: str, timeout: float = 30) -> Any:
        return self.result(job_id).get(timeout=timeout, propagate=False)

    def sim_json(self, path: str) -> Any:
        return requests.get(self.sim.url + path, timeout=5).json()

    def cli(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        """Run `astria-queue ARGS` against this stack."""
        return subprocess.run([sys.executable, "-m", "worker.cli", *args], cwd=ROOT,
                              env={**os.environ, **self.env, **env}, capture_output=True,
                              text=True, timeout=120, check=check)

    def kill_worker(self, proc: subprocess.Popen[bytes]) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def worker_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def stop_processes(self) -> None:
        """Stop the workers and servers started, as a deployment does (SIGTERM), then kill what
        has not stopped within 15 s. Before their Redis goes, or each waits for it in vain."""
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        # a connection still open to a receiver holds its graceful stop for its keepalive
        # (15 s): the simulator's kept-alive callback senders, and a test's request whose
        # connection only the garbage collector closes
        self.sim.stop()
        gc.collect()
        for proc in self.workers:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def close(self) -> None:
        self.stop_processes()
        self.app.close()


def start_callback_receiver(stack: Stack) -> str:
    """Run the receiver with the Procfile's own command; returns its callback URL and sets
    ASTRIA_CALLBACK_URL."""
    port = free_port()
    log = Path(f"/tmp/astria-test-callbacks-{stack.prefix}.log")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:worker.edge.gunicorn_conf",
         "worker.edge.receiver:app"],
        cwd=ROOT, env={**os.environ, **stack.env, "CALLBACK_HOST": "127.0.0.1",
                       "CALLBACK_PORT": str(port), "CALLBACK_WORKERS": "1"},
        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    stack.workers.append(proc)
    stack.logs.append(log)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(base + "/healthz"), 30, "the callback receiver")
    stack.env["ASTRIA_CALLBACK_URL"] = base + "/astria/callback"
    return stack.env["ASTRIA_CALLBACK_URL"]


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False


def start_api(stack: Stack, tenants_file: Path, **env: Any) -> str:
    """Run the HTTP API with the Procfile's own command (`astria-queue api`) on a free port of
    loopback; returns its base URL."""
    port = free_port()
    log = Path(f"/tmp/astria-test-api-{stack.prefix}-{port}.log")
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "api"], cwd=ROOT,
        env={**os.environ, **stack.env, "API_HOST": "127.0.0.1", "API_PORT": str(port),
             "TENANTS_FILE": str(tenants_file), **{k.upper(): str(v) for k, v in env.items()}},
        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    stack.workers.append(proc)
    stack.logs.append(log)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(base + "/openapi.json"), 30, "the API")
    return base
