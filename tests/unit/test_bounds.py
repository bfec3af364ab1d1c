"""What outside input can no longer do: overflow a counter into a half-done decision, keep a
callback token alive, park megabytes in Redis for days, or grow a key without bound."""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

from tests.unit.conftest import Store
from worker.errors import InvalidSpec
from worker.records import Failed, Succeeded
from worker.runtime import Runtime
from worker.store.registration import MAX_STORED_SPEC_CHARS
from worker.store.types import Ending

IMAGE = "data:image/png;base64," + base64.b64encode(os.urandom(3_000_000)).decode()  # 4 MB


def granted(store: Store, name: str, **spec: Any) -> None:
    store.register(name, **spec)
    assert store.grant().get(name) == "submit"


def test_a_counter_at_its_limit_cannot_stop_a_decision(store: Store) -> None:
    store.redis.hset(store.keys.stats, "t|app|normal|cost_mc", 2**63 - 10)
    for name in ("a", "b"):
        granted(store, name, tenant="app")
        lease, job = store.lease(name)
        [decided] = store.jobs.finish([Ending(lease, job, Succeeded({"images": ["x"]}),
                                              cost_mc=1000)])
        assert decided is not None and decided.new
        document = json.loads(store.redis.get(store.keys.result(store.jid(name))) or b"{}")
        assert document["status"] == "SUCCESS"
    stats = store.redis.hgetall(store.keys.stats)
    assert stats[b"t|app|normal|SUCCESS"] == b"2"  # counted, the overflowing sum skipped


def test_the_callback_token_stops_working_once_the_job_is_decided(store: Store) -> None:
    granted(store, "a")
    job = store.jobs.load(store.jid("a"))
    assert store.jobs.job_for_token(job.token) == store.jid("a")
    lease, job = store.lease("a")
    store.jobs.finish([Ending(lease, job, Failed("PromptFailed", "x"))])
    assert store.jobs.job_for_token(job.token) is None
    assert store.jobs.redrive(store.jid("a")) == "redriven"  # a redriven job waits again
    assert store.jobs.job_for_token(job.token) == store.jid("a")


def test_an_inline_image_leaves_redis_once_its_prompt_exists(store: Store) -> None:
    granted(store, "a", input_image_base64=IMAGE)
    job = store.jobs.load(store.jid("a"))
    assert job.inline_image and "input_image_base64" not in job.spec
    assert store.redis.memory_usage(store.keys.job(store.jid("a"))) < 10_000  # type: ignore[operator]
    assert store.jobs.inline_image(job.id) == IMAGE
    lease, job = store.lease("a")
    store.jobs.record_prompts(lease, job, [5], tune_id=1, text="x", rerouted=False,
                              first_poll_at=time.time() + 60)
    assert store.jobs.inline_image(job.id) is None


def test_a_failed_jobs_inline_image_is_kept_a_day_for_a_redrive(store: Store) -> None:
    granted(store, "a", input_image_base64=IMAGE)
    lease, job = store.lease("a")
    store.jobs.finish([Ending(lease, job, Failed("AstriaUnavailable", "429"))])
    assert 0 < store.redis.ttl(store.keys.inline_image(job.id)) <= 86400


def test_a_follower_or_a_cancelled_jobs_image_is_never_stored(store: Store) -> None:
    granted(store, "leader", idempotency_key="k")
    assert store.register("follower", idempotency_key="k", input_image_base64=IMAGE).kind == (
        "follower")
    assert store.jobs.inline_image(store.jid("follower")) is None


def test_followers_of_one_key_are_capped(make_store: Any) -> None:
    store: Store = make_store(idempotency_max_followers=2)
    granted(store, "leader", idempotency_key="k")
    assert [store.register(f"f{i}", idempotency_key="k").kind for i in range(3)] == [
        "follower", "follower", "too_many"]
    assert not store.redis.exists(store.keys.job(store.jid("f2")))
    lease, job = store.lease("leader")
    store.jobs.finish([Ending(lease, job, Succeeded({"images": ["x"]}))])
    assert store.register("late", idempotency_key="k").kind == "follower"  # answered at once


def test_an_invalid_spec_is_kept_bounded_and_a_private_callback_gets_no_webhook(
    store: Store,
) -> None:
    huge = {"tune_id": 1, "text": "x" * 10**6, "callback": "http://127.0.0.1:9/hook"}
    store.registrations.record_invalid(store.jid("bad"), huge, InvalidSpec("text: too long"))
    job = store.jobs.load(store.jid("bad"))
    assert len(job.spec_json) < MAX_STORED_SPEC_CHARS + 100 and "truncated_spec" in job.spec
    assert store.redis.zcard(store.keys.webhooks_due) == 0
    public = {"tune_id": 1, "callback": "https://hooks.example.com/x"}
    store.registrations.record_invalid(store.jid("bad2"), public, InvalidSpec("text: missing"))
    assert store.redis.zcard(store.keys.webhooks_due) == 1


def test_housekeeping_prunes_idle_tenants_and_old_dead_letters(store: Store) -> None:
    granted(store, "busy", tenant="busy")
    store.register("gone", tenant="gone")
    rt = Runtime(store.settings)
    now = time.time()
    long_ago = now - store.settings.job_retention_seconds - 10
    store.redis.zadd(store.keys.tenants, {"gone": long_ago, "busy": long_ago})
    store.redis.zadd(store.keys.dead, {"ancient": long_ago})
    store.redis.delete(store.keys.live("gone"))  # its job's record expired with retention
    assert rt.housekeeping.run_if_due(now=now)
    assert not rt.housekeeping.run_if_due(now=now)  # once per HOUSEKEEPING_SECONDS, for all
    fields = {k.decode() for k in store.redis.hkeys(store.keys.stats)}
    assert not any(f.startswith("t|gone|") for f in fields)
    assert "t|busy|normal|enqueued" in fields  # a job of busy is live
    assert store.redis.zscore(store.keys.dead, "ancient") is None
