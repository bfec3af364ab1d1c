"""Redis Sentinel: a primary, a replica and a Sentinel; the primary dies mid-run.

Every accepted job must reach its outcome and no prompt may be created twice: the broker, the
result backend, the job store, the limiter and the loss-proof transport all follow the failover.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest
import redis
from redis.sentinel import Sentinel

from astria_local.redis_server import ThrowawayRedis, ThrowawaySentinel
from astria_local.simulator import SimConfig
from tests.harness import Stack, terminal_states, wait_for

pytestmark = pytest.mark.slow  # starts Redis servers and worker processes

JOBS = 120
MASTER = "mymaster"


def test_a_failover_loses_no_job_and_duplicates_no_prompt(
    make_stack: Callable[..., Stack], capsys: pytest.CaptureFixture[str],
) -> None:
    primary = ThrowawayRedis(args=("--repl-diskless-sync-delay", "0")).start()
    replica = ThrowawayRedis(args=("--replicaof", "127.0.0.1", str(primary.port))).start()
    sentinel = ThrowawaySentinel(primary.port, MASTER).start()
    try:
        sentinels = Sentinel([("127.0.0.1", sentinel.port)], socket_timeout=2)
        synced = redis.Redis(port=replica.port)
        wait_for(lambda: synced.info("replication").get("master_link_status") == "up", 30,
                 "the replica to be in sync")
        wait_for(lambda: sentinels.discover_slaves(MASTER), 30, "the Sentinel to see it")
        stack = make_stack(sim_config=SimConfig(generation_seconds=1),
                           redis_sentinel_master=MASTER, job_lease_seconds=10,
                           astria_read_timeout=5)
        stack.redis_url = stack.env["REDIS_URL"] = sentinel.url
        stack.app.conf.update(broker_url=sentinel.url, result_backend=sentinel.url,
                              broker_transport_options={"master_name": MASTER},
                              result_backend_transport_options={"master_name": MASTER})
        for _ in range(2):
            stack.start_worker()
        jobs = [stack.send({"tune_id": 42, "text": f"failover {i}"}) for i in range(JOBS)]
        master = sentinels.master_for(MASTER, socket_timeout=5)
        wait_for(lambda: len(terminal_states(master, jobs)) >= JOBS // 4, 60, "a quarter done",
                 every=0.2)
        primary.kill()
        failed_over_at = time.monotonic()
        def promoted_replica() -> bool:
            try:
                return bool(sentinels.discover_master(MASTER)[1] == replica.port)
            except Exception:  # no master while the Sentinel decides
                return False

        wait_for(promoted_replica, 60, "the replica to be promoted", every=0.5)
        promoted = time.monotonic() - failed_over_at

        def all_final() -> bool:
            try:
                return len(terminal_states(master, jobs)) == JOBS
            except Exception:  # the client follows the failover on its next call
                return False

        wait_for(all_final, 180, "every job's outcome", every=1.0)
        states = Counter(terminal_states(master, jobs).values())
        per_text = Counter(p["text"] for p in stack.sim_json("/_sim/prompts"))
        with capsys.disabled():
            print(f"\nsentinel failover: promoted after {promoted:.1f}s, outcomes {dict(states)}, "
                  f"prompts {len(per_text)}, duplicates {sum(n - 1 for n in per_text.values())}")
        assert states == {"SUCCESS": JOBS}
        assert max(per_text.values()) == 1 and len(per_text) == JOBS
        stack.close()
    finally:
        for server in (sentinel, replica, primary):
            server.stop()
