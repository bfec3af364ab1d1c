"""The values job transitions take and give: leases, POSTs, next polls, endings,
registrations. The fields a transition writes on the job's record are named here and in
`worker.store.jobs` only; the flow says what happened."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from worker.astria.prompt import Prompt
from worker.records import JOB_HASH_FIELDS, Job, Outcome


class LeaseLost(Exception):
    """Our lease on a job ran out and another worker may hold it now: stop touching the job."""


@dataclass(frozen=True)
class Lease:
    job_id: str
    owner: str


class Moved(StrEnum):
    """What a transition of a job we hold did (the replies of `JobStore.record_posts` and
    `record_prompts`); LOST never leaves the store: the other verbs raise LeaseLost."""

    OK = "ok"  #: done as asked
    WAITING = "waiting"  #: the prompt is recorded; the job waits for its images
    REVOKED = "revoked"  #: cancelled meanwhile: the job lets go (send nothing)
    DELETE = "delete"  #: cancelled meanwhile, and its prompt's DELETE is due
    NOT_DURABLE = "not_durable"  #: the POST's record did not reach the replicas: do not send it
    LOST = "lost"  #: the lease was not ours


class Registered(StrEnum):
    """What `Registrations.register` did (register.lua)."""

    NEW = "new"  #: queued
    EXISTS = "exists"  #: a redelivered message: nothing changed
    REVOKED = "revoked"  #: cancelled before it arrived
    FOLLOWER = "follower"  #: follows the job with the same idempotency_key
    TOO_MANY = "too_many"  #: that key has IDEMPOTENCY_MAX_FOLLOWERS followers: nothing stored
    RETRY = "retry"  #: the key's leader changed under us (never leaves the store)
    NOT_MEMBER = "not_member"  #: its batch_id names a batch it is not a member of: nothing stored


class CallbackTaken(StrEnum):
    """What a callback did to its job (callback.lua)."""

    QUEUED = "queued"  #: due for its poll (at once, or CALLBACK_SPACING after the last one)
    HELD = "held"  #: a worker holds the job: due when it lets go
    IGNORED = "ignored"  #: the job waits for no such prompt


class Delivery(StrEnum):
    """What one delivery attempt of a webhook came to (`WebhookStore.done`)."""

    DELIVERED = "delivered"  #: the destination answered 2xx: done
    RETRY = "retry"  #: failed for now: again at its next time
    DEAD = "dead"  #: refused, gone, or out of retries: a dead letter


@dataclass(frozen=True)
class Registration:
    """What `Registrations.register` did, and the leader of a follower."""

    kind: Registered
    leader: str | None = None


@dataclass(frozen=True)
class Posting:
    """A POST about to be sent, and the record of it written first (`JobStore.record_posts`):
    where it goes, and when it was decided by Redis's clock (which every host shares), so that
    a lost answer can look for its prompt instead of paying for another."""

    job: Job  #: the job as it was before this POST
    tune_id: int
    text: str
    rerouted: bool
    at: float

    def fields(self) -> dict[str, Any]:
        job = self.job
        return {"pending_post": self.at, "gave_up_at": 0, "post_tune_id": self.tune_id,
                "post_text": self.text, "post_rerouted": self.rerouted,
                "post_attempts": job.post_attempts + 1,
                "first_post_at": job.first_post_at or self.at,
                "retry_attempt": job.retry_attempt + 1, "retry_since": job.retry_since or self.at,
                "list_before": 0, "list_oldest": 0.0}

    def recorded(self) -> Job:
        """The job as its record reads once this POST is recorded."""
        return replace(self.job, **self.fields())


@dataclass(frozen=True)
class NextPoll:
    """A waiting job to look at again at `at` (`JobStore.schedule_polls`); `done`, its prompts
    known to be done now, when this look found more of them; `deadline`, its new deadline when
    it moved (its tune was still training)."""

    lease: Lease
    job: Job
    at: float
    done: list[Prompt] | None = None
    deadline: float | None = None


class Noted(StrEnum):
    """What an ending records on the job besides its outcome (`Ending.noted`), for a redrive."""

    NOTHING = ""
    NOT_CREATED = "not_created"  #: the last POST is known to have created nothing
    AMBIGUOUS = "ambiguous"  #: one more POST went unanswered and no prompt of it showed
    STEP_FAILED = "step_failed"  #: one more unexpected failure of a step in a row


@dataclass(frozen=True)
class Ending:
    """A job's outcome to decide (`JobStore.finish`)."""

    lease: Lease
    job: Job
    outcome: Outcome
    seconds: float | None = None  #: Astria's generation time, on a success
    cost_mc: int | None = None
    noted: Noted = Noted.NOTHING

    def fields(self) -> dict[str, Any]:
        """What `noted` sets on the job before its outcome is decided."""
        job = self.job
        return {Noted.NOTHING: {}, Noted.NOT_CREATED: {"pending_post": 0},
                Noted.AMBIGUOUS: {"ambiguous_posts": job.ambiguous_posts + 1},
                Noted.STEP_FAILED: {"step_failures": job.step_failures + 1}}[self.noted]


@dataclass(frozen=True)
class Decided:
    """A job's outcome as recorded: ours, or an earlier decision (`new` False)."""

    outcome: Outcome
    new: bool


def job_fields(fields: Mapping[str, Any]) -> list[str]:
    """A job record's fields as HSET arguments (name, value, ...), booleans as 1/0. A name that
    is not a field of the Job record is refused: every field written is one `Job` reads."""
    if unknown := set(fields) - JOB_HASH_FIELDS:
        raise TypeError(f"not fields of the job record: {sorted(unknown)}")
    out: list[str] = []
    for name, value in fields.items():
        out += [name, str(int(value)) if isinstance(value, bool) else str(value)]
    return out


def event(kind: str, **data: Any) -> str:
    """A job's event as its stream holds it (`Keys.events`): JSON with its `type` and `at`;
    false values are left out."""
    return json.dumps({"type": kind, "at": time.time(), **{k: v for k, v in data.items() if v}})
