"""The benchmark's scenarios and the row each prints.

Issue 4's rows measure the pipeline's own cost (the rate limit out of the way, answers at once),
against the same machine's ceiling of no-op Celery tasks. The real-conditions rows put Astria's
latency, slow answers and account limit back, each beside the zero-latency row it is compared with
or the account limit it is held to.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections import Counter
from dataclasses import dataclass

from astria_local.otlp_sink import OtlpSink
from astria_local.sim_limit import Counter as LimitCounter
from astria_local.simulator import SimConfig
from bench.run import Figures, Pool, Run, created, wait_all

#: The recommended worker command (README, Procfile, compose, Dockerfile).
RECOMMENDED = Pool("prefork", 2, 1)


@dataclass(frozen=True)
class Scenario:
    label: str
    jobs: int
    generation: float
    callbacks: bool = False
    latency: float = 0.0  #: seconds each Astria answer takes (+/- 50%)
    slow_share: float = 0.0  #: share of answers that take slow_seconds, then slow_status
    slow_seconds: float = 30.0
    slow_status: int | None = 504
    account_limit: float = 0.0  #: Astria's POSTs per second (0: none)
    counter: LimitCounter = "bucket"  #: how Astria counts it
    retry_after: bool = True  #: whether its 429s say when to come back
    stray_429: float = 0.0  #: share of POSTs answered 429 for no reason (counted in the share)
    tuned: bool = True  #: the bench's settings (rate limit out of the way); else the defaults
    #: ASTRIA_RATE_LIMIT_PER_SECOND, when the row tells the limiter the account's limit (what
    #: pacing alone achieves against a counter, nothing left to find); None: the default
    ceiling: float | None = None
    #: traced: each job sent with a traceparent, spans exported over OTLP/HTTP to a collector on
    #: loopback (`astria_local.otlp_sink`)
    tracing: bool = False
    baseline: str | None = None  #: the row (zero latency, no fault) whose makespan this one is
    #: compared with
    pool: Pool | None = None  #: None: the recommended command
    #: jobs run first on the same stack, so the limiter has found the account's limit (a queue
    #: that has been running: its state lives in Redis for an hour); the figures are the rest's
    warm: int = 0
    timeout: float = 900.0

    def sim(self) -> SimConfig:
        return SimConfig(generation_seconds=self.generation, latency_seconds=self.latency,
                         fault_slow=self.slow_share, slow_seconds=self.slow_seconds,
                         slow_status=self.slow_status, rate_limit=self.account_limit,
                         rate_limit_counter=self.counter, rate_limit_retry_after=self.retry_after,
                         rate_limit_methods="POST", fault_429=self.stray_429,
                         fault_methods="POST")


ISSUE_4 = [
    Scenario("gen 3 s, polling", 2000, 3.0),
    Scenario("gen 0 s, polling", 2000, 0.0),
    Scenario("gen 3 s, callbacks", 2000, 3.0, callbacks=True),
    Scenario("10k in flight, 1 process", 10000, 60.0, callbacks=True,
             pool=Pool("threads", 16, 1)),
]
REAL = [
    Scenario("gen 3 s, latency 250 ms", 2000, 3.0, latency=0.25, baseline="gen 3 s, polling"),
    Scenario("gen 3 s, latency 1 s", 2000, 3.0, latency=1.0, baseline="gen 3 s, polling"),
    Scenario("gen 3 s, polling, traced", 2000, 3.0, tracing=True, baseline="gen 3 s, polling"),
    Scenario("gen 3 s, latency 250 ms, traced", 2000, 3.0, latency=0.25, tracing=True,
             baseline="gen 3 s, latency 250 ms"),
    Scenario("1 answer in 5 takes 30 s, then 504", 300, 3.0, latency=0.25, slow_share=0.2,
             tuned=False),
    Scenario("account limit 5 POST/s", 300, 1.0, latency=0.25, account_limit=5.0, tuned=False),
]
COUNTER_NAMES: dict[LimitCounter, str] = {"bucket": "token bucket", "fixed": "fixed window",
                                          "sliding": "sliding window"}


def _limited(counter: LimitCounter, retry_after: bool = True, pool: Pool | None = None,
             hosts: str = "", told: float | None = None, stray: bool = False,
             warm: int = 0) -> Scenario:
    base = f"account limit 5 POST/s, {COUNTER_NAMES[counter]}"
    learnt = f", after {warm} jobs" if warm else ""
    label = (f"{base}{'' if retry_after else ', no Retry-After'}{hosts}"
             f"{f', told {told:g} POST/s' if told else ''}"
             f"{', 1 answer in 20 a stray 429' if stray else ''}{learnt}")
    return Scenario(label, 300, 1.0, latency=0.25, account_limit=5.0, counter=counter,
                    retry_after=retry_after, tuned=False, pool=pool, ceiling=told,
                    stray_429=0.05 if stray else 0.0, warm=warm,
                    baseline=base + learnt if stray else None)


#: jobs a warm row runs first: the limit found and the bracket around it closed (about 30 s)
WARM = 200
#: and beside stray 429s, their share learnt as well: the rate stepped down to its floor first
#: (a minute or two)
STRAYS_LEARNT = 600
ASTRIA_LIMITS = [  # issue 19: the counters Astria might use, hosts sharing it, stray 429s
    _limited("bucket", retry_after=False),
    *(_limited(counter, retry_after) for counter in ("fixed", "sliding")
      for retry_after in (True, False)),
    _limited("sliding", pool=Pool("prefork", 2, 3), hosts=", 3 hosts"),
    # the target's floor: the limit known, paced at 95% and at 100% of it, nothing to find
    *(_limited("sliding", told=told) for told in (4.75, 5.0)),
    _limited("fixed", stray=True),  # beside the limit, 429s that are not its own
    # the same once the limit is found: what a queue that has been running sees
    *(_limited(counter, retry_after=False, warm=WARM)
      for counter in ("bucket", "fixed", "sliding")),
    _limited("fixed", warm=WARM), _limited("fixed", stray=True, warm=WARM),
    _limited("fixed", warm=STRAYS_LEARNT), _limited("fixed", stray=True, warm=STRAYS_LEARNT),
    Scenario("no account limit", 600, 1.0, latency=0.25, tuned=False),
    Scenario("no account limit, 1 answer in 20 a stray 429", 600, 1.0, latency=0.25,
             stray_429=0.05, tuned=False, baseline="no account limit"),
]
SCENARIOS = {s.label: s for s in ISSUE_4 + REAL + ASTRIA_LIMITS}


def run(url: str, sc: Scenario) -> Figures:
    with contextlib.ExitStack() as cleanup:
        env = {} if sc.ceiling is None else {"ASTRIA_RATE_LIMIT_PER_SECOND": f"{sc.ceiling:g}"}
        if sc.tracing:
            sink = cleanup.enter_context(OtlpSink())
            env.update(OTEL_EXPORTER_OTLP_ENDPOINT=sink.url, OTEL_SERVICE_NAME="bench")
        stack = cleanup.enter_context(Run(url, sc.sim(), sc.pool or RECOMMENDED, tuned=sc.tuned,
                                          callbacks=sc.callbacks, env=env))
        before = None
        if sc.warm:
            warming = [stack.send({"tune_id": 42, "text": f"warm {i}"}) for i in range(sc.warm)]
            wait_all(stack.client, warming, sc.timeout)
            before = stack.sim.counters
        enqueued: dict[str, float] = {}
        started = time.time()
        for i in range(sc.jobs):
            headers = ({"traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"}
                       if sc.tracing else None)
            job = stack.send({"tune_id": 42, "text": f"bench {i}"}, headers=headers)
            enqueued[job] = time.time()
        figures = stack.measure(enqueued, started, sc.timeout, before)
        if sc.tracing:
            time.sleep(6)  # the exporters' last batch (every 5 s)
            print(f"{sc.label}: {len(sink.spans)} spans exported, "
                  f"{len(sink.spans) / sc.jobs:.1f} per job", flush=True)
        return figures


def row(sc: Scenario, f: Figures, ceiling: float | None,
        makespans: dict[str, float]) -> dict[str, str]:
    """The table's row of one run."""
    dupes = sum(n - 1 for n in Counter(p["text"] for p in f.prompts).values())
    sim = f.sim
    posts = sim.get("requests_POST", 0)
    out = {
        "scenario": sc.label, "workers": str(sc.pool or RECOMMENDED), "jobs": str(sc.jobs),
        "gen s": f"{sc.generation:g}", "latency s": f"{sc.latency:g}",
        "jobs/s": f"{f.jobs / f.makespan:.0f}", "p50 s": f"{f.pct(0.5):.2f}",
        "p95 s": f"{f.pct(0.95):.2f}", "makespan s": f"{f.makespan:.1f}",
        "vs twin": "", "POST/job": f"{sim.get('created', 0) / f.jobs:.2f}",
        "GET/job": f"{sim.get('get', 0) / f.jobs:.2f}",
        "max in flight": str(sim.get("max_in_flight", 0)),
        "429 share": (f"{(sim.get('throttled', 0) + sim.get('fault_429', 0)) / posts:.1%}"
                      if posts else ""),
        "account used": "", "peak RSS MB": f"{f.peak_rss_mb:.0f}",
        "all RSS MB": f"{f.total_rss_mb:.0f}",
        "errors": str(f.jobs - f.succeeded), "duplicates": str(dupes),
        "ceiling/s": "", "throughput/ceiling": "", "makespan/ideal": "",
    }
    if sc.baseline and sc.baseline in makespans:
        out["vs twin"] = f"{f.makespan / makespans[sc.baseline]:.2f}"
    if sc.account_limit and len(f.prompts) > 1:
        times = sorted(created(p) for p in f.prompts)
        burst = max(1.0, sc.account_limit) if sc.counter == "bucket" else 0.0
        rate = (len(times) - burst) / (times[-1] - times[0])
        out["account used"] = f"{rate / sc.account_limit:.0%}"
    if ceiling:
        ideal = sc.generation + sc.jobs / ceiling
        out.update({"ceiling/s": f"{ceiling:.0f}",
                    "throughput/ceiling": f"{f.jobs / f.makespan / ceiling:.0%}",
                    "makespan/ideal": f"{f.makespan / ideal:.2f}"})
    return out
