"""The simulated Astria account: its configuration (`SimConfig`), prompts, counters and
account rate limit."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from astria_local.sim_limit import AccountLimit, Counter

USER_ERROR_MARKER = "SIMULATE_USER_ERROR"


@dataclass
class SimConfig:
    """Behaviour of the simulator; fault knobs are probabilities per request (0..1)."""

    api_key: str = "sim-key"
    generation_seconds: float = 2.0
    #: Per-tune generation time, overriding generation_seconds for those tunes.
    generation_seconds_by_tune: dict[int, float] = field(default_factory=dict)
    pti_tunes: set[int] = field(default_factory=set)
    faceid_tunes: set[int] = field(default_factory=set)
    #: Flux LoRA tunes: `422 model_type=lora`, to be posted to the Flux base with <lora:ID:W>.
    flux_tunes: set[int] = field(default_factory=set)
    #: Tunes whose POST answers a list of this many prompts (partner models do).
    list_answer_tunes: dict[int, int] = field(default_factory=dict)
    #: Tunes still training when the simulator starts: seconds until each one's training ends
    #: (its prompts start generating then; GET /tunes/:id says `trained_at` null until then).
    training_tunes: dict[int, float] = field(default_factory=dict)
    #: Tunes that have expired: GET /tunes/:id says so, and their prompts never finish.
    expired_tunes: set[int] = field(default_factory=set)
    #: The size of each image served at an image URL (KiB).
    image_kib: int = 16
    sdxl_base_tune_id: int = 666678
    faceid_base_tune_id: int = 690204
    flux_base_tune_id: int = 1504944
    fault_429: float = 0.0
    fault_5xx: float = 0.0
    #: The status of fault_5xx's answers (None: 500, 502 or 503 at random).
    fault_5xx_status: int | None = None
    #: Which requests the random faults (429, 5xx, slow) hit: "ALL", or one method ("POST").
    fault_methods: str = "ALL"
    fault_504_after_create: float = 0.0
    fault_garbage: float = 0.0
    fault_slow: float = 0.0
    slow_seconds: float = 1.0
    #: What a slow answer ends with: None for the real answer, else this status (a POST answered
    #: 500, 502 or 504 has created its prompt first, as Astria's 504 "would probably have").
    slow_status: int | None = None
    #: Retry-After (seconds) sent with the random 429s of fault_429 (None: no header).
    retry_after: float | None = 0.2
    #: Every request takes this long (seconds) before its answer, +/- latency_jitter of it.
    latency_seconds: float = 0.0
    latency_jitter: float = 0.5
    #: Account rate limit: requests per second (0: none), counted as `rate_limit_counter` says
    #: (see sim_limit.AccountLimit; rate_limit_burst is the bucket's). Over it: 429.
    rate_limit: float = 0.0
    rate_limit_burst: float | None = None
    rate_limit_counter: Counter = "bucket"
    #: Which requests the account limit counts: "POST" (creating prompts) or "ALL".
    rate_limit_methods: str = "ALL"
    #: Whether its 429s carry Retry-After (whole seconds until the next token, at least 1).
    rate_limit_retry_after: bool = True
    rng_seed: int | None = None


def iso(timestamp: float) -> str:
    return (datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"))


def now_iso() -> str:
    return iso(time.time())


class Account:
    """The simulated account: its prompts, counters and rate limit, behind one lock."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.prompts: dict[int, dict[str, Any]] = {}
        self.ready_at: dict[int, float] = {}
        self.trained_at: dict[int, str] = {}
        self.next_id = 1000
        self.counters: dict[str, int] = {}
        self.inflight = 0  #: requests received and not answered yet
        self.rng = random.Random(config.rng_seed)
        self.pending_callbacks: list[tuple[float, int]] = []
        self.wakeup = threading.Condition(self.lock)
        self.limit = AccountLimit(config.rate_limit, config.rate_limit_counter,
                                  config.rate_limit_burst)
        self.started = time.time()

    def tune_trained_at(self, tune_id: int) -> float:
        """When the tune's training ends (or ended: the simulator's start, for most)."""
        return self.started + self.config.training_tunes.get(tune_id, 0.0)

    def tune(self, tune_id: int) -> dict[str, Any]:
        """GET /tunes/:id: Astria's tune object, as far as the queue reads it."""
        trained = self.tune_trained_at(tune_id)
        expired = tune_id in self.config.expired_tunes
        return {"id": tune_id, "title": f"tune {tune_id}",
                "trained_at": iso(trained) if trained <= time.time() else None,
                "expires_at": iso(self.started - 1 if expired else self.started + 30 * 86400)}

    def take_token(self) -> float | None:
        """The account limit: None when the request may pass, else seconds until it would (a
        limit changed through /_sim/config starts afresh)."""
        cfg = self.config
        shape = (cfg.rate_limit, cfg.rate_limit_counter, cfg.rate_limit_burst)
        if (self.limit.limit, self.limit.counter, self.limit.burst) != shape:
            self.limit = AccountLimit(*shape)
        return self.limit.admit(time.monotonic())

    def latency(self) -> float:
        cfg = self.config
        if cfg.latency_seconds <= 0:
            return 0.0
        spread = cfg.latency_seconds * cfg.latency_jitter
        return max(0.0, self.rng.uniform(cfg.latency_seconds - spread,
                                         cfg.latency_seconds + spread))

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def roll(self, probability: float) -> bool:
        return probability > 0 and self.rng.random() < probability

    def view(self, prompt_id: int, base_url: str) -> dict[str, Any]:
        """The prompt as Astria shows it now: images or user_error once generation time passed."""
        prompt = dict(self.prompts[prompt_id])
        if time.monotonic() >= self.ready_at[prompt_id]:
            prompt["trained_at"] = prompt["updated_at"] = self.trained_at[prompt_id]
            if USER_ERROR_MARKER in prompt["text"]:
                prompt["user_error"] = "Simulated failure: the prompt could not be generated"
            else:
                prompt["images"] = [
                    f"{base_url}/_sim/images/{prompt_id}/{i}.jpg"
                    for i in range(int(prompt.get("num_images") or 1))
                ]
        return prompt
