"""Which webhooks go out: their own budget, a cap per destination, and a destination that keeps
failing held back, one probe at a time (grant_webhooks.lua, webhook_done.lua)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.unit.conftest import Store
from worker.records import Succeeded
from worker.store.types import Delivery, Ending
from worker.store.webhooks import FAILURES_TO_HOLD, HOLD_BASE


@pytest.fixture
def fast(make_store: Any) -> Any:
    """Stores whose rate limit is out of the way (the jobs here only need to end)."""
    return lambda **settings: make_store(astria_rate_limit_per_second=1000,
                                         astria_rate_limit_burst=1000, **settings)


def finished_with_webhooks(store: Store, names: list[str], url: str) -> list[str]:
    """Jobs that ended with a webhook to `url`; their message ids."""
    for name in names:
        store.register(name, callback=url)
    granted = store.grant(len(names))
    assert set(granted) == set(names)
    for name in names:
        lease, job = store.lease(name)
        store.jobs.finish([Ending(lease, job, Succeeded({"images": ["x"]}))])
    return [f"msg_{store.jid(name)}" for name in names]


def test_webhooks_have_their_own_budget(fast: Any) -> None:
    store = fast()
    finished_with_webhooks(store, [f"j{i}" for i in range(3)], "https://a.test/hook")
    assert store.grant_webhooks(room=0) == []
    assert len(store.grant_webhooks(room=2)) == 2


def test_one_destination_gets_at_most_its_cap_in_flight(fast: Any) -> None:
    store = fast(webhook_max_in_flight_per_destination=2)
    slow = finished_with_webhooks(store, [f"s{i}" for i in range(6)], "https://slow.test/hook")
    other = finished_with_webhooks(store, ["o1", "o2"], "https://other.test/hook")
    first = store.grant_webhooks(room=10)
    assert len([m for m in first if m in slow]) == 2 and set(other) <= set(first)
    assert store.grant_webhooks(room=10) == []  # the rest of slow.test waits its turn
    now = time.time()
    store.webhooks.done(first[0], result=Delivery.DELIVERED, next_at=0, error="", body=b"{}",
                        now=now, answered=True)
    assert len(store.grant_webhooks(room=10, now=now + 1.5)) == 1  # one left: one more goes


def test_a_destination_that_keeps_failing_is_held_back_then_probed_once(fast: Any) -> None:
    store = fast()
    hooks = finished_with_webhooks(store, [f"j{i}" for i in range(8)], "https://down.test/x")
    now = time.time()
    for message in hooks[:FAILURES_TO_HOLD]:
        store.webhooks.done(message, result=Delivery.RETRY, next_at=now, error="timed out",
                            body=b"{}", now=now, answered=False)
    assert store.grant_webhooks(room=10, now=now + 1) == []  # held back
    later = now + HOLD_BASE + 0.1
    probe = store.grant_webhooks(room=10, now=later)
    assert len(probe) == 1  # one attempt at a time while it keeps failing
    assert store.grant_webhooks(room=10, now=later + 0.1) == []
    store.webhooks.done(probe[0], result=Delivery.DELIVERED, next_at=0, error="", body=b"{}",
                        now=later, answered=True)
    assert len(store.grant_webhooks(room=10, now=later + 1.1)) == 4  # healthy again: its cap


def test_an_endpoint_that_answers_is_not_held_back_however_it_answers(fast: Any) -> None:
    store = fast()
    hooks = finished_with_webhooks(store, [f"j{i}" for i in range(8)], "https://flaky.test/x")
    now = time.time()
    for message in hooks[:6]:
        store.webhooks.done(message, result=Delivery.RETRY, next_at=now, error="HTTP 500",
                            body=b"{}", now=now, answered=True)
    assert len(store.grant_webhooks(room=10, now=now + 0.1)) == 4  # its cap: not held back


def test_a_webhook_held_past_its_retry_window_is_granted_to_be_ended(fast: Any) -> None:
    store = fast(webhook_retry_for_seconds=60)
    [hook, *_] = finished_with_webhooks(store, ["a", "b"], "https://down.test/x")
    now = time.time()
    store.redis.hset(store.keys.destination("https://down.test"),
                     mapping={"failures": 50, "held_until": now + 3600})
    assert store.grant_webhooks(room=10, now=now + 1) == []
    assert hook in store.grant_webhooks(room=10, now=now + 61)  # deliver() ends it: dead
