"""The whole path of a job against a real Redis, real workers and the simulator over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest

from astria_local.simulator import SimConfig
from tests.harness import FACEID_TUNE, PTI_TUNE, ROOT, SLOW_TUNE, Stack

pytestmark = pytest.mark.slow  # starts worker processes


def test_checkpoint_job_returns_images_and_the_contract_fields(stack: Stack) -> None:
    job = stack.send({"tune_id": 42, "text": "ohwx man", "num_images": 2, "seed": 7,
                      "super_resolution": True, "inpaint_faces": True})
    out = stack.outcome(job)
    assert out["prompt_id"] > 0
    assert out["tune_id"] == out["requested_tune_id"] == 42
    assert out["rerouted"] is False
    assert out["text"] == "ohwx man"
    assert len(out["images"]) == 2 and all(u.startswith("http") for u in out["images"])
    sent = stack.sim_json("/_sim/prompts")
    assert len(sent) == 1
    assert sent[0]["seed"] == 7 and sent[0]["super_resolution"] is True


def test_lora_tune_is_rerouted_once_and_the_route_is_remembered(stack: Stack) -> None:
    first = stack.outcome(stack.send({"tune_id": PTI_TUNE, "text": "ohwx woman",
                                      "lora_strength": 0.6}))
    assert first["rerouted"] is True
    assert first["tune_id"] == 666678 and first["requested_tune_id"] == PTI_TUNE
    assert first["text"] == f"<lora:{PTI_TUNE}:0.6> ohwx woman"
    assert stack.sim.counters["rejected_422"] == 1

    # Later jobs for the same tune go straight to the base tune: no request wasted on a 422.
    second = stack.outcome(stack.send({"tune_id": PTI_TUNE,
                                       "text": f"<lora:{PTI_TUNE}:0.9> ohwx woman, smiling"}))
    assert second["rerouted"] is True
    assert second["text"] == f"<lora:{PTI_TUNE}:0.9> ohwx woman, smiling"  # tag not doubled
    assert stack.sim.counters["rejected_422"] == 1


def test_faceid_tune_is_rerouted_to_the_faceid_base(stack: Stack) -> None:
    out = stack.outcome(stack.send({"tune_id": FACEID_TUNE, "text": "ohwx man"}))
    assert out["rerouted"] is True and out["tune_id"] == 690204
    assert out["text"] == f"<faceid:{FACEID_TUNE}:1> ohwx man"


def test_second_lora_in_a_rerouted_sdxl_prompt_fails_with_the_rule(stack: Stack) -> None:
    result = stack.outcome(stack.send({"tune_id": PTI_TUNE, "text": "<lora:999:0.5> x"}))
    assert type(result).__name__ == "InvalidSpec"
    assert "one LoRA" in str(result)


def test_invalid_spec_fails_at_once_without_any_request(stack: Stack) -> None:
    job = stack.send({"tune_id": 42, "text": "   ", "num_images": 9, "colour": "red"})
    error = stack.outcome(job)
    assert stack.result(job).state == "FAILURE"
    assert type(error).__name__ == "InvalidSpec"
    for part in ("text: must not be blank", "num_images", "colour: unknown field"):
        assert part in str(error)
    assert stack.sim.counters == {}


def test_user_error_ends_the_job_with_astria_text(stack: Stack) -> None:
    error = stack.outcome(stack.send({"tune_id": 42, "text": "SIMULATE_USER_ERROR please"}))
    assert type(error).__name__ == "PromptFailed"
    assert "Simulated failure" in str(error)




def test_deadline_ends_a_job_with_a_timeout_error(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.start_worker(astria_job_deadline_seconds=2)
    error = stack.outcome(stack.send({"tune_id": SLOW_TUNE, "text": "never done"}))
    assert type(error).__name__ == "PromptTimeout"
    assert "ASTRIA_JOB_DEADLINE_SECONDS" in str(error)


def test_waiting_holds_no_worker(make_stack: Callable[..., Stack]) -> None:
    """One worker thread keeps many generations in flight: all prompts exist before any is done."""
    stack = make_stack(sim_config=SimConfig(generation_seconds=2))
    stack.start_worker(concurrency=1)
    jobs = [stack.send({"tune_id": 42, "text": f"job {i}"}) for i in range(12)]
    for job in jobs:
        assert stack.outcome(job)["images"]
    prompts = stack.sim_json("/_sim/prompts")
    assert len(prompts) == 12
    assert max(p["created_at"] for p in prompts) < min(p["trained_at"] for p in prompts)


def test_producer_by_name_without_importing_the_project(stack: Stack) -> None:
    script = textwrap.dedent(f"""
        import json, sys
        from celery import Celery
        app = Celery(broker={stack.redis_url!r}, backend={stack.redis_url!r})
        job = app.send_task("astria.submit_prompt", kwargs={{"spec": {{"tune_id": {PTI_TUNE},
                            "text": "ohwx man"}}}})
        out = job.get(timeout=30)
        bad = app.send_task("astria.submit_prompt", kwargs={{"spec": {{"tune_id": 1}}}})
        try:
            bad.get(timeout=30)
        except Exception as exc:
            err = [type(exc).__name__, str(exc)]
        assert "worker" not in sys.modules and "tasks" not in sys.modules
        print(json.dumps({{"out": out, "err": err}}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd="/", env=env, check=True)
    answer = json.loads(done.stdout)
    assert answer["out"]["rerouted"] is True and answer["out"]["images"]
    assert answer["err"][0] == "InvalidSpec" and "text: Field required" in answer["err"][1]


def test_python_helper_validates_before_sending(stack: Stack) -> None:
    from worker import InvalidSpec, enqueue

    try:
        enqueue({"tune_id": 42, "text": "x", "callback": "file:///etc/passwd"})
    except InvalidSpec as exc:
        assert "callback" in str(exc) and "http" in str(exc)
    else:
        raise AssertionError("enqueue accepted a file:// callback")


def test_worker_refuses_to_start_with_bad_settings(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    for env, name in (({"astria_api_key": ""}, "ASTRIA_API_KEY"),
                      ({"astria_poll_interval": "0"}, "ASTRIA_POLL_INTERVAL")):
        proc = stack.start_worker(**env)
        assert proc.wait(timeout=60) != 0
        assert name in stack.logs[-1].read_text()


def test_default_prefork_pool_runs_jobs(make_stack: Callable[..., Stack]) -> None:
    """`celery -A worker worker` with no options: the prefork pool."""
    stack = make_stack()
    stack.start_worker(pool="prefork", concurrency=2)
    jobs = [stack.send({"tune_id": PTI_TUNE, "text": f"prefork {i}"}) for i in range(4)]
    assert all(stack.outcome(job, timeout=60)["rerouted"] for job in jobs)


def test_a_queue_of_its_own_leaves_another_celerys_messages_alone(
        make_stack: Callable[..., Stack]) -> None:
    """BROKER_QUEUE: beside a team's own Celery on the same Redis DB, each takes only its own."""
    stack = make_stack(broker_queue="astria-jobs")
    stack.start_worker()
    theirs = stack.app.send_task("their.own_task", args=[1])  # onto `celery`, as theirs do
    ours = stack.send({"tune_id": 1, "text": "on our queue"}, queue="astria-jobs")
    assert stack.outcome(ours, timeout=60)["images"]
    waiting = stack.redis.lrange("celery", 0, -1)
    assert any(theirs.id.encode() in message for message in waiting)  # untouched
    assert stack.result(theirs.id).state == "PENDING"


ASYNC_PRODUCER = """
import asyncio, json, sys
from worker.producer import aio

async def main():
    ok = await aio.enqueue({"tune_id": 1, "text": "from asyncio"})
    slow = await aio.enqueue({"tune_id": int(sys.argv[1]), "text": "never mind"})
    print(await aio.cancel(slow))
    outcomes = await asyncio.gather(aio.outcome(ok, timeout=60), aio.outcome(slow, timeout=60),
                                    return_exceptions=True)
    print(json.dumps(outcomes[0]["images"]))
    print(type(outcomes[1]).__name__)
    try:
        await aio.outcome("no-such-job", timeout=0.5)
    except TimeoutError:
        print("timed out")

asyncio.run(main())
"""


def test_an_asyncio_producer_awaits_enqueue_outcome_and_cancel(stack: Stack) -> None:
    done = subprocess.run([sys.executable, "-c", ASYNC_PRODUCER, str(SLOW_TUNE)], cwd=ROOT,
                          env={**os.environ, **stack.env}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    revoked, images, error, timed_out = done.stdout.splitlines()
    assert revoked == "revoked" and json.loads(images) and error == "TaskRevokedError"
    assert timed_out == "timed out"
