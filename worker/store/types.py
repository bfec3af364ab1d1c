"""The values job transitions take and give: leases, endings, registrations."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from worker.records import JOB_HASH_FIELDS, Job, Outcome


class LeaseLost(Exception):
    """Our lease on a job ran out and another worker may hold it now: stop touching the job."""


@dataclass(frozen=True)
class Lease:
    job_id: str
    owner: str


class Moved(StrEnum):
    """What a transition of a job we hold did (the replies of mark_posting, created, requeue,
    schedule); LOST never leaves the store: it raises LeaseLost."""

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


class CallbackTaken(StrEnum):
    """What a callback did to its job (callback.lua)."""

    QUEUED = "queued"  #: due for its poll (at once, or CALLBACK_SPACING after the last one)
    HELD = "held"  #: a worker holds the job: due when it lets go
    IGNORED = "ignored"  #: the job waits for no such prompt


@dataclass(frozen=True)
class Registration:
    """What `Registrations.register` did, and the leader of a follower."""

    kind: Registered
    leader: str | None = None


@dataclass(frozen=True)
class Ending:
    """A job's outcome to decide (`JobStore.finish_many`)."""

    lease: Lease
    job: Job
    outcome: Outcome
    seconds: float | None = None  #: Astria's generation time, on a success
    cost_mc: int | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)  #: set on the job first


@dataclass(frozen=True)
class Later:
    """A job to look at again at `at` (`JobStore.schedule_many`)."""

    lease: Lease
    job: Job
    at: float
    fields: Mapping[str, Any] = field(default_factory=dict)


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
