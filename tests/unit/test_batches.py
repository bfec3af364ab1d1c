"""Batches in the store (lua/lib/batch.lua, lua/create_batch.lua) against a real Redis: each
member counted by the script that decides it, one completion, one batch.completed webhook."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.unit.conftest import Store
from worker.errors import InvalidSpec
from worker.flow.shapes import WebhookEvent
from worker.flow.webhooks import webhook_body
from worker.records import Failed, Succeeded
from worker.spec import parse_spec
from worker.store.batches import Batch, BatchCreated, Batches
from worker.store.types import Ending, Lease, Registered

HOOK = "https://batch.test/hook"


def batches(store: Store) -> Batches:
    return Batches(store.redis, store.keys, store.jobs.scripts, 3600)


def opened(store: Store, size: int, tenant: str = "app") -> tuple[str, list[str]]:
    """A batch of `size` created for `tenant`: its id and its members' ids."""
    batch_id = store.jid("b")
    assert batches(store).create(batch_id, tenant, size, HOOK) is BatchCreated.NEW
    return batch_id, Batches.member_ids(batch_id, size)


def join(store: Store, job_id: str, batch_id: str, tenant: str = "app", **spec: Any
         ) -> Registered:
    parsed = parse_spec({"tune_id": 1, "text": f"text of {job_id}", "tenant": tenant, **spec})
    return store.registrations.register(job_id, parsed, batch_id=batch_id).kind


OWNERS: dict[str, str] = {}  #: job id -> the owner of the grant that leased it


def granted(store: Store, job_id: str) -> tuple[Lease, Any]:
    """The job's lease and record, granting what is due first (it may be leased already)."""
    grant = store.dispatcher.grant(100)
    OWNERS.update({unit.id: grant.owner for unit in grant.units})
    return Lease(job_id, OWNERS[job_id]), store.jobs.load(job_id)


def batch_webhooks(store: Store) -> list[str]:
    return [m.decode() for m in store.redis.zrange(store.keys.webhooks_due, 0, -1)
            if m.startswith(b"msg_batch_")]


def load(store: Store, batch_id: str) -> Batch:
    found = batches(store).load(batch_id)
    assert found is not None
    return found


def test_each_decision_is_counted_and_the_last_completes_the_batch_once(store: Store) -> None:
    batch_id, (a, b, c) = opened(store, 3)
    for job_id in (a, b, c):
        assert join(store, job_id, batch_id) is Registered.NEW
    assert load(store, batch_id).queued == 3
    lease, job = granted(store, a)
    store.jobs.record_prompts(lease, job, [9], tune_id=1, text="x", rerouted=False,
                              first_poll_at=time.time())
    assert (load(store, batch_id).queued, load(store, batch_id).waiting) == (2, 1)
    lease, job = granted(store, a)
    store.jobs.finish([Ending(lease, job, Succeeded({"images": ["x"], "cost_mc": 40}))])
    lease, job = granted(store, b)
    store.jobs.finish([Ending(lease, job, Failed("PromptFailed", "user_error"))])
    now = load(store, batch_id)
    assert (now.queued, now.waiting, now.succeeded, now.failed) == (1, 0, 1, 1)
    assert not now.completed and batch_webhooks(store) == []
    store.jobs.cancel(c)
    done = load(store, batch_id)
    assert (done.succeeded, done.failed, done.revoked, done.queued) == (1, 1, 1, 0)
    assert done.completed
    [message] = batch_webhooks(store)
    hook = store.webhooks.load(message)
    assert hook is not None and hook.type == "batch.completed" and hook.tenant == "app"
    assert hook.data == {"batch_id": batch_id, "counts": {
        "size": 3, "queued": 0, "waiting": 0, "succeeded": 1, "failed": 1, "revoked": 1,
        "cost_mc": 0, "stored": 0}}
    body = webhook_body(hook.type, hook.data, hook.finished_at)
    assert WebhookEvent.validate_json(body).data.counts.revoked == 1  # type: ignore[union-attr]
    store.jobs.cancel(c)  # decided already: nothing counted twice
    assert load(store, batch_id) == done and batch_webhooks(store) == [message]
    events = [json.loads(f[b"event"]) for _, f in store.redis.xrange(
        store.keys.batch_events(batch_id))]
    assert [e["type"] for e in events] == ["member"] * 3 + ["completed"]


def test_a_redrive_after_completion_moves_the_counts_and_completes_nothing_again(
    store: Store,
) -> None:
    batch_id, [a] = opened(store, 1)
    join(store, a, batch_id)
    lease, job = granted(store, a)
    store.jobs.finish([Ending(lease, job, Failed("AstriaUnavailable", "429"))])
    assert load(store, batch_id).completed
    assert store.jobs.redrive(a) == "redriven"
    assert (load(store, batch_id).failed, load(store, batch_id).queued) == (0, 1)
    lease, job = granted(store, a)
    store.jobs.finish([Ending(lease, job, Succeeded({"images": ["x"]}))])
    assert load(store, batch_id).succeeded == 1
    assert len(batch_webhooks(store)) == 1


def test_only_its_own_members_of_its_own_tenant_join(store: Store) -> None:
    batch_id, [a, b] = opened(store, 2)
    assert join(store, store.jid("stranger"), batch_id) is Registered.NOT_MEMBER
    assert join(store, a, batch_id, tenant="other") is Registered.NOT_MEMBER
    assert store.redis.exists(store.keys.job(a)) == 0  # nothing stored
    assert join(store, a, batch_id) is Registered.NEW
    # a member whose spec is invalid is counted as failed: the batch still completes
    store.registrations.record_invalid(b, {"tenant": "app"}, InvalidSpec("text: missing"),
                                       batch_id)
    assert load(store, batch_id).failed == 1


def test_followers_and_members_cancelled_before_they_arrive_are_counted(store: Store) -> None:
    batch_id, [a, b, c] = opened(store, 3)
    assert join(store, a, batch_id, idempotency_key="k") is Registered.NEW
    assert join(store, b, batch_id, idempotency_key="k") is Registered.FOLLOWER
    store.jobs.cancel(c)  # not arrived yet
    assert join(store, c, batch_id) is Registered.REVOKED
    lease, job = granted(store, a)
    store.jobs.finish([Ending(lease, job, Succeeded({"images": ["x"]}))])
    done = load(store, batch_id)
    assert (done.succeeded, done.revoked, done.completed) == (2, 1, True)


def test_the_same_batch_again_is_a_resume_and_another_is_a_conflict(store: Store) -> None:
    batch_id, _ = opened(store, 2)
    assert batches(store).create(batch_id, "app", 2, HOOK) is BatchCreated.EXISTS
    assert batches(store).create(batch_id, "other", 2, HOOK) is BatchCreated.CONFLICT
    assert batches(store).create(batch_id, "app", 3, HOOK) is BatchCreated.CONFLICT
