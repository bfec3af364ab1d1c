"""Each transition script of a job (worker/store/lua) against a real Redis."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.unit.conftest import Store, posting
from worker.errors import InvalidSpec
from worker.flow.shapes import WebhookEvent
from worker.flow.webhooks import webhook_body
from worker.records import Failed, JobState, Revoked, Succeeded
from worker.spec import parse_spec
from worker.store.jobs import CALLBACK_SPACING
from worker.store.scripts import Script, parse_signature
from worker.store.stats import Stats
from worker.store.types import Delivery, Ending, LeaseLost, NextPoll


def result_doc(store: Store, name: str) -> dict[str, Any] | None:
    raw = store.redis.get(store.keys.result(store.jid(name)))
    return json.loads(raw) if raw else None


def job_key(store: Store, name: str) -> str:
    return store.keys.job(store.jid(name))


def queued_and_granted(store: Store, name: str, **spec: Any) -> None:
    store.register(name, **spec)
    assert store.grant().get(name) == "submit"


def test_register_is_idempotent(store: Store) -> None:
    assert store.register("a").kind == "new"
    assert store.register("a").kind == "exists"
    assert store.grant() == {"a": "submit"}


def test_same_idempotency_key_makes_a_follower_that_gets_the_leaders_outcome(
    store: Store,
) -> None:
    queued_and_granted(store, "leader", idempotency_key="k", callback="https://a.test/hook")
    follower = store.register("follower", idempotency_key="k",
                              callback="https://b.test/hook")
    assert follower.kind == "follower" and follower.leader == store.jid("leader")
    assert store.grant() == {}  # a follower never POSTs
    lease, job = store.lease("leader")
    store.jobs.finish([Ending(lease, job, Succeeded({"images": ["x"]}))])
    assert result_doc(store, "follower")["status"] == "SUCCESS"  # type: ignore[index]
    # each gets its own webhook, and a follower arriving after the outcome gets it at once
    store.register("late", idempotency_key="k", callback="https://c.test/hook")
    assert result_doc(store, "late")["status"] == "SUCCESS"  # type: ignore[index]
    assert store.redis.zcard(store.keys.webhooks_due) == 3


def test_an_idempotency_key_is_the_tenants_own(store: Store) -> None:
    """Tenant B's job with tenant A's key is a job of its own: it never gets A's images."""
    queued_and_granted(store, "a", idempotency_key="avatar-42", tenant="a")
    other = store.register("b", idempotency_key="avatar-42", tenant="b")
    assert other.kind == "new"
    assert store.register("a2", idempotency_key="avatar-42", tenant="a").kind == "follower"


def test_a_job_cancelled_before_it_arrived_is_refused_when_it_does(store: Store) -> None:
    assert store.jobs.cancel(store.jid("early")) == "revoked"
    assert result_doc(store, "early")["status"] == "REVOKED"  # type: ignore[index]
    assert store.register("early").kind == "revoked"
    assert store.grant() == {}


def test_a_cancelled_job_is_never_posted(store: Store) -> None:
    store.register("a")
    assert store.jobs.cancel(store.jid("a")) == "revoked"
    assert store.grant() == {}
    doc = result_doc(store, "a")
    assert doc["status"] == "REVOKED"  # type: ignore[index]
    assert doc["result"]["exc_type"] == "TaskRevokedError"  # type: ignore[index]


def test_a_cancel_racing_the_post_lets_nothing_be_sent(store: Store) -> None:
    queued_and_granted(store, "a")
    store.jobs.cancel(store.jid("a"))
    lease, job = store.lease("a")
    assert store.jobs.record_posts([(lease, posting(job))]) == ["revoked"]


def test_a_cancel_during_the_post_still_records_the_prompt(store: Store) -> None:
    queued_and_granted(store, "a")
    lease, job = store.lease("a")
    assert store.jobs.record_posts([(lease, posting(job))]) == ["ok"]
    store.jobs.cancel(store.jid("a"), delete_prompt=True)
    assert store.jobs.record_prompts(lease, job, [77], tune_id=1, text="x", rerouted=False,
                                     first_poll_at=0) == "delete"
    job = store.jobs.load(store.jid("a"))
    assert job.status is JobState.REVOKED and job.prompt_id == 77
    assert isinstance(job.outcome, Revoked)
    assert store.grant() == {"a": "poll"}  # its DELETE


def test_created_makes_the_job_wait_and_shows_waiting(store: Store) -> None:
    queued_and_granted(store, "a")
    lease, job = store.lease("a")
    store.jobs.record_prompts(lease, job, [9], tune_id=1, text="x", rerouted=False,
                              first_poll_at=time.time() + 60)
    assert store.jobs.load(store.jid("a")).status is JobState.WAITING
    assert result_doc(store, "a")["status"] == "WAITING"  # type: ignore[index]
    assert store.grant() == {}  # not due before its first poll


def test_a_lost_lease_refuses_every_transition(store: Store) -> None:
    queued_and_granted(store, "a")
    lease, job = store.lease("a")
    stranger = type(lease)(lease.job_id, "someone-else")
    assert store.jobs.record_posts([(stranger, posting(job))]) == ["lost"]
    with pytest.raises(LeaseLost):
        store.jobs.post_again(stranger, job, at=time.time())
    with pytest.raises(LeaseLost):
        store.jobs.schedule_retry(stranger, job, at=time.time())
    assert store.jobs.finish([Ending(stranger, job, Failed("AstriaRejected", "x"))]) == [None]


def test_finish_decides_once_counts_and_queues_the_webhook(store: Store) -> None:
    queued_and_granted(store, "a", callback="https://x.test/hook", tenant="app")
    lease, job = store.lease("a")
    [first] = store.jobs.finish([Ending(lease, job, Failed("PromptFailed", "user_error"))])
    assert first is not None and first.new and isinstance(first.outcome, Failed)
    stats = {k.decode(): v.decode() for k, v in store.redis.hgetall(store.keys.stats).items()}
    assert stats["outcome:FAILURE"] == "1" and stats["t|app|normal|FAILURE"] == "1"
    assert stats["job_seconds|normal|FAILURE|1"] == "1"  # decided within a second of enqueue
    assert stats["job_seconds|normal|FAILURE|count"] == "1"
    assert stats.get("post_seconds|normal|count") is None  # never POSTed
    assert store.redis.zscore(store.keys.dead, store.jid("a")) is not None
    assert store.redis.zcard(store.keys.webhooks_due) == 1
    assert store.redis.hget(store.keys.inflight, "app") is None  # released


def test_requeue_keeps_the_jobs_place_in_its_tenants_queue(make_store: Any) -> None:
    store = make_store(astria_rate_limit_per_second=1000, astria_rate_limit_burst=1000)
    for name in ("first", "second"):
        store.register(name)
    assert list(store.grant(1)) == ["first"]
    lease, job = store.lease("first")
    store.jobs.requeue(lease, job, at=time.time())
    assert list(store.grant(1)) == ["first"]


def test_a_callback_only_makes_the_job_due_for_its_poll(store: Store) -> None:
    queued_and_granted(store, "a")
    lease, job = store.lease("a")
    store.jobs.record_prompts(lease, job, [9], tune_id=1, text="x", rerouted=False,
                              first_poll_at=time.time() + 600)
    assert store.grant() == {}  # its first poll is ten minutes away
    assert store.jobs.callback(store.jid("a"), 8) == "ignored"  # another prompt
    assert store.jobs.callback(store.jid("a"), 9) == "queued"
    assert store.grant() == {"a": "poll"}  # the outcome comes from Astria's answer to it
    assert store.jobs.callback(store.jid("a"), 9) == "held"  # polled when its holder lets go
    lease, job = store.lease("a")
    store.jobs.schedule_polls([NextPoll(lease, job, time.time() + 600)])
    due = store.redis.zscore(store.keys.due_poll, store.jid("a"))
    assert due is not None and due - time.time() <= CALLBACK_SPACING  # not in ten minutes
    for _ in range(100):  # forged or replayed: still one poll a spacing
        assert store.jobs.callback(store.jid("a"), 9) == "queued"
    assert store.redis.zscore(store.keys.due_poll, store.jid("a")) == due
    assert "callback_prompt" not in {k.decode() for k in store.redis.hkeys(job_key(store, "a"))}


def test_redrive_puts_a_failed_job_back_where_it_left(store: Store) -> None:
    queued_and_granted(store, "a")
    lease, job = store.lease("a")
    store.jobs.finish([Ending(lease, job, Failed("AstriaUnavailable", "429"))])
    assert store.jobs.redrive(store.jid("a")) == "redriven"
    assert store.redis.get(store.keys.result(store.jid("a"))) is None  # PENDING again
    assert store.grant() == {"a": "submit"}
    assert store.jobs.redrive(store.jid("a")) == "queued"


def test_an_invalid_spec_is_a_dead_letter_once(store: Store) -> None:
    for _ in range(2):
        store.registrations.record_invalid(store.jid("bad"), {"tune_id": 1, "tenant": "app"},
                                           InvalidSpec("text: Field required"))
    assert result_doc(store, "bad")["result"]["exc_type"] == "InvalidSpec"  # type: ignore[index]
    assert store.redis.hget(store.keys.stats, "t|app|normal|FAILURE") == b"1"


def test_webhook_delivery_outcomes(store: Store) -> None:
    queued_and_granted(store, "a", callback="https://x.test/hook")
    lease, job = store.lease("a")
    store.jobs.finish([Ending(lease, job, Succeeded({"images": ["x"]}))])
    message = f"msg_{store.jid('a')}"
    k = store.keys

    def done(result: Delivery) -> None:
        store.webhooks.done(message, result=result, next_at=time.time() + 5, error="HTTP 500",
                            body=b"{}", now=time.time(), answered=True)

    done(Delivery.RETRY)
    assert store.redis.zscore(k.webhooks_due, message) is not None
    done(Delivery.DEAD)
    assert store.redis.zscore(k.webhooks_dead, message) is not None
    assert store.redis.zscore(k.webhooks_due, message) is None
    assert store.webhooks.redrive(message) == "redriven"
    assert store.redis.hget(k.webhook(message), "attempts") == b"2"
    counted = store.redis.hmget(k.stats, ["webhook:retry", "webhook:dead", "webhook:delivered"])
    assert counted == [b"1", b"1", None]  # astria_queue_webhook_attempts_total{result}
    assert store.redis.hget(k.stats, "webhook_seconds|job.succeeded|count") is None
    done(Delivery.DELIVERED)  # astria_queue_webhook_seconds{type}: its event to its delivery
    observed = store.redis.hmget(k.stats, ["webhook_seconds|job.succeeded|count",
                                           "webhook_seconds|job.succeeded|1"])
    assert observed == [b"1", b"1"]


def test_a_script_refuses_arguments_it_does_not_name(store: Store) -> None:
    script: Script = store.jobs.scripts.callback
    with pytest.raises(TypeError, match="missing"):
        script(keys={"job": "x"}, args={})


def test_headers_must_be_numbered_in_order() -> None:
    with pytest.raises(ValueError, match="numbered"):
        parse_signature("-- KEYS[1] a\n-- KEYS[3] c\n")


def test_oldest_queued_is_the_earliest_job_not_sent_in_each_lane(store: Store) -> None:
    stats = Stats(store.redis, store.keys)
    assert stats.oldest_queued_at() == {}
    before = time.time()
    store.register("first", tenant="app")
    between = time.time()
    store.register("second", tenant="etl", priority="batch")
    oldest = stats.oldest_queued_at()
    assert before - 0.001 <= oldest["normal"] <= between + 0.001 <= oldest["batch"] + 0.002
    assert stats.backlog() == {"interactive": 0, "normal": 1, "batch": 1}
    assert store.grant(1) == {"first": "submit"}  # sent: no longer waiting for its turn
    assert list(stats.oldest_queued_at()) == ["batch"]


def test_the_events_a_spec_asks_for_are_webhooks_once_each(store: Store) -> None:
    queued_and_granted(store, "a", callback="https://x.test/hook",
                       webhook_events=["queued", "waiting"])
    lease, job = store.lease("a")
    store.jobs.record_posts([(lease, posting(job))])  # posted: not asked for
    store.jobs.record_prompts(lease, store.jobs.load(job.id), [9], tune_id=1, text="x",
                              rerouted=False, first_poll_at=time.time())
    queued_and_granted(store, "b", callback="https://x.test/hook")  # its end only
    hooks = [store.webhooks.load(m.decode())
             for m in store.redis.zrange(store.keys.webhooks_due, 0, -1)]
    assert [(h.type, h.job_id) for h in hooks if h] == [
        ("job.queued", store.jid("a")), ("job.waiting", store.jid("a"))]
    waiting = hooks[1]
    assert waiting is not None and waiting.data is not None and waiting.tenant == "default"
    assert (waiting.data["prompt_id"], waiting.data["job_id"]) == (9, store.jid("a"))
    body = webhook_body(waiting.type, waiting.data, waiting.finished_at)
    assert WebhookEvent.validate_json(body).type == "job.waiting"


@pytest.mark.parametrize(("spec", "rule"), [
    ({"webhook_events": ["queued"]}, "webhook_events: requires callback"),
    ({"webhook_events": ["started"], "callback": "https://x.test/h"}, "webhook_events.0"),
])
def test_webhook_events_are_checked(spec: dict[str, Any], rule: str) -> None:
    with pytest.raises(InvalidSpec, match=rule):
        parse_spec({"tune_id": 1, "text": "x", **spec})
