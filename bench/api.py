"""The HTTP API's figures (`python -m bench api`): one API process under uvicorn, one worker,
the simulator (generation 1 s, answers in 250 ms, the rate limit out of the way).

1. `POST /v1/jobs` latency at 200 concurrent clients (keep-alive sessions, 5 jobs each).
2. `Prefer: wait=30` against the blocking Python producer (`enqueue` + `outcome`), 20 jobs each,
   one after the other: what the API adds to a job's own time.
3. Memory of the API process: idle, then with 1,000 requests held open in `Prefer: wait` on
   jobs that take an hour (each holds an asyncio future, not a thread), then with 1,000 idle
   event streams (`GET /v1/jobs/{id}/events`) of such jobs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis
import requests

from astria_local.redis_server import free_port
from astria_local.simulator import SimConfig
from bench.run import ROOT, TUNED, Pool, Run, _rss_mb, start
from worker.store.stats import percentile

TOKEN = "bench-api-token"
SLOW_TUNE = 77


def _api(run: Run, tenants: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    [proc] = start(["worker.cli", "api"], {**run.env, "TENANTS_FILE": str(tenants),
                                           "API_PORT": str(port),
                                           "API_RATE_PER_SECOND": "1000000",
                                           "API_RATE_BURST": "1000000"})
    run.procs.append(proc)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(base + "/openapi.json", timeout=1).ok:
                return base, proc
        except requests.RequestException:
            time.sleep(0.2)
    raise TimeoutError("the API did not start")


def _post_latencies(base: str, clients: int = 200, each: int = 5) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def client(i: int) -> None:
        with requests.Session() as session:
            for j in range(each):
                started = time.perf_counter()
                answer = session.post(base + "/v1/jobs", headers=headers, timeout=60,
                                      json={"tune_id": 42, "text": f"client {i} job {j}"})
                took = time.perf_counter() - started
                assert answer.status_code == 202, answer.text
                with lock:
                    latencies.append(took)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def _python_producer(run: Run, jobs: int) -> list[float]:
    code = ("import sys, time\nfrom worker import enqueue, outcome\n"
            "for i in range(int(sys.argv[1])):\n"
            "    t = time.perf_counter()\n"
            "    outcome(enqueue({'tune_id': 42, 'text': f'py {i}'}), timeout=60)\n"
            "    print(time.perf_counter() - t)\n")
    done = subprocess.run([sys.executable, "-c", code, str(jobs)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **run.env}, timeout=600, check=True)
    return [float(line) for line in done.stdout.split()]


def _prefer_wait(base: str, jobs: int) -> list[float]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Prefer": "wait=30"}
    out = []
    with requests.Session() as session:
        for i in range(jobs):
            started = time.perf_counter()
            answer = session.post(base + "/v1/jobs", headers=headers, timeout=60,
                                  json={"tune_id": 42, "text": f"wait {i}"})
            assert answer.status_code == 200, answer.text
            out.append(time.perf_counter() - started)
    return out


def _held_open(base: str, pid: int, client: redis.Redis, clients: int = 1000) -> float:
    """The API's RSS with `clients` requests waiting in Prefer: wait."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Prefer": "wait=60"}
    stop = threading.Event()

    def waiter(i: int) -> None:
        with requests.Session() as session, contextlib.suppress(requests.RequestException):
            session.post(base + "/v1/jobs", headers=headers, timeout=90,
                         json={"tune_id": SLOW_TUNE, "text": f"held {i}"})  # ends with the API
        stop.wait()

    threads = [threading.Thread(target=waiter, args=(i,), daemon=True) for i in range(clients)]
    def registered() -> int:
        return sum(1 for _ in client.scan_iter("astria:job:*", count=1000, _type="hash"))

    before = registered()
    for t in threads:
        t.start()
    deadline = time.monotonic() + 50  # inside the 60 s each request waits
    while registered() < before + clients:
        if time.monotonic() > deadline:
            raise TimeoutError("the held requests were not all registered")
        time.sleep(0.5)
    time.sleep(1.0)  # the last ones reach their wait
    rss = _rss_mb(pid)
    stop.set()
    return rss


def _idle_streams(base: str, pid: int, clients: int = 1000) -> float:
    """The API's RSS with `clients` event streams open on jobs that take an hour."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    ids = [requests.post(base + "/v1/jobs", headers=headers, timeout=30,
                         json={"tune_id": SLOW_TUNE, "text": f"streamed {i}"}).json()["id"]
           for i in range(clients)]
    opened = threading.Semaphore(0)
    stop = threading.Event()

    def stream(job_id: str) -> None:
        with contextlib.suppress(requests.RequestException), requests.get(
                f"{base}/v1/jobs/{job_id}/events", headers=headers, stream=True,
                timeout=120) as answer:
            next(answer.iter_lines())  # its first event is in
            opened.release()
            stop.wait()

    threads = [threading.Thread(target=stream, args=(job_id,), daemon=True) for job_id in ids]
    for t in threads:
        t.start()
    for _ in ids:
        if not opened.acquire(timeout=120):
            raise TimeoutError("the streams did not all open")
    rss = _rss_mb(pid)
    stop.set()
    return rss


def main(url: str, pool: Pool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tenants = Path(tmp) / "tenants.json"
        tenants.write_text(json.dumps({"tenants": {"bench": {
            "token_sha256": [hashlib.sha256(TOKEN.encode()).hexdigest()]}}}))
        sim = SimConfig(generation_seconds=1.0, latency_seconds=0.25,
                        generation_seconds_by_tune={SLOW_TUNE: 3600.0})
        with Run(url, sim, pool, tuned=True, callbacks=False, env=dict(TUNED)) as run:
            base, proc = _api(run, tenants)
            idle = _rss_mb(proc.pid)
            posts = _post_latencies(base)
            python = _python_producer(run, 20)
            api = _prefer_wait(base, 20)
            held = _held_open(base, proc.pid, run.client)
            streams = _idle_streams(base, proc.pid)
    p50, p99 = percentile(posts, 0.5) or 0, percentile(posts, 0.99) or 0
    rows = [
        ("POST /v1/jobs at 200 concurrent clients (1,000 jobs)",
         f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"),
        ("a job's time, Python producer (enqueue + outcome), median of 20",
         f"{statistics.median(python):.2f} s"),
        ("a job's time, POST with Prefer: wait=30, median of 20",
         f"{statistics.median(api):.2f} s"),
        ("API process RSS idle / with 1,000 requests held in Prefer: wait",
         f"{idle:.0f} MB / {held:.0f} MB"),
        ("API process RSS with 1,000 idle event streams open", f"{streams:.0f} MB"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"| {'API (' + str(pool) + ')':{width}} | measured |")
    print(f"|{'-' * (width + 2)}|----------|")
    for what, measured in rows:
        print(f"| {what:{width}} | {measured} |")
