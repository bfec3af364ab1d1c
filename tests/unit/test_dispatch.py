"""Who gets the next Astria request (grant.lua): lanes, fair tenants, caps, expiry, polls."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from tests.unit.conftest import Store
from worker.records import JobState, RequestKind


def posts(store: Store, rounds: int, room: int = 1) -> list[str]:
    """Names of the jobs granted a POST, `room` at a time, in order."""
    order: list[str] = []
    for _ in range(rounds):
        order += [name for name, kind in store.grant(room).items() if kind == "submit"]
    return order


def fast(make_store: Any, **settings: Any) -> Store:
    return make_store(astria_rate_limit_per_second=100_000, astria_rate_limit_burst=100_000,
                      **settings)  # type: ignore[no-any-return]


def test_interactive_goes_first_and_lower_lanes_keep_their_minimum_share(
    make_store: Any,
) -> None:
    store = fast(make_store, lane_min_share={"normal": 0.2, "batch": 0.1})
    for i in range(100):
        store.register(f"b{i}", priority="batch")
        store.register(f"n{i}", priority="normal")
        store.register(f"i{i}", priority="interactive")
    first = posts(store, 50)
    lanes = Counter(name[0] for name in first)
    assert lanes["i"] >= 33 and lanes["n"] >= 9 and lanes["b"] >= 4, lanes
    assert first[0].startswith("i")


def test_tenants_take_turns_within_a_lane(make_store: Any) -> None:
    store = fast(make_store)
    for i in range(300):
        store.register(f"big{i}", tenant="big")
    for i in range(10):
        store.register(f"small{i}", tenant="small")
    first = posts(store, 20)
    assert Counter(name.rstrip("0123456789") for name in first) == {"big": 10, "small": 10}
    assert [n for n in first if n.startswith("small")] == [f"small{i}" for i in range(10)]


def test_tenant_weights(make_store: Any) -> None:
    store = fast(make_store, tenant_weights={"app": 3})
    for i in range(100):
        store.register(f"app{i}", tenant="app")
        store.register(f"etl{i}", tenant="etl")
    counts = Counter(name.rstrip("0123456789") for name in posts(store, 40))
    assert counts == {"app": 30, "etl": 10}


def test_a_tenant_at_its_cap_waits_while_others_go(make_store: Any) -> None:
    store = fast(make_store, tenant_max_in_flight={"bulk": 2})
    for i in range(5):
        store.register(f"bulk{i}", tenant="bulk")
        store.register(f"app{i}", tenant="app")
    assert Counter(n.rstrip("0123456789") for n in posts(store, 1, room=10)) == {
        "bulk": 2, "app": 5}
    # one of bulk's prompts ends: it may send one more
    lease, job = store.lease("bulk0")
    store.jobs.retire(lease, job)
    assert posts(store, 1, room=10) == ["bulk2"]


def test_polls_have_their_own_tokens(make_store: Any) -> None:
    """Submissions at their limit do not hold up polls of prompts already paid for."""
    store = make_store(astria_rate_limit_per_second=2, astria_rate_limit_burst=2)
    store.register("waiting")
    assert store.grant(10, now=1000.0) == {"waiting": "submit"}
    lease, job = store.lease("waiting")
    store.jobs.record_prompts(lease, job, [5], tune_id=1, text="x", rerouted=False,
                              first_poll_at=1000.5)
    for i in range(20):
        store.register(f"q{i}")
    store.grant(10, now=1000.4)  # the submit tokens are spent
    assert store.grant(10, now=1000.6).get("waiting") == "poll"


def test_a_job_not_sent_before_its_expiry_ends_without_a_post(store: Store) -> None:
    store.register("late", post_by=time.time() - 1)
    assert store.grant() == {"late": "expire"}
    assert store.grant() == {}  # nor is it POSTed afterwards


def test_a_dead_workers_job_is_granted_again_when_its_lease_ends(make_store: Any) -> None:
    store = fast(make_store, job_lease_seconds=60)
    store.register("a")
    now = time.time()
    assert store.grant(now=now) == {"a": "submit"}
    assert store.grant(now=now + 30) == {}
    # after the lease: looked at as a poll-kind step (it may have POSTed: it will reconcile)
    assert store.grant(now=now + 61) == {"a": "poll"}
    assert store.jobs.load(store.jid("a")).status is JobState.QUEUED


def test_polls_go_on_credit_and_what_one_listing_saved_comes_back(make_store: Any) -> None:
    """Polls of one tune share one listing request: a grant with tokens hands out half a second's
    worth of due polls, the excess on credit; the debt holds later polls back unless the
    listing's unused tokens come back, so the request rate stays within the limit either way."""
    store = make_store(astria_rate_limit_per_second=10, astria_rate_limit_burst=20)
    names = [f"w{i}" for i in range(20)]
    for name in names:
        store.register(name)
    for step in range(10):  # 2 submit tokens (the pacing bucket at 10/s) per grant
        granted = store.grant(100, now=1000.0 + step)
        for name in granted:
            lease, job = store.lease(name)
            store.jobs.record_prompts(lease, job, [1], tune_id=1, text="x", rerouted=False,
                                      first_poll_at=1010.0)
    assert len(store.grant(100, now=1010.0)) == 5  # the bucket's 2 tokens, three on credit
    assert store.grant(100, now=1010.1) == {}  # the debt is paid first
    store.dispatcher.reports.unused(RequestKind.POLL, 4)  # one listing answered all five
    assert len(store.grant(100, now=1010.2)) == 5
