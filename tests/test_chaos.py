"""Chaos: hundreds of jobs in mixed lanes and tenants while Astria misbehaves, jobs are
cancelled at random, workers are SIGKILLed and Redis restarts.

Asserts every job reaches a terminal outcome, none is lost, no prompt is created twice (counted on
the simulator), a cancelled job ends REVOKED unless it had ended already, and POST attempts stay
bounded; tenant t1's jobs are one batch, which completes once, with counts equal to its members'
states and exactly one batch.completed webhook; every succeeded job's image is stored once, with
its source's sha256, in a throwaway S3 server behind a proxy that fails or stalls some PUTs;
prints the figures.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from astria_local.redis_server import ThrowawayRedis
from astria_local.s3_server import ThrowawayS3
from astria_local.sim_http import image_bytes
from astria_local.simulator import SimConfig
from astria_local.webhook_endpoint import WebhookEndpoint
from tests.harness import Stack, terminal_states, wait_for
from tests.s3_server import FaultyProxy

pytestmark = pytest.mark.slow  # starts worker processes

JOBS = int(os.environ.get("CHAOS_JOBS", "300"))
WORKERS = 3
RETRY_ATTEMPTS = 8
CANCELS = 30
MIN_KILLS, MAX_KILLS = 5, 15
SECRET = "whsec_" + base64.b64encode(b"chaos-batch-signing-key-32-bytes").decode()


def test_chaos(make_stack: Callable[..., Stack], capsys: pytest.CaptureFixture[str],
               webhook_endpoints: Callable[..., WebhookEndpoint]) -> None:
    hooks = webhook_endpoints(SECRET)
    seed = int(os.environ.get("CHAOS_SEED", time.time()))
    rng = random.Random(seed)
    faults = SimConfig(generation_seconds=1, fault_429=0.05, fault_5xx=0.05, fault_slow=0.05,
                       slow_seconds=1.0, fault_garbage=0.03, fault_504_after_create=0.05,
                       retry_after=0.1, rng_seed=seed)
    with ThrowawayRedis(appendonly=True) as server, ThrowawayS3() as s3:
        proxy = FaultyProxy(s3.endpoint, fail=0.2, stall=2.0, stall_share=0.05)
        stack = make_stack(
            sim_config=faults, job_lease_seconds=6, astria_read_timeout=3,
            astria_retry_max_seconds=10, astria_retry_attempts=RETRY_ATTEMPTS,
            broker_visibility_timeout=40, astria_job_deadline_seconds=600,
            tenant_max_in_flight='{"t2": 20}',
            astria_rate_limit_per_second=max(5, JOBS // 60),  # a minute of POSTs: the kills' time
            webhook_secret=SECRET, storage_url="s3://images/chaos",
            storage_endpoint_url=proxy.url, storage_lease_seconds=10,
            aws_access_key_id="test", aws_secret_access_key="test",
            aws_default_region="us-east-1",
        )
        stack.redis_url = stack.env["REDIS_URL"] = server.url
        stack.app.conf.broker_url = stack.app.conf.result_backend = server.url
        reader = redis.Redis.from_url(server.url, retry=Retry(ExponentialBackoff(cap=2.0), 20),
                                      retry_on_error=[redis.ConnectionError])
        workers = [stack.start_worker() for _ in range(WORKERS)]
        specs = [{"tune_id": 42, "text": f"chaos job {i}",
                  "priority": rng.choice(["interactive", "normal", "batch"]),
                  "tenant": rng.choice(["t1", "t2", "t3"])} for i in range(JOBS)]
        batched = [spec for spec in specs if spec["tenant"] == "t1"]
        batch_id, members = stack.send_batch(batched, "t1", hooks.url)
        by_text = dict(zip((spec["text"] for spec in batched), members, strict=True))
        jobs = [by_text.get(spec["text"]) or stack.send(spec) for spec in specs]

        kills, redis_restarts, started = 0, 0, time.monotonic()
        done: dict[str, str] = {}
        cancelled: dict[str, str] = {}  # job -> what the cancel answered
        while len(done) < JOBS and time.monotonic() - started < 420:
            time.sleep(rng.uniform(0.5, 2.0))
            job = rng.choice(jobs)
            if len(cancelled) < CANCELS and job not in cancelled:
                cancelled[job] = stack.cancel(job)
            done = terminal_states(reader, jobs)
            if (len(done) < JOBS * 0.8 or kills < MIN_KILLS) and kills < MAX_KILLS:
                victim = rng.randrange(WORKERS)
                stack.kill_worker(workers[victim])
                workers[victim] = stack.start_worker()
                kills += 1
            if redis_restarts == 0 and len(done) >= JOBS * 0.3:
                server.restart()
                redis_restarts += 1
        elapsed = time.monotonic() - started
        succeeded_jobs = [j for j in jobs if done.get(j) == "SUCCESS"]

        def copies() -> dict[str, list[dict[str, object]]]:
            return {j: json.loads(raw) for j in succeeded_jobs
                    if (raw := reader.hget(f"{stack.prefix}:job:{j}", "stored"))}

        wait_for(lambda: len(copies()) == len(succeeded_jobs), 120, "every success's copies",
                 every=1.0)
        copied = copies()
        stored_events = Counter(
            j for j in succeeded_jobs
            for _, f in reader.xrange(f"{stack.prefix}:job:{j}:events")
            if json.loads(f[b"event"])["type"] == "stored")
        objects = {o["Key"]: o for o in s3.client().list_objects_v2(
            Bucket="images", Prefix="chaos/", MaxKeys=10000).get("Contents", [])}
        images = {j: json.loads(reader.hget(f"{stack.prefix}:job:{j}", "outcome") or "{}")
                  ["result"]["images"] for j in succeeded_jobs}
        proxy.close()
        batch = stack.batches(reader).load(batch_id)
        batch_cost = sum(json.loads(reader.hget(f"{stack.prefix}:job:{j}", "outcome") or "{}")
                         .get("result", {}).get("cost_mc") or 0 for j in members)
        wait_for(lambda: hooks.acknowledged, 60, "the batch.completed webhook")

        prompts = stack.sim_json("/_sim/prompts")
        per_text = Counter(p["text"] for p in prompts)
        duplicates = sum(n - 1 for n in per_text.values())
        attempts = [int(reader.hget(f"{stack.prefix}:job:{j}", "post_attempts") or 0)
                    for j in jobs]
        counters = stack.sim.counters
        injected = {k: v for k, v in counters.items() if k.startswith("fault_")}
        lost = JOBS - len(done)
        failed = sum(1 for s in done.values() if s == "FAILURE")
        revoked = sum(1 for s in done.values() if s == "REVOKED")
        reasons = Counter(
            json.loads(reader.hget(f"{stack.prefix}:job:{j}", "outcome") or "{}")
            .get("error", {}).get("message", "?") for j, s in done.items() if s == "FAILURE")
        with capsys.disabled():
            print(f"\nchaos (seed {seed}): jobs={JOBS} succeeded={JOBS - lost - failed - revoked} "
                  f"failed={failed} revoked={revoked} (cancels={len(cancelled)}) lost={lost} "
                  f"duplicates={duplicates} "
                  f"prompts={len(prompts)} worker_kills={kills} redis_restarts={redis_restarts} "
                  f"faults={sum(injected.values())} {injected} "
                  f"max_post_attempts={max(attempts)} elapsed={elapsed:.0f}s "
                  f"batch={len(members)} copies={len(objects)} "
                  f"puts_failed={proxy.counts['failed']} puts_stalled={proxy.counts['stalled']}"
                  + (f" failures={dict(reasons)}" if reasons else ""))
        stack.close()

    assert lost == 0, f"{lost} jobs never reached a terminal state"
    assert duplicates == 0, f"{duplicates} duplicate prompts"
    for job, answer in cancelled.items():  # a cancel wins unless the job had ended already
        assert done[job] == {"revoked": "REVOKED", "succeeded": "SUCCESS",
                             "failed": "FAILURE"}[answer], (job, answer, done[job])
    succeeded = {f"chaos job {i}" for i, j in enumerate(jobs) if done[j] == "SUCCESS"}
    assert succeeded <= set(per_text)  # each success has its prompt (and only one, above)
    assert max(attempts) <= 2 * RETRY_ATTEMPTS
    assert kills >= MIN_KILLS and redis_restarts == 1
    assert failed <= JOBS // 100, f"{failed} jobs failed"
    states = Counter(done[job] for job in members)
    assert batch is not None and batch.completed
    counts = {"size": len(members), "queued": 0, "waiting": 0, "succeeded": states["SUCCESS"],
              "failed": states["FAILURE"], "revoked": states["REVOKED"], "cost_mc": batch_cost}
    assert (batch.succeeded, batch.failed, batch.revoked) == tuple(
        counts[name] for name in ("succeeded", "failed", "revoked"))
    assert list(hooks.acknowledged) == [f"msg_batch_{batch_id}"]  # one, whatever the kills
    [event] = hooks.acknowledged.values()
    told = dict(event["data"]["counts"])
    assert 0 <= told.pop("stored") <= states["SUCCESS"]  # copies stored by the completion
    assert event["type"] == "batch.completed" and told == counts
    assert batch.stored == states["SUCCESS"]  # and, once all are, counted each once
    # every image of every success stored once, as its source
    wanted = {str(c["key"]): (c, url) for j in succeeded_jobs
              for c, url in zip(copied[j], images[j], strict=True)}
    assert set(objects) == set(wanted) and len(wanted) == sum(map(len, images.values()))
    for key, (copy, url) in wanted.items():
        assert objects[key]["Size"] == copy["bytes"]
        assert copy["sha256"] == hashlib.sha256(image_bytes(urlsplit(url).path)).hexdigest()
    assert set(stored_events.values()) == {1}  # each job told once
