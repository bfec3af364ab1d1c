"""What a broker message must be before kombu and Celery read it, and where it goes if not."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from tests.unit.conftest import Store
from worker.broker.intake import MAX_MESSAGE_BYTES, problem
from worker.store.messages import MAX_KEPT_BYTES, DeadMessages
from worker.store.results import ResultFormat


@pytest.fixture
def producer(redis_server: tuple[str, bool]) -> Iterator[tuple[Celery, redis.Redis, str]]:
    """A plain Celery producer (no import of this project's app) and a queue of its own."""
    app = Celery(broker=redis_server[0])
    queue = "intake-" + uuid.uuid4().hex[:8]
    client = redis.Redis.from_url(redis_server[0])
    yield app, client, queue
    for key in client.keys(f"{queue}*"):
        client.delete(key)
    app.close()


def sent(producer: tuple[Celery, redis.Redis, str], **options: Any) -> bytes:
    """The raw message Celery pushes for one task, as it lies in Redis."""
    app, client, queue = producer
    app.send_task("astria.submit_prompt", kwargs={"spec": {"tune_id": 1, "text": "x"}},
                  queue=queue, **options)
    key = next(k for k in client.keys(f"{queue}*"))
    raw = client.rpop(key)
    assert isinstance(raw, bytes)
    return raw


@pytest.mark.parametrize("options", [{}, {"expires": 300}, {"priority": 5},
                                     {"task_id": "order-42/avatar:1"}, {"headers": {"x": 1}}])
def test_what_celery_itself_sends_passes(producer: tuple[Celery, redis.Redis, str],
                                         options: dict[str, Any]) -> None:
    assert problem(sent(producer, **options)) is None


def test_celerys_protocol_1_passes(producer: tuple[Celery, redis.Redis, str]) -> None:
    producer[0].conf.task_protocol = 1
    assert problem(sent(producer)) is None


def test_an_eta_is_refused_with_the_task_id(producer: tuple[Celery, redis.Redis, str]) -> None:
    rejected = problem(sent(producer, countdown=60, task_id="delayed-1"))
    assert rejected is not None and rejected.task_id == "delayed-1"
    assert rejected.reason.startswith("headers.eta: an ETA or countdown is not supported")


def envelope(**changes: Any) -> bytes:
    body = base64.b64encode(json.dumps([[], {"spec": {}}, {}]).encode()).decode()
    message: dict[str, Any] = {
        "body": body, "content-type": "application/json", "content-encoding": "utf-8",
        "headers": {"task": "astria.submit_prompt", "id": "job-1", "lang": "py"},
        "properties": {"delivery_tag": "t", "body_encoding": "base64",
                       "delivery_info": {"exchange": "", "routing_key": "celery"}}}
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        target = message
        for part in parents:
            target = target[part]
        if value is ...:
            del target[leaf]
        else:
            target[leaf] = value
    return json.dumps(message).encode()


@pytest.mark.parametrize(
    ("raw", "reason", "task_id"),
    [
        (b"not json", "message: not JSON", None),
        (b'{"trunc', "message: not JSON", None),
        (b"\xff\xfe\x00", "message: not JSON", None),
        (b"[1, 2]", "message: must be a JSON object", None),
        (b"[" * 100_000, "message: not JSON", None),
        (b'{"body": "e30="}', "properties: must be a JSON object", None),
        (envelope(properties__delivery_tag=...), "properties.delivery_tag", "job-1"),
        (envelope(properties__delivery_info={}), "properties.delivery_info", "job-1"),
        (envelope(body="%%%"), "body: not base64 of JSON", "job-1"),
        (envelope(**{"content-type": "application/x-python-serialize"}), "content-type", "job-1"),
        (envelope(headers__id=...), "headers.id", None),
        (envelope(headers__id="has a space"), "headers.id", None),
        (envelope(headers__id="x" * 256), "headers.id", None),
        (envelope(headers__task=7), "headers.task", "job-1"),
        (envelope(headers__timelimit="soon"), "headers.timelimit", "job-1"),
        (envelope(headers__expires="tomorrow"), "headers.expires", "job-1"),
        (envelope(headers__retries="3"), "headers.retries", "job-1"),
        (envelope(body=base64.b64encode(b'{"a": 1}').decode()), "body: must be [args", "job-1"),
        (envelope(headers={}, body=base64.b64encode(b'{"id": "v1"}').decode()),
         "headers.task: missing", "v1"),
        (b" " * (MAX_MESSAGE_BYTES + 1), "more than", None),
    ],
)
def test_a_message_kombu_or_celery_cannot_read_is_refused_naming_why(
    raw: bytes, reason: str, task_id: str | None,
) -> None:
    rejected = problem(raw)
    assert rejected is not None and reason in rejected.reason
    assert rejected.task_id == task_id
    assert problem(envelope()) is None


def test_a_control_reply_is_held_to_the_envelope_only() -> None:
    reply = envelope(headers={}, body=base64.b64encode(b'{"ok": "pong"}').decode())
    assert problem(reply, task=False) is None
    assert problem(reply) is not None


@pytest.fixture
def dead(store: Store) -> DeadMessages:
    return DeadMessages(store.redis, store.keys, ResultFormat(3600))


def test_a_dead_message_leaves_the_processing_list_with_its_reason(
    store: Store, dead: DeadMessages,
) -> None:
    processing = store.keys.processing_list("unit")
    raw = envelope(headers__eta="2030-01-01T00:00:00")
    store.redis.lpush(processing, raw)
    entry = dead.bury(raw, reason="headers.eta: no", queue="celery", task_id=store.jid("x"),
                      processing=processing)
    assert store.redis.llen(processing) == 0
    [listed] = dead.newest()
    assert (listed.id, listed.reason, listed.raw, listed.truncated) == (
        entry, "headers.eta: no", raw, False)
    document = json.loads(store.redis.get(store.keys.result(store.jid("x"))) or b"{}")
    assert document["status"] == "FAILURE"  # the producer waiting on it gets an answer
    assert document["result"]["exc_type"] == "InvalidMessage"
    assert dead.redrive(entry) == "redriven"
    assert store.redis.lrange("celery", 0, -1)[-1:] == [raw]
    store.redis.lrem("celery", 1, raw)
    assert dead.newest() == []


def test_a_dead_message_never_touches_an_existing_job(store: Store, dead: DeadMessages) -> None:
    store.register("real")
    dead.bury(b"{}", reason="r", queue="celery", task_id=store.jid("real"),
              processing=store.keys.processing_list("unit"))
    assert store.redis.get(store.keys.result(store.jid("real"))) is None


def test_a_long_dead_message_is_kept_cut_and_cannot_be_sent_again(
    store: Store, dead: DeadMessages,
) -> None:
    raw = b"x" * (MAX_KEPT_BYTES * 3)
    entry = dead.bury(raw, reason="r", queue="celery", task_id=None,
                      processing=store.keys.processing_list("unit"))
    [listed] = dead.newest()
    assert listed.truncated and listed.size == len(raw) and len(listed.raw) == MAX_KEPT_BYTES
    assert dead.redrive(entry) == "truncated"
    assert dead.prune(time.time() - 60) == 0 and dead.prune(time.time() + 1) == 1
