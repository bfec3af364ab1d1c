"""One settings object for the whole project, read from the environment (and an optional `.env`).

Every knob lives here so that a worker, the producer helper, the CLI and the simulator agree.
Validation happens once, at start-up: a bad variable fails fast with its own name in the message.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.errors import ConfigError


class Settings(BaseSettings):
    """Configuration; each field maps to the upper-case environment variable of the same name."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # Connections
    redis_url: str = Field("redis://127.0.0.1:6379/0", pattern=r"^(redis|rediss|unix)://")
    astria_api_key: SecretStr | None = None
    astria_base_url: str = Field("https://api.astria.ai", pattern=r"^https?://[^\s/]+")
    astria_workspace_id: str | None = None

    # Re-routing of LoRA / FaceID tunes (the SDXL quirk)
    astria_sdxl_base_tune_id: int = Field(666678, gt=0)
    astria_faceid_base_tune_id: int = Field(690204, gt=0)
    astria_lora_strength: float = Field(0.8, gt=0, le=2)

    # HTTP and the retry budget (tenacity)
    astria_connect_timeout: float = Field(5.0, gt=0)
    astria_read_timeout: float = Field(45.0, gt=0)
    astria_retry_attempts: int = Field(6, ge=1)
    astria_retry_max_seconds: float = Field(120.0, gt=0)
    astria_retry_initial_delay: float = Field(1.0, ge=0)
    astria_retry_max_delay: float = Field(30.0, ge=0)
    #: After a POST whose fate is unknown (504, read timeout, dropped connection, worker death),
    #: a prompt may still appear in Astria's listing for this long; no re-POST before it passes.
    astria_ambiguous_grace_seconds: float = Field(35.0, ge=0)

    # Callbacks: when set, Astria calls this receiver URL (`astria-callbacks`) with a per-job token
    astria_callback_url: str | None = Field(None, pattern=r"^https?://[^\s]+$")
    #: With callbacks on, polling is only a fallback: this long after the expected finish.
    astria_callback_fallback_seconds: float = Field(30.0, ge=0)

    # Waiting for images (first poll near the generation time learnt from earlier jobs)
    astria_first_poll_seconds: float = Field(10.0, ge=0)
    astria_poll_interval: float = Field(5.0, gt=0)
    astria_poll_backoff: float = Field(1.5, ge=1)
    astria_poll_max_interval: float = Field(30.0, gt=0)
    astria_job_deadline_seconds: float = Field(900.0, gt=0)

    # One global rate limit for every worker process and host
    astria_rate_limit_per_second: float = Field(10.0, gt=0)
    astria_rate_limit_burst: float = Field(20.0, ge=1)
    #: Share of the bucket polls may not touch, so that polling never starves submissions.
    astria_rate_limit_submit_reserve: float = Field(0.25, ge=0, lt=1)

    # Crash safety
    #: How long a worker owns a job before another may take it over; it is renewed while working.
    job_lease_seconds: float = Field(90.0, gt=0)
    #: Broker redelivery of unacknowledged messages; must exceed any single task's run time.
    broker_visibility_timeout: float = Field(600.0, gt=0)
    #: How often each worker looks for due jobs (polls, retries, take-overs).
    scheduler_tick_seconds: float = Field(0.5, gt=0)
    #: Most due jobs one `astria.advance` message carries (they are stepped one after another).
    scheduler_batch_size: int = Field(10, ge=1, le=500)
    job_retention_seconds: int = Field(7 * 24 * 3600, gt=0)
    key_prefix: str = Field("astria", pattern=r"^[A-Za-z0-9_.:-]+$")
    #: Celery task events from the start; Flower switches them on by itself when it connects.
    worker_task_events: bool = False
    log_format: Literal["text", "json"] = "text"

    @model_validator(mode="after")
    def _check_relations(self) -> Settings:
        if self.astria_retry_max_delay < self.astria_retry_initial_delay:
            raise ValueError("ASTRIA_RETRY_MAX_DELAY must be >= ASTRIA_RETRY_INITIAL_DELAY")
        if self.job_lease_seconds <= self.astria_read_timeout:
            raise ValueError("JOB_LEASE_SECONDS must exceed ASTRIA_READ_TIMEOUT")
        if self.broker_visibility_timeout <= self.task_time_limit:
            raise ValueError("BROKER_VISIBILITY_TIMEOUT must exceed the task time limit")
        return self

    @property
    def task_time_limit(self) -> float:
        """Hard limit of one task run: the whole retry budget plus one request, with margin."""
        return self.astria_retry_max_seconds + self.astria_read_timeout + 10

    def api_key(self) -> str:
        """The Astria key, or a ConfigError naming the variable; never logged or stored."""
        if self.astria_api_key is None or not self.astria_api_key.get_secret_value().strip():
            raise ConfigError("ASTRIA_API_KEY: required by the worker (not set)")
        return self.astria_api_key.get_secret_value().strip()


def load_settings() -> Settings:
    """Read and validate the environment; a ConfigError names each bad variable and its rule."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = "_".join(str(part) for part in err["loc"]).upper() or "settings"
            problems.append(f"{name}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
