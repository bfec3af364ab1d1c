"""Every name this project gives to something in Redis or the broker, in one place.

Task and queue names are part of the contract with producers. Redis keys are built here and only
here; Lua scripts receive them as declared KEYS (see `worker.store.scripts`). All keys start with
KEY_PREFIX, except Celery's own result keys, whose form Celery fixes.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.records import Lane, RequestKind

#: The public task: producers send it by name with `kwargs={"spec": {...}}`.
SUBMIT_TASK = "astria.submit_prompt"
#: The one broker queue (a Redis list) both producers and workers use.
QUEUE = "celery"  #: the default BROKER_QUEUE
#: Celery's Redis result backend keeps a task's result document under this prefix + task id.
RESULT_KEY_PREFIX = "celery-task-meta-"


@dataclass(frozen=True)
class Keys:
    """The Redis keys of one deployment (one KEY_PREFIX)."""

    prefix: str

    # --- one per job ------------------------------------------------------------------------
    def job(self, job_id: str) -> str:
        """Hash: the job's durable record (`worker.records.Job`)."""
        return f"{self.prefix}:job:{job_id}"

    def followers(self, job_id: str) -> str:
        """Set: jobs that share this job's prompt (same idempotency_key)."""
        return f"{self.prefix}:followers:{job_id}"

    def result(self, job_id: str) -> str:
        """String: Celery's result document for the job."""
        return RESULT_KEY_PREFIX + job_id

    def events(self, job_id: str) -> str:
        """Stream: the job's events (queued, posted, waiting, retrying, ..., its end), each
        `event` = JSON with its `type` (lua/lib/common.lua add_event)."""
        return f"{self.job(job_id)}:events"

    @property
    def events_channel(self) -> str:
        """Pub/sub: the id of each job that has a new event (the HTTP API's streams)."""
        return f"{self.prefix}:events"

    def idempotency(self, tenant: str, key: str) -> str:
        """String: the leader job of a tenant's idempotency key (a key is the tenant's own:
        another tenant's job with the same key is a job of its own)."""
        return f"{self.prefix}:idem:{tenant}:{key}"

    def token(self, token: str) -> str:
        """String: the job a callback token belongs to."""
        return f"{self.prefix}:token:{token}"

    def route(self, tune_id: int) -> str:
        """String: 'pti', 'faceid' or 'flux' once a 422 taught us that the tune needs its base
        tune."""
        return f"{self.prefix}:route:{tune_id}"

    def tune(self, tune_id: int) -> str:
        """String: the tune as last read (GET /tunes/:id, JSON), kept while it is fresh: whether
        its training has ended and when it expires (lib: worker.store.learnt)."""
        return f"{self.prefix}:tune:{tune_id}"

    def live(self, tenant: str) -> str:
        """Set: a tenant's jobs without an outcome (for `astria-queue cancel --tenant`)."""
        return f"{self.prefix}:live:{tenant}"

    def webhook(self, message_id: str) -> str:
        """Hash: one webhook to a producer, delivered until acknowledged or dead."""
        return f"{self.prefix}:webhook:{message_id}"

    def destination(self, destination: str) -> str:
        """Hash: a webhook destination's failures in a row and `held_until`; and, with
        `:inflight` appended, a sorted set of its webhooks in flight (id -> lease end)."""
        return f"{self.prefix}:dest:{destination}"

    def batch(self, batch_id: str) -> str:
        """Hash: a batch's tenant, size, callback, counts and `completed_at` (lua/lib/batch.lua);
        with `:members` appended, a set of its job ids; with `:events`, a stream of its events
        (each member decided, then `completed`)."""
        return f"{self.prefix}:batch:{batch_id}"

    def batch_members(self, batch_id: str) -> str:
        return f"{self.batch(batch_id)}:members"

    def batch_events(self, batch_id: str) -> str:
        return f"{self.batch(batch_id)}:events"

    # --- dispatch: what the next Astria request is for ----------------------------------------
    def ready(self, lane: Lane) -> str:
        """Sorted set (by lex): `tenant|seq|job id` of the lane's jobs waiting for their POST."""
        return f"{self.prefix}:ready:{lane}"

    def turns(self, lane: Lane) -> str:
        """Sorted set: tenant -> virtual time, for fair turns between a lane's tenants."""
        return f"{self.prefix}:turns:{lane}"

    @property
    def due_submit(self) -> str:
        """Sorted set: job -> when it rejoins its lane's queue (after a back-off)."""
        return f"{self.prefix}:due:submit"

    @property
    def due_poll(self) -> str:
        """Sorted set: job -> when it needs an Astria request other than a POST (poll, look for
        the prompt of an unanswered POST, delete), or when its lease ends."""
        return f"{self.prefix}:due:poll"

    @property
    def due_local(self) -> str:
        """Sorted set: job -> when it needs a step without any Astria request (expiry, a
        callback that arrived while the job was busy)."""
        return f"{self.prefix}:due:local"

    @property
    def queued(self) -> str:
        """Hash: job -> `lane|ready member`, for jobs whose prompt does not exist yet."""
        return f"{self.prefix}:queued"

    @property
    def expiry(self) -> str:
        """Sorted set: job -> the time by which it must be sent to Astria (expires_in)."""
        return f"{self.prefix}:expiry"

    @property
    def leases(self) -> str:
        """Hash: job -> `owner|until`: who works on the job and until when."""
        return f"{self.prefix}:leases"

    @property
    def inflight(self) -> str:
        """Hash: tenant -> prompts in flight at Astria (POST sent, no outcome yet)."""
        return f"{self.prefix}:inflight"

    @property
    def inflight_jobs(self) -> str:
        """Hash: job -> tenant, for the jobs counted in `inflight`."""
        return f"{self.prefix}:inflight_jobs"

    @property
    def dispatch(self) -> str:
        """Hash: lane credits and clocks of the fair dispatcher."""
        return f"{self.prefix}:dispatch"

    @property
    def wake(self) -> str:
        """Pub/sub channel: new work for the engines (a registration, a callback, a redrive)."""
        return f"{self.prefix}:wake"

    @property
    def limiter(self) -> str:
        """Hash: the adaptive rate limiter's state, per kind of request."""
        return f"{self.prefix}:limiter"

    def limiter_sent(self, kind: RequestKind) -> str:
        """List: when the requests of a kind whose answers passed Astria's limit were sent, for
        the last seconds (the limiter counts what passed by it: `lua/lib/limiter.lua`)."""
        return f"{self.prefix}:limiter:sent:{kind}"

    @property
    def revoked(self) -> str:
        """Sorted set: job -> when it was cancelled (also for jobs not registered yet)."""
        return f"{self.prefix}:revoked"

    # --- outcomes, learning, operations ---------------------------------------------------------
    @property
    def dead(self) -> str:
        """Sorted set: failed job -> when it failed (dead letters)."""
        return f"{self.prefix}:dead"

    @property
    def generation_seconds(self) -> str:
        """String: moving average of Astria's generation time."""
        return f"{self.prefix}:generation_seconds"

    @property
    def stats(self) -> str:
        """Hash: counters shared by every process."""
        return f"{self.prefix}:stats"

    @property
    def latency(self) -> str:
        """List: the last Astria request latencies (ms)."""
        return f"{self.prefix}:stats:latency"

    @property
    def job_latency(self) -> str:
        """List: `tenant|lane|seconds` of the last finished jobs (enqueue to outcome)."""
        return f"{self.prefix}:stats:job_latency"

    @property
    def webhooks_due(self) -> str:
        """Sorted set: webhook message -> when its next delivery attempt is due."""
        return f"{self.prefix}:webhooks:due"

    @property
    def copies_due(self) -> str:
        """Sorted set: succeeded jobs whose images are to be copied to STORAGE_URL, by when
        (granted ones: by their lease's end)."""
        return f"{self.prefix}:copies:due"

    @property
    def copies_dead(self) -> str:
        """Sorted set: jobs whose copies ran out of attempts, by when (`astria-queue copies`)."""
        return f"{self.prefix}:copies:dead"

    @property
    def webhooks_dead(self) -> str:
        """Sorted set: webhook message -> when its deliveries ran out."""
        return f"{self.prefix}:webhooks:dead"

    @property
    def engines(self) -> str:
        """Hash: engine id (`host:pid`) -> when it last beat (`worker.store.engines`)."""
        return f"{self.prefix}:engines"

    @property
    def engine_threads(self) -> str:
        """Hash: engine id -> its thread pools at its last beat, JSON {pool: [busy, size]}."""
        return f"{self.prefix}:engines:threads"

    @property
    def tenants(self) -> str:
        """Sorted set: tenant -> when it last registered a job (stats of idle tenants are
        pruned, `worker.store.housekeeping`)."""
        return f"{self.prefix}:tenants"

    @property
    def housekeeping(self) -> str:
        """String: held by the engine doing the pool's housekeeping, until it is due again."""
        return f"{self.prefix}:housekeeping"

    @property
    def dead_messages(self) -> str:
        """Stream: broker messages that could not be read, with their reason
        (`worker.broker.intake`)."""
        return f"{self.prefix}:dead:messages"

    def inline_image(self, job_id: str) -> str:
        """String: a job's `input_image_base64`, kept apart from its record until its prompt
        exists (then deleted)."""
        return f"{self.prefix}:inline:{job_id}"

    @property
    def processing(self) -> str:
        """Hash: the loss-proof transport's processing lists -> the queue they came from."""
        return f"{self.prefix}:processing"

    def processing_list(self, name: str) -> str:
        """List: messages one consumer moved off the queue; `name.alive` is its heartbeat."""
        return f"{self.prefix}:processing:{name}"


#: What each tenant and lane counts in the stats hash (`tenant_counter(...)|<what>`).
TENANT_COUNTS = ("enqueued", "SUCCESS", "FAILURE", "REVOKED", "cost_mc")


def tenant_counter(tenant: str, lane: str) -> str:
    """The stats hash's fields of one tenant and lane start with this (then `|` and one of
    TENANT_COUNTS); so do the job latency list's entries (then `|` and the seconds). The Lua
    scripts append the last part to what they are given."""
    return f"t|{tenant}|{lane}"


def read_tenant_counter(name: str) -> tuple[str, str, str] | None:
    """(tenant, lane, last part) of a `tenant_counter(...)|<last>` name; None for another."""
    parts = name.split("|")
    if len(parts) != 4 or parts[0] != "t":
        return None
    return parts[1], parts[2], parts[3]
