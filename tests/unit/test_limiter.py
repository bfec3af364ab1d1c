"""The adaptive rate limit (grant.lua) against an account limit it does not know, in virtual time.

Astria's account limit is modelled as a token bucket of rate R and one second of burst; requests
reach it half a latency after they are granted and their answers come back half a latency later,
when they are reported to the limiter (as the engine does).
"""

from __future__ import annotations

import heapq
import random
from typing import Any

import pytest

from tests.unit.conftest import Store
from worker.records import RequestKind


def run(store: Store, *, limit: float, jobs: int, retry_after: bool, latency: float = 0.25,
        seconds: float = 120.0) -> dict[str, float]:
    rng = random.Random(7)
    for i in range(jobs):
        store.register(f"j{i}")
    now, tokens, refilled = 1000.0, limit, 1000.0
    answers: list[tuple[float, int, float | None, float]] = []
    sent = accepted = throttled = 0
    first = last = 0.0
    while now < 1000.0 + seconds and accepted < jobs:
        while answers and answers[0][0] <= now:
            _, status, wait, sent_at = heapq.heappop(answers)
            if status == 429:
                store.dispatcher.reports.throttled(RequestKind.SUBMIT, wait, sent_at)
            else:
                store.dispatcher.reports.ok(RequestKind.SUBMIT)
        for name, kind in store.grant(256, now=now).items():
            assert kind == "submit"
            sent += 1
            arrives = now + latency * rng.uniform(0.5, 1.5) / 2
            tokens, refilled = min(limit, tokens + (arrives - refilled) * limit), arrives
            if tokens >= 1:
                tokens -= 1
                accepted += 1
                first, last = first or arrives, arrives
                answer: tuple[int, float | None] = (200, None)
            else:
                throttled += 1
                answer = (429, float(max(1, int((1 - tokens) / limit) + 1)) if retry_after
                          else None)
                lease, job = store.lease(name)
                store.jobs.requeue(lease, job, at=now)
            heapq.heappush(answers, (arrives + latency / 2, *answer, now))
        now += 0.02
    return {"used": (accepted - limit) / (last - first) / limit, "throttled": throttled / sent,
            "accepted": accepted}


@pytest.mark.parametrize("retry_after", [True, False], ids=["Retry-After", "no Retry-After"])
def test_finds_an_unknown_account_limit(make_store: Any, retry_after: bool) -> None:
    """Against 5 POST/s, with our ceiling at 10/s: at least 90% of it used, under 5% 429s."""
    figures = run(make_store(astria_rate_limit_per_second=10), limit=5.0, jobs=300,
                  retry_after=retry_after)
    assert figures["accepted"] == 300
    assert figures["used"] >= 0.9, figures
    assert figures["throttled"] < 0.05, figures


def test_a_higher_limit_under_a_much_higher_ceiling(make_store: Any) -> None:
    """20/s under a ceiling of 50/s: starting 2.5 times too fast costs a few more 429s while
    the rate comes down (the requests already in flight), then the same as above."""
    figures = run(make_store(astria_rate_limit_per_second=50), limit=20.0, jobs=1000,
                  retry_after=True)
    assert figures["used"] >= 0.9 and figures["throttled"] < 0.06, figures


def test_never_above_the_ceiling(make_store: Any) -> None:
    """Astria allows 100/s; ASTRIA_RATE_LIMIT_PER_SECOND=4 is what we send, at most."""
    store = make_store(astria_rate_limit_per_second=4, astria_rate_limit_burst=1)
    for i in range(200):
        store.register(f"j{i}")
    granted = 0
    for step in range(500):  # ten virtual seconds
        units = store.grant(256, now=1000.0 + step * 0.02)
        granted += len(units)
        for _ in units:
            store.dispatcher.reports.ok(RequestKind.SUBMIT)
    assert 38 <= granted <= 42


def test_retry_after_pauses_every_worker(store: Store) -> None:
    for i in range(10):
        store.register(f"j{i}")
    assert len(store.grant(1, now=1000.0)) == 1
    store.dispatcher.reports.throttled(RequestKind.SUBMIT, 3.0, 1000.0)
    assert store.grant(10, now=1000.1) == {}
    assert store.grant(10, now=1002.9) == {}
    assert store.grant(10, now=1003.2) != {}
