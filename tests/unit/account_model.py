"""An Astria account in virtual time, for the limiter's tests: its rate limit counted as a token
bucket, a fixed window or a sliding window, answers a latency later, and stray 429s.

`drive` runs the real dispatcher (grant.lua and its limiter) against it: as at the simulator,
a request reaches the account within `jitter` of its grant and is answered `latency` (± `spread`
of it) later, when it is reported to the limiter with its send time, as the engine does; so
answers overtake each other. Several hosts are several dispatchers sharing one Redis, each with
its own reports. A run starts at a point of the clock's second that its seed picks: a
per-whole-second counter turns wherever it turns.

The jitter (3 ms) is the worker's, measured at the simulator (2026-12-03, the recommended
command, 300 POSTs paced at 4.75/s, so 210.5 ms apart): 90% of the gaps between two POSTs'
arrivals were 208.9 to 211.7 ms. The simulator answers 250 ms ± 50% after a request arrives
(`SimConfig.latency_jitter`). Grants on the model's 20 ms steps add their own unevenness."""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field

from astria_local.sim_limit import AccountLimit, Counter
from tests.unit.conftest import Store
from worker.records import RequestKind
from worker.store.dispatch import Dispatcher, Reports
from worker.store.types import Lease


@dataclass
class Account:
    """The account: its limit (sim_limit.AccountLimit, the simulator's own), stray 429s, and the
    time the limit is lifted or falls."""

    limit: float  #: requests a second (0: none)
    counter: Counter = "bucket"
    burst: float | None = None  #: the bucket's size (default: one second's worth)
    retry_after: bool = True
    stray: float = 0.0  #: the share of answers that are a 429 for no reason
    strays_end: float | None = None  #: when the stray 429s stop (virtual time), if they do
    lifted_at: float | None = None  #: when the limit is lifted (virtual time), if it is
    falls: tuple[float, float] | None = None  #: (when, to what) the limit falls, if it does
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    counted: AccountLimit | None = None

    def admit(self, at: float) -> tuple[int, float | None]:
        """The answer to a request arriving at `at`: (status, Retry-After). As in the simulator,
        the limit counts a request before a stray 429 answers it."""
        wait = None
        if self.falls and at >= self.falls[0] and self.limit != self.falls[1]:
            self.limit, self.counted = self.falls[1], None
        if self.lifted_at is None or at < self.lifted_at:
            self.counted = self.counted or AccountLimit(self.limit, self.counter, self.burst)
            wait = self.counted.admit(at)
        if wait is not None:
            return 429, float(max(1, math.ceil(wait))) if self.retry_after else None
        if self.stray and (self.strays_end is None or at < self.strays_end) \
                and self.rng.random() < self.stray:
            return 429, 1.0 if self.retry_after else None
        return 200, None


@dataclass
class Figures:
    jobs: int
    sent: int
    seconds: float  #: from the first acceptance to the last
    accepted_at: list[float]  #: when each POST was accepted
    throttled_at: list[float]  #: when each 429 was answered
    #: POSTs sent, and of them answered 429, once the limiter had learnt a limit: what running
    #: at it costs, the finding of it (a second above it, from the ceiling) left out
    sent_learnt: int = 0
    throttled_learnt: int = 0

    @property
    def accepted(self) -> int:
        return len(self.accepted_at)

    @property
    def throttled(self) -> int:
        return len(self.throttled_at)

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0

    @property
    def share_429(self) -> float:
        return self.throttled / self.sent if self.sent else 0.0

    @property
    def share_429_learnt(self) -> float:
        return self.throttled_learnt / self.sent_learnt if self.sent_learnt else 0.0


def drive(store: Store, account: Account, *, jobs: int, hosts: int = 1, latency: float = 0.25,
          spread: float = 0.5, jitter: float = 0.003, seconds: float = 300.0, step: float = 0.02,
          seed: int = 11) -> Figures:
    """Register `jobs` jobs and POST them through `hosts` dispatchers until all are accepted."""
    rng = random.Random(seed)
    for i in range(jobs):
        store.register(f"j{i}")
    dispatchers = [store.dispatcher] + [
        Dispatcher(store.jobs.scripts, store.settings, store.keys) for _ in range(hosts - 1)]
    for dispatcher in dispatchers:
        dispatcher.reports = Reports(clock=lambda: now)
    #: (when the answer comes back, host, status, Retry-After, when the request was sent)
    answers: list[tuple[float, int, int, float | None, float]] = []
    # a clock-second counter's windows turn where they will, not where the run starts; drawn
    # from a generator of its own, so the jitter's sequence is the one the README measured
    now = start = 1000.0 + random.Random(seed).random()
    sent = sent_learnt = throttled_learnt = 0
    accepted_at: list[float] = []
    throttled_at: list[float] = []
    while now < start + seconds and len(accepted_at) < jobs:
        while answers and answers[0][0] <= now:
            _, host, status, wait, sent_at = heapq.heappop(answers)
            reports = dispatchers[host].reports
            if status == 429:
                reports.throttled(RequestKind.SUBMIT, sent_at, wait)
            else:
                reports.ok(RequestKind.SUBMIT, sent_at)
        turn = round((now - start) / step)  # hosts ask in turn: the first asker takes the token
        for host in [(turn + i) % hosts for i in range(hosts)]:
            grant = dispatchers[host].grant(256, now=now)
            learnt = bool(grant.units and store.redis.hget(store.keys.limiter, "lo:submit"))
            for unit in grant.units:
                sent += 1
                sent_learnt += learnt
                arrives = now + rng.uniform(0.0, jitter)
                status, wait = account.admit(arrives)
                lease, job = Lease(unit.id, grant.owner), store.jobs.load(unit.id)
                if status == 200:
                    accepted_at.append(arrives)
                    store.jobs.retire(lease, job)
                else:
                    throttled_at.append(arrives)
                    throttled_learnt += learnt
                    store.jobs.requeue(lease, job, at=now)
                answered = arrives + latency * rng.uniform(1 - spread, 1 + spread)
                heapq.heappush(answers, (answered, host, status, wait, now))
        now += step
    return Figures(jobs, sent, max(accepted_at) - min(accepted_at), accepted_at, throttled_at,
                   sent_learnt, throttled_learnt)
