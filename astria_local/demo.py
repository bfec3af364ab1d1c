"""The main job, end to end: a worker, a handful of sample specs, their outcomes as they finish.

With no REDIS_URL it starts a throwaway Redis; with no ASTRIA_API_KEY it starts the built-in
simulator. Against the real Astria, ASTRIA_DEMO_TUNES names your tunes, for example
`checkpoint=123,lora=456,faceid=789` (use `branch=fast` tunes: they are free).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from celery.result import AsyncResult

from astria_local.redis_server import ThrowawayRedis
from astria_local.simulator import AstriaSimulator, SimConfig
from worker.broker.app import app
from worker.constants import SUBMIT_TASK
from worker.errors import ConfigError, InvalidSpec
from worker.producer import enqueue
from worker.runtime import runtime
from worker.settings import get_settings

#: Tells one step of the demo: its text for people, its data for --json.
Say = Callable[[str, dict[str, Any]], None]
SIM_TUNES = {"checkpoint": 1001, "lora": 1002, "faceid": 1003}


def _tunes_from_env() -> dict[str, int]:
    raw = os.environ.get("ASTRIA_DEMO_TUNES", "")
    try:
        tunes = {k.strip(): int(v) for k, v in (p.split("=") for p in raw.split(",") if p)}
    except ValueError:
        tunes = {}
    if not tunes:
        raise ConfigError(
            "ASTRIA_DEMO_TUNES: with ASTRIA_API_KEY set the demo runs against the real Astria and "
            "needs your tunes, e.g. ASTRIA_DEMO_TUNES=checkpoint=123,lora=456,faceid=789"
        )
    return tunes


def sample_specs(tunes: dict[str, int]) -> list[tuple[str, dict[str, Any]]]:
    specs = []
    if "checkpoint" in tunes:
        specs.append(("checkpoint tune", {"tune_id": tunes["checkpoint"],
                                          "text": "a portrait of ohwx man, studio light",
                                          "num_images": 2}))
    if "lora" in tunes:
        specs.append(("SDXL LoRA tune (re-routed)", {
            "tune_id": tunes["lora"], "text": "a painting of ohwx woman in the style of Van Gogh",
            "negative_prompt": "old, blemish", "super_resolution": True, "face_correct": True,
            "lora_strength": 0.83,
        }))
    if "faceid" in tunes:
        specs.append(("FaceID tune (re-routed)", {"tune_id": tunes["faceid"],
                                                  "text": "ohwx man as an astronaut"}))
    specs.append(("invalid spec", {"tune_id": tunes.get("checkpoint", 1), "text": "  ",
                                   "num_images": 12, "hires_fix": True}))
    return specs


def _describe(name: str, result: AsyncResult, elapsed: float) -> str:
    if result.successful():
        out = result.result
        where = f"tune {out['tune_id']}" + (
            f" (re-routed from {out['requested_tune_id']})" if out["rerouted"] else ""
        )
        return (f"OK   {name}: prompt {out['prompt_id']} on {where}, {len(out['images'])} "
                f"image(s) in {elapsed:.1f}s\n       text: {out['text']}\n       first image: "
                f"{out['images'][0]}")
    error = result.result
    return f"FAIL {name}: {type(error).__name__}: {error} ({elapsed:.1f}s)"


def _print(text: str, data: dict[str, Any]) -> None:
    print(text, flush=True)


def run_demo(timeout: float = 300.0, say: Say = _print) -> int:
    """Run the demo; `say(text, data)` tells each step (the CLI's --json prints `data`)."""
    with ExitStack() as stack:
        if not os.environ.get("REDIS_URL"):
            redis = stack.enter_context(ThrowawayRedis())
            os.environ["REDIS_URL"] = redis.url
            say(f"REDIS_URL not set: started a throwaway Redis at {redis.url}",
                {"event": "redis", "url": redis.url})
        if os.environ.get("ASTRIA_API_KEY"):
            tunes = _tunes_from_env()
            base = os.environ.get("ASTRIA_BASE_URL", "https://api.astria.ai")
            say(f"ASTRIA_API_KEY set: using {base}", {"event": "astria", "url": base})
        else:
            key = secrets.token_hex(8)
            sim = stack.enter_context(AstriaSimulator(SimConfig(
                api_key=key, generation_seconds=3.0, pti_tunes={SIM_TUNES["lora"]},
                faceid_tunes={SIM_TUNES["faceid"]},
            )))
            os.environ.update(ASTRIA_API_KEY=key, ASTRIA_BASE_URL=sim.url)
            os.environ.setdefault("ASTRIA_FIRST_POLL_SECONDS", "2")
            os.environ.setdefault("ASTRIA_POLL_INTERVAL", "1")
            tunes = SIM_TUNES
            say(f"ASTRIA_API_KEY not set: started the Astria simulator at {sim.url}",
                {"event": "simulator", "url": sim.url})
        if not os.environ.get("STORAGE_URL"):
            copies = stack.enter_context(tempfile.TemporaryDirectory(prefix="astria-copies-"))
            os.environ["STORAGE_URL"] = f"file://{copies}"
            say(f"STORAGE_URL not set: durable copies of the images go to {copies}",
                {"event": "storage", "path": copies})
        get_settings.cache_clear()
        runtime.cache_clear()
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-q", "-A", "worker", "worker", "-c", "2",
             "--loglevel", "WARNING", "--without-mingle", "--without-gossip"],
            env=os.environ.copy(),
        )
        stack.callback(_stop, worker)

        started = time.monotonic()
        pending: dict[str, tuple[str, AsyncResult]] = {}
        for name, spec in sample_specs(tunes):
            try:
                job_id = enqueue(spec)
            except InvalidSpec as exc:
                say(f"enqueue() refused the {name} at once: {exc}\n       sending it by name "
                    "anyway, as a producer in another language would",
                    {"event": "refused", "name": name, "error": str(exc)})
                job_id = app.send_task(SUBMIT_TASK, kwargs={"spec": spec}).id
            say(f"enqueued {name}: job {job_id}", {"event": "enqueued", "name": name,
                                                   "job_id": job_id})
            pending[job_id] = (name, AsyncResult(job_id, app=app))

        failures, succeeded = 0, []
        while pending and time.monotonic() - started < timeout:
            if worker.poll() is not None:
                say(f"the worker exited with code {worker.returncode}",
                    {"event": "worker_exited", "code": worker.returncode})
                return 1
            for job_id, (name, result) in list(pending.items()):
                if result.ready():
                    elapsed = time.monotonic() - started
                    say(_describe(name, result, elapsed),
                        {"event": "outcome", "name": name, "job_id": job_id,
                         "state": result.state, "seconds": round(elapsed, 1),
                         **({"outcome": result.result} if result.successful() else
                            {"error": f"{type(result.result).__name__}: {result.result}"})})
                    failures += not result.successful() and name != "invalid spec"
                    if result.successful():
                        succeeded.append(job_id)
                    del pending[job_id]
            time.sleep(0.2)
        for name, _ in pending.values():
            say(f"TIMEOUT {name}: no outcome within {timeout:.0f}s",
                {"event": "timeout", "name": name})
        return 1 if pending or failures or not _copies_stored(succeeded, 60.0, say) else 0


def _copies_stored(job_ids: list[str], timeout: float, say: Say) -> bool:
    """Wait for the succeeded jobs' durable copies (STORAGE_URL) and show where they are."""
    deadline = time.monotonic() + timeout
    jobs = runtime().jobs
    while time.monotonic() < deadline:
        stored = {job_id: jobs.load(job_id).stored for job_id in job_ids}
        if all(stored.values()):
            for job_id, raw in stored.items():
                for copy in json.loads(raw):
                    say(f"STORED job {job_id}: {copy['url']} ({copy['bytes']} bytes, "
                        f"sha256 {copy['sha256'][:16]}...)",
                        {"event": "stored", "job_id": job_id, **copy})
            return True
        time.sleep(0.2)
    say(f"TIMEOUT copies: not all stored within {timeout:.0f}s", {"event": "timeout",
                                                                   "name": "copies"})
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
