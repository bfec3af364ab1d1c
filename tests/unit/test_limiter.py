"""The adaptive rate limit (grant.lua, lib/limiter.lua) against account limits it is not told,
counted the ways Astria might count them, in virtual time (tests/unit/account_model.py)."""

from __future__ import annotations

import bisect
import random
import time
from typing import Any

import pytest

from astria_local.sim_limit import COUNTERS
from tests.unit.account_model import Account, Figures, drive
from tests.unit.conftest import Store
from worker.records import RequestKind


def limited(make_store: Any, account: Account, *, jobs: int = 400, hosts: int = 1,
            seconds: float = 300.0) -> Figures:
    """`jobs` POSTs against `account` under our ceiling of 10/s."""
    return drive(make_store(astria_rate_limit_per_second=10), account, jobs=jobs, hosts=hosts,
                 seconds=seconds)


def in_minute(times: list[float], ending: float) -> int:
    """How many of the sorted times (of acceptances, of 429s) fall in the minute ending at
    `ending`."""
    return bisect.bisect_right(times, ending) - bisect.bisect_left(times, ending - 60.0)


def last_minute(figures: Figures) -> tuple[int, int]:
    """POSTs accepted, and answered 429, in the minute ending at the run's last acceptance."""
    end = max(figures.accepted_at)
    return (in_minute(sorted(figures.accepted_at), end),
            in_minute(sorted(figures.throttled_at), end))


@pytest.mark.parametrize("retry_after", [True, False], ids=["Retry-After", "no Retry-After"])
@pytest.mark.parametrize("counter", COUNTERS)
def test_finds_the_account_limit_whatever_its_counter(make_store: Any, counter: str,
                                                      retry_after: bool) -> None:
    """5 POST/s counted as a token bucket, a fixed or a sliding window: at least 90% of it used,
    under 5% of POSTs answered 429 (the first seconds, at the ceiling, included), and under 3%
    once the limit is learnt (what running at it costs, probes included)."""
    figures = limited(make_store, Account(limit=5, counter=counter, retry_after=retry_after))
    assert figures.accepted == figures.jobs
    assert figures.rate / 5 >= 0.9 and figures.share_429 < 0.05, figures
    assert figures.share_429_learnt < 0.03, figures


@pytest.mark.parametrize("counter", ["bucket", "sliding"])
def test_answers_that_overtake_each_other_leave_the_limit_measured_right(make_store: Any,
                                                                          counter: str) -> None:
    """Answers come back 125-375 ms after their POSTs, so they overtake each other; the limit is
    counted by when requests were sent, and every one of five runs uses at least 94% of it
    with at most 6% of POSTs answered 429. Counted by when answers came back, the release
    before measured a bucket of 5 as 3.8-6.0 and a sliding window as 3.9-5.9: runs that used
    83% of a sliding window, or answered 18% of their POSTs 429 (a floor above the limit)."""
    for seed in range(5):
        figures = drive(make_store(astria_rate_limit_per_second=10),
                        Account(limit=5, counter=counter, retry_after=False), jobs=300, seed=seed)
        assert figures.rate / 5 >= 0.94 and figures.share_429 <= 0.06, (seed, figures)


def test_hosts_share_the_account_limit(make_store: Any) -> None:
    """Three hosts, one sliding window of 5/s: the limit is the account's, found as by one host."""
    figures = limited(make_store, Account(limit=5, counter="sliding"), hosts=3)
    assert figures.rate / 5 >= 0.9 and figures.share_429 < 0.05, figures
    assert figures.share_429_learnt < 0.03, figures


def test_stray_429s_are_not_a_limit(make_store: Any) -> None:
    """No account limit, one answer in 20 a 429 for no reason: at least 90% of the throughput of
    the same run without them (the release before this limiter: 16%)."""
    clean = limited(make_store, Account(limit=0), jobs=600)
    noisy = limited(make_store, Account(limit=0, stray=0.05), jobs=600)
    assert noisy.accepted == 600
    assert noisy.rate >= 0.9 * clean.rate, (noisy, clean)


@pytest.mark.parametrize("counter", COUNTERS)
def test_stray_429s_beside_a_limit_do_not_wear_the_rate_down(make_store: Any,
                                                             counter: str) -> None:
    """5/s, and one answer in 20 a 429 for no reason: any of them could be the limit's, yet the
    rate stops falling at the floor (90% of what the limit passed when it was measured), where
    the strays' share is learnt and the rate goes back up: in the last minute at least 80% of
    the limit passes, about as much as in the minute before. This account's strays take one of
    the five requests the limit passed in the second it was measured, so it measured 4 for 5.
    Held at the floor (stop 34), 66% passed per whole second and in any one second; lowered step
    after step (the release before that), 52% by the fifth minute, still falling."""
    figures = limited(make_store, Account(limit=5, counter=counter, stray=0.05), jobs=1200,
                      seconds=420.0)
    assert figures.accepted == figures.jobs, figures.accepted
    accepted = sorted(figures.accepted_at)
    last = in_minute(accepted, accepted[-1])
    before = in_minute(accepted, accepted[-1] - 60.0)
    assert last / 60 >= 0.8 * 5 and last >= 0.9 * before, (last, before)


def test_stray_429s_that_stop_are_forgotten(make_store: Any) -> None:
    """5/s counted per whole second, and one answer in 20 a stray 429 for two minutes, then
    none. The strays' share, learnt at the floor, is kept ten minutes: in the run's last minute
    (about 13 minutes in), at most 3% of POSTs are answered 429 and at least 95% of the limit
    passes (never forgotten: 5.9% answered 429)."""
    figures = limited(make_store, Account(limit=5, counter="fixed", stray=0.05,
                                          strays_end=1120.0), jobs=4000, seconds=900.0)
    assert figures.accepted == figures.jobs, figures.accepted
    passed, throttled = last_minute(figures)
    assert throttled / (passed + throttled) <= 0.03 and passed / 60 >= 0.95 * 5, (passed,
                                                                                  throttled)


def test_a_cluster_of_stray_429s_is_not_the_limit_falling(make_store: Any) -> None:
    """A token bucket of 5/s and one answer in 20 a stray 429, in a sequence where a cluster of
    strays puts a window over 20% 16 s in, at 4.85/s, under the limit. A window over a limit
    already measured is measured again only when the next one is over it too, so the rate stays
    at least 75% of the limit (86%); measured at once, strays among the requests of the second
    measured made the limit 3 and the floor 2.7 (58%)."""
    figures = drive(make_store(astria_rate_limit_per_second=10),
                    Account(limit=5, stray=0.05, rng=random.Random(5)), jobs=300, seed=5)
    assert figures.accepted == figures.jobs, figures.accepted
    assert figures.rate / 5 >= 0.75, figures.rate


@pytest.mark.parametrize("counter", COUNTERS)
def test_a_limit_that_falls_is_measured_again(make_store: Any, counter: str) -> None:
    """5/s for a minute, then 2.5/s: the windows over it measure it again, and from 30 s after
    the fall the rate is the new limit's, with no more than one POST in ten answered 429
    (the first minute's finding included)."""
    figures = limited(make_store, Account(limit=5, counter=counter, falls=(1060.0, 2.5)),
                      jobs=600, seconds=200.0)
    after = sorted(at for at in figures.accepted_at if at >= 1090.0)
    assert 0.9 <= (len(after) - 1) / (after[-1] - after[0]) / 2.5 <= 1.25, after[:3]
    assert figures.share_429 <= 0.1, figures.share_429


def test_a_limit_that_falls_by_a_fifth_is_measured_again_at_the_floor(make_store: Any) -> None:
    """In any one second, 5 for a minute, then 4: too little of a fall for a window over it
    (our 5/s meets 20% of 429s there, and a window is over only beyond 20%), so the rate steps
    down to its floor, 4.5/s, where one POST in five is still answered 429: more than stray
    ones make (10% at most). What passed there is measured as the limit; in the last minute at
    most 3% of POSTs are answered 429 and at least 90% of the new limit passes. Held at the
    floor (the release before), 20% were answered 429 for as long as the run lasted."""
    figures = limited(make_store, Account(limit=5, counter="sliding", falls=(1060.0, 4.0)),
                      jobs=900, seconds=300.0)
    assert figures.accepted == figures.jobs, figures.accepted
    passed, throttled = last_minute(figures)
    assert throttled / (passed + throttled) <= 0.03 and passed / 60 >= 0.9 * 4, (passed,
                                                                                 throttled)


@pytest.mark.parametrize("counter", COUNTERS)
def test_the_rate_recovers_when_the_limit_is_lifted(make_store: Any, counter: str) -> None:
    """5/s for 30 s, then no limit: 9 of our 10/s pass within 40 s of the lift (a probe every
    sixth window; one that passes above the bracket grows the rate by a quarter a window), not
    thousands of requests."""
    figures = limited(make_store, Account(limit=5, counter=counter, lifted_at=1030.0), jobs=800)
    accepted = sorted(figures.accepted_at)
    seconds = [at for at in accepted if at >= 1030.0 and
               bisect.bisect(accepted, at + 1.0) - bisect.bisect_left(accepted, at) >= 9]
    assert seconds and seconds[0] - 1030.0 <= 40.0, seconds[:1]


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
            store.dispatcher.reports.ok(RequestKind.SUBMIT, time.monotonic())
    assert 38 <= granted <= 42


def _answers_then_429s(store: Store, throttled: int, retry_after: float) -> None:
    """One answer at t=1000, then `throttled` 429s with `retry_after` a second later."""
    for i in range(20):
        store.register(f"j{i}")
    assert store.grant(1, now=1000.0)
    store.dispatcher.reports.ok(RequestKind.SUBMIT, time.monotonic())
    store.grant(1, now=1000.0)
    for _ in range(throttled):
        store.dispatcher.reports.throttled(RequestKind.SUBMIT, time.monotonic(), retry_after)
    for _ in range(10 - throttled):
        store.dispatcher.reports.ok(RequestKind.SUBMIT, time.monotonic())


def test_retry_after_over_a_limit_pauses_every_worker(store: Store) -> None:
    """9 answers in 10 a 429: a second after the first of them (what passes meanwhile is the
    limit), the window closes and its Retry-After pauses every worker."""
    _answers_then_429s(store, throttled=9, retry_after=3.0)
    store.grant(10, now=1001.1)  # the answers reach the limiter
    assert store.grant(10, now=1002.2) == {}
    assert store.grant(10, now=1005.0) == {}
    assert store.grant(10, now=1005.3) != {}


def test_a_stray_429_pauses_no_one(store: Store) -> None:
    """Its Retry-After is for the one request (its retry policy waits it out)."""
    _answers_then_429s(store, throttled=1, retry_after=30.0)
    assert store.grant(10, now=1001.1) != {}
