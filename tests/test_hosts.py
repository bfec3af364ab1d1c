"""Several hosts sharing one Redis and one Astria account, as several hosts: three workers of
their own node names, one SIGKILLed and one cut off from Redis (a partition, then healed) mid-run.

Every job must end SUCCESS with exactly one prompt (counted on the simulator), and the account's
limit (5 POSTs a second, counted in a sliding window, under our ceiling of 10) be used by the
survivors as by one host.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime

import pytest

from astria_local.simulator import SimConfig
from tests.harness import Stack, terminal_states, wait_for
from tests.partition import CuttableProxy

pytestmark = pytest.mark.slow  # starts worker processes

JOBS, LIMIT = 300, 5.0


def _created(prompt: dict[str, str]) -> float:
    return datetime.fromisoformat(prompt["created_at"].replace("Z", "+00:00")).timestamp()


def test_three_hosts_one_killed_one_cut_off(make_stack: Callable[..., Stack],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    stack = make_stack(
        sim_config=SimConfig(generation_seconds=1, rate_limit=LIMIT, rate_limit_counter="sliding",
                             rate_limit_methods="POST"),
        astria_rate_limit_per_second=10, astria_rate_limit_burst=20, job_lease_seconds=6)
    proxy = CuttableProxy(stack.redis_url)
    try:
        killed = stack.start_worker()
        stack.start_worker()
        cut_off = stack.start_worker(redis_url=proxy.url)
        stack.wait_ready()
        jobs = [stack.send({"tune_id": 42, "text": f"hosts job {i}"}) for i in range(JOBS)]

        def created() -> int:
            return int(stack.sim_json("/_sim/stats")["prompts"])

        wait_for(lambda: created() >= JOBS // 4, 120, "a quarter of the prompts")
        stack.kill_worker(killed)
        proxy.cut()
        wait_for(lambda: created() >= JOBS // 2, 120, "half of the prompts, one host cut off")
        proxy.restore()

        def all_ended() -> dict[str, str] | None:
            states = terminal_states(stack.redis, jobs)
            return states if len(states) == JOBS else None

        done = wait_for(all_ended, 240, "every job to end", every=0.5)
        prompts = stack.sim_json("/_sim/prompts")
        posts = stack.sim_json("/_sim/stats")["counters"]
        cut_off_lived = cut_off.poll() is None
    finally:
        stack.stop_processes()  # while the cut-off host can still reach Redis to stop
        proxy.close()

    twice = {text: n for text, n in Counter(p["text"] for p in prompts).items() if n > 1}
    times = sorted(_created(p) for p in prompts)
    used = (len(times) - 1) / (times[-1] - times[0]) / LIMIT
    with capsys.disabled():
        print(f"\nthree hosts: {Counter(done.values())}, prompts {len(prompts)}, duplicates "
              f"{len(twice)}, account used {used:.0%}, POSTs answered 429 "
              f"{posts.get('throttled', 0)} of {posts.get('requests_POST', 0)}")
    assert Counter(done.values()) == {"SUCCESS": JOBS}
    assert not twice and len(prompts) == JOBS
    assert cut_off_lived  # the cut-off host lived through it
    assert used >= 0.8
