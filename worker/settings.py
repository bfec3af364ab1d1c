"""One settings object for the whole project, read from the environment (and an optional `.env`).

Every knob lives here so that a worker, the producer helper, the CLI and the simulator agree.
Validation happens once, at start-up: a bad variable fails fast with its own name in the message.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.constants import QUEUE
from worker.errors import ConfigError
from worker.records import Lane
from worker.tenants import STORAGE_URL_PATTERN, Tenants, load_tenants, webhook_secret_rule

#: Seconds the ambiguous-POST grace exceeds the read timeout by, at least.
GRACE_MARGIN = 10.0


class Settings(BaseSettings):
    """Configuration; each field maps to the upper-case environment variable of the same name."""

    #: An empty variable (compose's `${X:-}`) is an unset one.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True,
                                      env_ignore_empty=True)

    # Connections
    #: kombu's URL forms: redis://, rediss://, unix://, or sentinel://h1:26379;sentinel://h2:26379/0
    redis_url: str = Field("redis://127.0.0.1:6379/0", pattern=r"^(redis|rediss|unix|sentinel)://")
    #: With a sentinel:// REDIS_URL: the name of the master the Sentinels watch.
    redis_sentinel_master: str | None = None
    #: The broker list producers push onto. One deployment per Redis DB: a team's own Celery on
    #: the same DB and queue would take our messages (and we theirs), so give either its own DB
    #: or its own name here.
    broker_queue: str = Field(QUEUE, pattern=r"^[A-Za-z0-9_.:-]{1,100}$")
    #: Replicas a write must reach (Redis WAIT) before a POST is sent or a message acknowledged;
    #: default 1 with Sentinel, else 0. See README "Redis Sentinel".
    redis_wait_replicas: int | None = Field(None, ge=0)
    redis_wait_timeout_ms: int = Field(500, ge=1)
    astria_api_key: SecretStr | None = None
    astria_base_url: str = Field("https://api.astria.ai", pattern=r"^https?://[^\s/]+")
    astria_workspace_id: str | None = None

    # Re-routing of LoRA / FaceID tunes (the SDXL quirk)
    astria_sdxl_base_tune_id: int = Field(666678, gt=0)
    astria_faceid_base_tune_id: int = Field(690204, gt=0)
    #: Where Flux LoRA tunes go (`422 model_type=lora`), with `<lora:ID:STRENGTH>`; Flux takes
    #: several LoRAs in one prompt.
    astria_flux_base_tune_id: int = Field(1504944, gt=0)
    astria_lora_strength: float = Field(0.8, gt=0, le=2)

    # HTTP and the retry budget (tenacity)
    astria_connect_timeout: float = Field(5.0, gt=0)
    #: How long a POST's answer is waited for (Astria gives up at 30 s and answers 504).
    astria_read_timeout: float = Field(45.0, gt=0)
    #: How long any other request's answer is waited for: a slow poll or listing is simply asked
    #: again, sooner than Astria's own 30 s would tell.
    astria_poll_read_timeout: float = Field(10.0, gt=0)
    astria_retry_attempts: int = Field(6, ge=1)
    astria_retry_max_seconds: float = Field(120.0, gt=0)
    astria_retry_initial_delay: float = Field(1.0, ge=0)
    astria_retry_max_delay: float = Field(30.0, ge=0)
    #: A cancelled job's DELETE goes again after each 429 (none spends the retry budget), for
    #: at most this long after the cancellation; then it is given up (`delete_error`).
    astria_delete_for_seconds: float = Field(86400.0, gt=0)
    #: After a POST whose fate is unknown (500/502/504, read timeout, dropped connection, worker
    #: death), a prompt may still appear in Astria's listing: no re-POST before this long after
    #: the answer was given up (Astria: wait 60 s after a 504). At least ASTRIA_READ_TIMEOUT +
    #: GRACE_MARGIN, so that a request still running at Astria has ended.
    astria_ambiguous_grace_seconds: float = Field(60.0, gt=0)
    #: POSTs of one job whose fate stayed unknown, after which it is not POSTed again: it fails
    #: (AstriaUnavailable, a dead letter) rather than risk paying for a third prompt.
    astria_max_ambiguous_posts: int = Field(3, ge=1)

    # Callbacks: when set, Astria calls this receiver URL (`astria-callbacks`) with a per-job token
    astria_callback_url: str | None = Field(None, pattern=r"^https?://[^\s]+$")
    #: With callbacks on, polling is only a fallback: this long after the expected finish.
    astria_callback_fallback_seconds: float = Field(30.0, ge=0)

    # Waiting for images (first poll near the generation time learnt from earlier jobs)
    astria_first_poll_seconds: float = Field(5.0, ge=0)
    #: Before any generation time is learnt, interactive jobs look this soon, then backing off.
    astria_cold_poll_seconds: float = Field(0.5, gt=0)
    astria_poll_interval: float = Field(5.0, gt=0)
    astria_poll_backoff: float = Field(1.5, ge=1)
    astria_poll_max_interval: float = Field(30.0, gt=0)
    #: How long Astria may take, from the prompt's creation to its images.
    astria_job_deadline_seconds: float = Field(900.0, gt=0)
    #: A prompt on a tune still training waits for it (its deadline starts at the tune's
    #: `trained_at`), looking at the tune this often, for at most this long after its POST.
    astria_tune_recheck_seconds: float = Field(60.0, gt=0)
    astria_tune_training_max_seconds: float = Field(6 * 3600.0, gt=0)

    # One rate limit per kind of request (creating prompts; everything else), shared by every
    # worker process and host, adapting to Astria's own limit below this ceiling.
    astria_rate_limit_per_second: float = Field(10.0, gt=0)
    astria_rate_limit_burst: float = Field(20.0, ge=1)

    # Who gets the next POST: lanes (interactive, normal, batch) and fair turns between tenants
    #: Least share of POSTs a lower lane gets while higher lanes have a backlog.
    lane_min_share: dict[Lane, float] = Field(
        default_factory=lambda: {Lane.NORMAL: 0.2, Lane.BATCH: 0.1})
    #: A tenant's weight in its lane's turns (default 1): {"app": 3}
    tenant_weights: dict[str, float] = Field(default_factory=dict)
    #: Most prompts a tenant may have in flight at Astria: {"bulk": 200}
    tenant_max_in_flight: dict[str, int] = Field(default_factory=dict)
    #: The same for tenants not named there (0: no cap).
    tenant_default_max_in_flight: int = Field(0, ge=0)

    #: Tenants with a label of their own in the metrics without TENANTS_FILE (the busiest);
    #: the others are counted as `other`, so that a producer cannot grow the series for ever.
    metrics_max_tenants: int = Field(50, ge=1, le=1000)

    # The HTTP API for producers (`astria-queue api`): internal, its own process and port
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    #: A request body past this is refused (413): a spec with its inline image fits.
    api_max_body_bytes: int = Field(6 * 1024 * 1024, ge=1024)
    #: Each token's requests: this many a second on average, in bursts of API_RATE_BURST (429).
    api_rate_per_second: float = Field(50.0, gt=0)
    api_rate_burst: int = Field(100, ge=1)

    # Webhooks to producers (a spec's `callback`), signed per standardwebhooks.com
    #: `whsec_` + base64 of the signing key.
    webhook_secret: SecretStr | None = None
    #: The tenant registry (JSON, or YAML by its suffix): see worker/tenants.py and the README.
    tenants_file: Path | None = None
    _tenants: Tenants = PrivateAttr(default_factory=Tenants)
    #: First retry within this many seconds (random), then twice as long each time...
    webhook_first_retry_seconds: float = Field(8.0, gt=0)
    #: ...up to this interval between attempts...
    webhook_max_retry_interval: float = Field(3600.0, gt=0)
    #: ...for this long after the first attempt; then the webhook is a dead letter.
    webhook_retry_for_seconds: float = Field(86400.0, gt=0)
    #: An attempt's total deadline: connecting, sending and the answer, however it trickles.
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=300)
    #: Threads of each worker host for webhooks, apart from Astria's requests.
    webhook_concurrency: int = Field(16, ge=1, le=1024)
    #: Durable copies of each succeeded job's images (worker.flow.copies): `file:///dir` or
    #: `s3://bucket/prefix` (STORAGE_ENDPOINT_URL for any S3-compatible store; credentials from
    #: the standard AWS chain). Unset: none.
    storage_url: str | None = Field(None, pattern=STORAGE_URL_PATTERN)
    storage_endpoint_url: str | None = Field(None, pattern=r"^https?://")
    #: A copy's URL in `stored` (an S3 presigned GET) is valid this long (SigV4: 7 days at most).
    storage_url_ttl_seconds: int = Field(7 * 24 * 3600, ge=60, le=7 * 24 * 3600)
    #: Threads of each worker host for copies, apart from Astria's and the webhooks'.
    storage_concurrency: int = Field(8, ge=1, le=256)
    #: An image larger than this is not copied (the copy fails).
    storage_max_image_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    #: A job's copies are granted for this long: a dead worker's are taken up again then, and an
    #: attempt starts no image after two thirds of it (the rest is left to the next attempt).
    storage_lease_seconds: float = Field(90.0, ge=5)
    #: Attempts of a job's copy before it is a dead letter (`astria-queue copies`).
    storage_copy_attempts: int = Field(8, ge=1, le=100)
    #: Attempts in flight to one destination (scheme://host:port) at once, all hosts together.
    webhook_max_in_flight_per_destination: int = Field(4, ge=1, le=1024)
    #: Let webhooks reach loopback, private, link-local, ... addresses (development, tests).
    webhook_allow_private_addresses: bool = False

    # Each worker process
    #: HTTP requests (Astria and webhooks) one worker process keeps in flight at once.
    worker_http_concurrency: int = Field(512, ge=1, le=4096)

    # Crash safety
    #: How long a worker owns a job before another may take it over; it is renewed while working.
    job_lease_seconds: float = Field(90.0, gt=0)
    #: Broker redelivery of unacknowledged messages; must exceed any single task's run time.
    broker_visibility_timeout: float = Field(600.0, gt=0)
    #: Longest a worker's dispatcher sleeps before looking for due work again.
    scheduler_tick_seconds: float = Field(0.5, gt=0)
    job_retention_seconds: int = Field(7 * 24 * 3600, gt=0)
    #: Most jobs that wait on one idempotency key's prompt (their outcome is decided at once).
    idempotency_max_followers: int = Field(100, ge=1, le=100_000)
    #: Most members of one batch (enqueue_batch, POST /v1/batches).
    max_batch_size: int = Field(10_000, ge=1, le=100_000)
    #: Run on a Redis whose maxmemory-policy evicts keys (it would drop jobs, results and
    #: idempotency keys at will): refused at start unless this is true.
    redis_allow_eviction: bool = False
    key_prefix: str = Field("astria", pattern=r"^[A-Za-z0-9_.:-]+$")
    #: Celery task events from the start; Flower switches them on by itself when it connects.
    worker_task_events: bool = False
    # Traces: OpenTelemetry's own variables turn them on (worker.net.tracing); the SDK reads the
    # rest (OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER, ...) itself.
    otel_sdk_disabled: bool = False
    otel_traces_exporter: str = ""
    otel_exporter_otlp_endpoint: str = ""
    otel_exporter_otlp_traces_endpoint: str = ""

    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("lane_min_share")
    @classmethod
    def _shares(cls, value: dict[Lane, float]) -> dict[Lane, float]:
        if Lane.INTERACTIVE in value:
            raise ValueError("interactive is the highest lane and needs no minimum share")
        if any(not 0 <= share < 1 for share in value.values()):
            raise ValueError("each share must be in [0, 1)")
        return value

    @field_validator("tenant_weights")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        if any(weight <= 0 for weight in value.values()):
            raise ValueError("each weight must be > 0")
        return value

    @field_validator("tenant_max_in_flight")
    @classmethod
    def _caps(cls, value: dict[str, int]) -> dict[str, int]:
        if any(cap < 0 for cap in value.values()):
            raise ValueError("each cap must be >= 0 (0: no cap)")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            webhook_secret_rule(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _check_relations(self) -> Settings:
        if self.redis_url.startswith("sentinel://") and not self.redis_sentinel_master:
            raise ValueError("REDIS_SENTINEL_MASTER is required with a sentinel:// REDIS_URL")
        if self.astria_retry_max_delay < self.astria_retry_initial_delay:
            raise ValueError("ASTRIA_RETRY_MAX_DELAY must be >= ASTRIA_RETRY_INITIAL_DELAY")
        if self.job_lease_seconds <= self.astria_read_timeout:
            raise ValueError("JOB_LEASE_SECONDS must exceed ASTRIA_READ_TIMEOUT")
        if self.astria_ambiguous_grace_seconds < self.astria_read_timeout + GRACE_MARGIN:
            raise ValueError(f"ASTRIA_AMBIGUOUS_GRACE_SECONDS must be at least "
                             f"ASTRIA_READ_TIMEOUT + {GRACE_MARGIN:g}")
        if self.broker_visibility_timeout <= self.task_time_limit:
            raise ValueError("BROKER_VISIBILITY_TIMEOUT must exceed the task time limit")
        return self

    @property
    def task_time_limit(self) -> float:
        """Hard limit of one task run. The task only validates and registers a job in Redis (no
        Astria request), so this covers Redis' own retries during a restart, with margin."""
        return 30.0

    @property
    def webhook_lease_seconds(self) -> float:
        """A webhook granted for an attempt is not granted again before this: past its
        deadline, with a margin."""
        return self.webhook_timeout_seconds + 5.0

    @property
    def wait_replicas(self) -> int:
        if self.redis_wait_replicas is not None:
            return self.redis_wait_replicas
        return 1 if self.redis_url.startswith("sentinel://") else 0

    def api_key(self) -> str:
        """The Astria key, or a ConfigError naming the variable; never logged or stored."""
        if self.astria_api_key is None or not self.astria_api_key.get_secret_value().strip():
            raise ConfigError("ASTRIA_API_KEY: required by the worker (not set)")
        return self.astria_api_key.get_secret_value().strip()

    def model_post_init(self, context: Any) -> None:
        self._tenants = load_tenants(self.tenants_file)

    @property
    def tenants(self) -> Tenants:
        """The registry of TENANTS_FILE (empty without one: any tenant name)."""
        return self._tenants

    def turn_weights(self) -> dict[str, float]:
        """Each tenant's weight in its lane's turns: the file's, else TENANT_WEIGHTS."""
        return self._tenants.weights() if self._tenants.registered else self.tenant_weights

    def turn_caps(self) -> dict[str, int]:
        """Each tenant's cap of prompts in flight: the file's, else TENANT_MAX_IN_FLIGHT."""
        return self._tenants.caps() if self._tenants.registered else self.tenant_max_in_flight

    def storage_url_for(self, tenant: str) -> str | None:
        """Where a tenant's durable copies go: its own (TENANTS_FILE), else STORAGE_URL."""
        return self._tenants.storage_url(tenant) or self.storage_url

    @property
    def tracing_on(self) -> bool:
        """Whether OTEL_* asks for traces (an exporter other than none, or an OTLP endpoint)."""
        exporter = self.otel_traces_exporter.strip().lower()
        return not self.otel_sdk_disabled and exporter != "none" and bool(
            exporter or self.otel_exporter_otlp_endpoint
            or self.otel_exporter_otlp_traces_endpoint)

    @property
    def copies_on(self) -> bool:
        """Whether any job's images are copied (STORAGE_URL, or a tenant's storage_url)."""
        return bool(self.storage_url) or any(
            t.storage_url for t in self._tenants.named.values())

    def webhook_keys(self, tenant: str) -> list[str]:
        """The `whsec_...` secrets a tenant's webhooks are signed with, newest first: its own
        (TENANTS_FILE), else WEBHOOK_SECRET; [] when they cannot be signed (no secret, or a
        registry that does not name the tenant)."""
        if own := self._tenants.secrets(tenant):
            return own
        if self._tenants.registered and tenant not in self._tenants.named:
            return []
        return [self.webhook_secret.get_secret_value()] if self.webhook_secret else []


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
