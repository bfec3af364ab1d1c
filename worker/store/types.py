"""The values job transitions take and give: leases, endings, registrations."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.records import Job, Outcome


class LeaseLost(Exception):
    """Our lease on a job ran out and another worker may hold it now: stop touching the job."""


@dataclass(frozen=True)
class Lease:
    job_id: str
    owner: str


@dataclass(frozen=True)
class Registration:
    """What `JobStore.register` did: 'new' (queued), 'exists' (a redelivered message),
    'revoked' (cancelled before it arrived) or 'follower' (of `leader`)."""

    kind: str
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


def flat_fields(fields: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for name, value in fields.items():
        out += [name, str(int(value)) if isinstance(value, bool) else str(value)]
    return out

