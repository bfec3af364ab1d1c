"""The rules that keep a prompt from being paid for twice, each against a real Redis: a POST
record a failover could take back is not sent; leases of running requests are renewed; grace
times come from Redis's clock; Astria's advice after a 500; Flux's route."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis

from astria_local.redis_server import ThrowawayRedis
from tests.unit.conftest import Store, posting
from worker.astria.client import TransientError
from worker.astria.retry import astria_policy, next_attempt_in
from worker.astria.routing import Target, route, unsupported_kind
from worker.constants import Keys
from worker.errors import ConfigError
from worker.settings import Settings, load_settings
from worker.spec import parse_spec
from worker.store.clock import RedisClock
from worker.store.dispatch import Dispatcher
from worker.store.jobs import JobStore
from worker.store.registration import Registrations
from worker.store.results import ResultFormat
from worker.store.types import Lease
from worker.store.webhooks import WebhookStore

S = Settings(astria_api_key="k")  # type: ignore[arg-type]


def test_a_post_record_no_replica_acknowledged_is_not_sent() -> None:
    """A primary with a replica that stops answering: WAIT times out, so the POST record could be
    lost in a failover; the POST is not sent, and the job goes back to its queue."""
    with ThrowawayRedis() as primary, ThrowawayRedis(
            args=("--replicaof", "127.0.0.1", "0")) as replica:
        client = redis.Redis.from_url(primary.url)
        redis.Redis.from_url(replica.url).replicaof("127.0.0.1", primary.port)
        deadline = time.monotonic() + 10
        while client.info("replication")["connected_slaves"] < 1:
            assert time.monotonic() < deadline, "the replica did not connect"
            time.sleep(0.05)
        settings = Settings(astria_api_key="k", redis_url=primary.url,  # type: ignore[arg-type]
                            redis_wait_replicas=1, redis_wait_timeout_ms=200,
                            astria_rate_limit_per_second=100)
        keys = Keys("durable")
        jobs = JobStore(client, settings, keys, ResultFormat(60))
        store = Store(client, settings, keys, jobs, Dispatcher(jobs.scripts, settings, keys),
                      Registrations(jobs), WebhookStore(client, keys, jobs.scripts, 60))
        store.register("a")
        assert store.grant() == {"a": "submit"}
        lease, job = store.lease("a")
        assert replica._proc is not None
        os.kill(replica._proc.pid, signal.SIGSTOP)  # connected, but it acknowledges nothing
        try:
            assert store.jobs.record_posts([(lease, posting(job))]) == ["not_durable"]
            store.jobs.retract(lease, job)
            assert store.jobs.load(job.id).pending_post == 0
        finally:
            os.kill(replica._proc.pid, signal.SIGCONT)


def test_leases_of_running_requests_are_renewed_and_only_ours(store: Store) -> None:
    for name in ("mine", "theirs"):
        store.register(name)
    assert set(store.grant()) == {"mine", "theirs"}
    mine = Lease(store.jid("mine"), store.owner)
    stranger = Lease(store.jid("theirs"), "someone-else")
    until = time.time() + 600
    assert store.jobs.renew([mine, stranger], until) == 1
    assert store.redis.zscore(store.keys.due_poll, store.jid("mine")) == pytest.approx(until)
    assert store.redis.zscore(store.keys.due_poll, store.jid("theirs")) < until - 100


def test_times_that_decide_a_grace_are_redis_times(store: Store) -> None:
    clock = RedisClock(store.redis)
    seconds, micros = store.redis.time()
    assert abs(clock.now() - (seconds + micros / 1e6)) < 1.0
    clock.seen(time.time() + 3600)  # as a grant says Redis's clock is an hour ahead of ours
    assert clock.now() - time.time() == pytest.approx(3600, abs=1)


def test_the_grace_covers_the_read_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    assert S.astria_ambiguous_grace_seconds == 60  # Astria: after a 504, wait 60 s
    monkeypatch.setenv("ASTRIA_READ_TIMEOUT", "45")
    monkeypatch.setenv("ASTRIA_AMBIGUOUS_GRACE_SECONDS", "35")
    with pytest.raises(ConfigError, match="ASTRIA_AMBIGUOUS_GRACE_SECONDS must be at least"):
        load_settings()


def test_a_500_is_followed_by_astrias_thirty_seconds() -> None:
    error = TransientError("GET: 500", status=500)
    delay = next_attempt_in(astria_policy(S), attempt=1, started_at=time.time(), error=error)
    assert delay == 30.0
    other = TransientError("GET: 503", status=503)
    short = next_attempt_in(astria_policy(S), attempt=1, started_at=time.time(), error=other)
    assert short is not None and short <= S.astria_retry_initial_delay * 2


def test_a_flux_lora_goes_to_the_flux_base_and_may_bring_more_loras() -> None:
    assert unsupported_kind("Astria 422: model_type=lora is not supported. Use a checkpoint "
                            "instead") == "flux"
    spec = parse_spec({"tune_id": 5, "text": "<lora:7:0.5> ohwx"})
    assert route(S, spec, "flux") == Target(1504944, "<lora:5:1> <lora:7:0.5> ohwx", True)
    sdxl = parse_spec({"tune_id": 5, "text": "<lora:7:0.5> ohwx"})
    with pytest.raises(Exception, match="one LoRA"):
        route(S, sdxl, "pti")
    assert parse_spec({"tune_id": 1504944, "text": "<lora:1:1> <lora:2:1> x"})


def test_a_spec_refuses_two_loras_on_sdxl_only() -> None:
    with pytest.raises(Exception, match="at most one"):
        parse_spec({"tune_id": 666678, "text": "<lora:1:1> <lora:2:1> x"})
