"""Durable copies (STORAGE_URL) with a worker, the simulator (which serves real image bytes) and
a real store: a directory, and a throwaway S3 server (SeaweedFS) behind a proxy that fails or
stalls some PUTs while a worker is SIGKILLed: every image stored once, with its source's sha256."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from astria_local.s3_server import ThrowawayS3
from astria_local.sim_http import image_bytes
from astria_local.simulator import SimConfig
from astria_local.webhook_endpoint import WebhookEndpoint
from tests.harness import Stack, wait_for
from tests.s3_server import FaultyProxy

pytestmark = pytest.mark.slow  # starts worker processes

SECRET = "whsec_" + base64.b64encode(b"copies-webhook-signing-key-32-by").decode()


def stored(stack: Stack, job_id: str) -> list[dict[str, object]] | None:
    raw = stack.redis.hget(f"{stack.prefix}:job:{job_id}", "stored")
    return json.loads(raw) if raw else None


def source_sha(url: str) -> str:
    """The sha256 of the image the simulator serves at `url`."""
    return hashlib.sha256(image_bytes(urlsplit(url).path)).hexdigest()


def test_each_image_is_copied_to_a_directory_and_the_producer_told_once(
    make_stack: Callable[..., Stack], webhook_endpoints: Callable[..., WebhookEndpoint],
    tmp_path: Path,
) -> None:
    hooks = webhook_endpoints(SECRET)
    stack = make_stack(sim_config=SimConfig(generation_seconds=0.5), webhook_secret=SECRET,
                       storage_url=f"file://{tmp_path}/store")
    stack.start_worker()
    jobs = [stack.send({"tune_id": 42, "text": f"keep {i}", "num_images": 2, "tenant": "app",
                        "callback": hooks.url}) for i in range(5)]
    failed = stack.send({"tune_id": 42, "text": "SIMULATE_USER_ERROR", "callback": hooks.url})
    wait_for(lambda: all(stored(stack, j) for j in jobs), 60, "five jobs' copies")
    for job in jobs:
        images = stack.outcome(job)["images"]
        copies = stored(stack, job)
        assert copies is not None and len(copies) == 2
        for n, (url, copy) in enumerate(zip(images, copies, strict=True)):
            path = Path(urlsplit(str(copy["url"])).path)
            assert copy["key"] == f"app/{job}/{n}.jpg" and path == tmp_path / "store" / str(
                copy["key"])
            assert copy["sha256"] == source_sha(url) == hashlib.sha256(
                path.read_bytes()).hexdigest()
            assert copy["bytes"] == path.stat().st_size and copy["content_type"] == "image/jpeg"
    assert stored(stack, failed) is None
    wait_for(lambda: sum(e["type"] == "job.stored" for e in hooks.acknowledged.values()) == 5,
             30, "five job.stored webhooks")
    told = [e for e in hooks.acknowledged.values() if e["type"] == "job.stored"]
    assert sorted(e["data"]["job_id"] for e in told) == sorted(jobs)
    assert all(e["data"]["stored"] == stored(stack, e["data"]["job_id"]) for e in told)


def test_copies_to_s3_survive_failing_puts_and_a_killed_worker(
    make_stack: Callable[..., Stack],
) -> None:
    with ThrowawayS3() as s3:
        proxy = FaultyProxy(s3.endpoint, fail=0.3, stall=3.0, stall_share=0.1)
        stack = make_stack(sim_config=SimConfig(generation_seconds=0.5),
                           storage_url="s3://images/copies", storage_endpoint_url=proxy.url,
                           aws_access_key_id="test", aws_secret_access_key="test",
                           aws_default_region="us-east-1", storage_lease_seconds=10)
        worker = stack.start_worker()
        jobs = [stack.send({"tune_id": 42, "text": f"to s3 {i}", "num_images": 2})
                for i in range(20)]
        wait_for(lambda: any(stored(stack, j) for j in jobs), 60, "a first job's copies")
        stack.kill_worker(worker)  # mid-run: its copies in flight are taken up again
        stack.start_worker()
        wait_for(lambda: all(stored(stack, j) for j in jobs), 120, "twenty jobs' copies",
                 every=0.5)
        client = s3.client()
        keys = sorted(o["Key"] for o in client.list_objects_v2(
            Bucket="images", Prefix="copies/")["Contents"])
        assert keys == sorted(f"copies/default/{j}/{n}.jpg" for j in jobs for n in range(2))
        for job in jobs:
            images = stack.outcome(job)["images"]
            for url, copy in zip(images, stored(stack, job) or [], strict=True):
                head = client.head_object(Bucket="images", Key=copy["key"])
                assert copy["sha256"] == head["Metadata"]["sha256"] == source_sha(url)
        presigned = str((stored(stack, jobs[0]) or [{}])[0]["url"])
        fetched = requests.get(presigned, timeout=10)
        assert fetched.status_code == 200 and hashlib.sha256(
            fetched.content).hexdigest() == (stored(stack, jobs[0]) or [{}])[0]["sha256"]
        assert proxy.counts["failed"] > 0  # the faults happened, and were survived
        proxy.close()
