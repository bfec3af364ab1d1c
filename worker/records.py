"""The shapes of things the queue keeps: job states, lanes, the job record, outcomes.

A job's record is a Redis hash of strings; `Job.from_hash` turns it into a typed value once, so
the rest of the code never reads a raw field. Outcomes are one of three dataclasses and are stored
as JSON in the job's hash (and, in Celery's format, in the result backend).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from functools import cached_property
from typing import Any, ClassVar


class JobState(StrEnum):
    """Where a job is. The first three are alive; the rest are final."""

    QUEUED = "queued"  #: registered; its prompt does not exist yet (its turn, or its POST, comes)
    WAITING = "waiting"  #: its prompt exists at Astria; waiting for the images
    FOLLOWER = "follower"  #: shares another job's prompt (same idempotency_key)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REVOKED = "revoked"  #: cancelled or expired; a prompt created meanwhile is still recorded
    MISSING = "missing"  #: no record (never registered, or past JOB_RETENTION_SECONDS)

    @property
    def final(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.REVOKED)


class Lane(StrEnum):
    """Priority lanes, highest first: POSTs are granted in this order (with minimum shares)."""

    INTERACTIVE = "interactive"
    NORMAL = "normal"
    BATCH = "batch"


LANES: tuple[Lane, ...] = (Lane.INTERACTIVE, Lane.NORMAL, Lane.BATCH)


class RequestKind(StrEnum):
    """What a dispatched unit of work needs: each kind of Astria request has its own limit."""

    SUBMIT = "submit"  #: a POST that creates a prompt (its lane's turn, one submit token)
    POLL = "poll"  #: any other Astria request: GET a prompt, list prompts, DELETE (a poll token)
    LOCAL = "local"  #: no Astria request (expiry, a callback body to apply)
    EXPIRE = "expire"  #: no Astria request: the job was not sent before its expires_in


# --- outcomes -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Succeeded:
    result: dict[str, Any]
    state: ClassVar[str] = "SUCCESS"


@dataclass(frozen=True)
class Failed:
    error: str  #: the name of a class in `worker.errors`
    message: str
    state: ClassVar[str] = "FAILURE"


@dataclass(frozen=True)
class Revoked:
    reason: str  #: "revoked" (cancelled) or "expired" (not sent before expires_in)
    state: ClassVar[str] = "REVOKED"


Outcome = Succeeded | Failed | Revoked


def outcome_to_json(outcome: Outcome) -> str:
    if isinstance(outcome, Succeeded):
        body: dict[str, Any] = {"state": outcome.state, "result": outcome.result}
    elif isinstance(outcome, Failed):
        body = {"state": outcome.state,
                "error": {"type": outcome.error, "message": outcome.message}}
    else:
        body = {"state": outcome.state, "reason": outcome.reason}
    return json.dumps(body, sort_keys=True)


def outcome_from_json(raw: str) -> Outcome:
    body = json.loads(raw)
    if body["state"] == Succeeded.state:
        return Succeeded(body["result"])
    if body["state"] == Failed.state:
        return Failed(body["error"]["type"], body["error"]["message"])
    return Revoked(body["reason"])


# --- the job record -------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """A snapshot of one job's hash, typed. Field names are the hash's."""

    id: str
    status: JobState
    spec_json: str  #: the validated spec, as stored (decoded only when needed: `spec`)
    tenant: str
    lane: Lane
    seq: str  #: the job's place in its tenant's queue (fixed-width, sorts by registration)
    created_at: float
    post_by: float  #: send to Astria before this time, or end as expired (0: no limit)
    seed: int
    token: str
    # the POST, and what to do when its answer was lost
    pending_post: float  #: when a POST whose answer is not recorded was sent (0: none)
    post_attempts: int
    post_tune_id: int
    post_text: str
    post_rerouted: bool
    first_post_at: float
    gave_up_at: float  #: when the answer of the unanswered POST was given up (Redis's clock)
    ambiguous_posts: int  #: POSTs whose fate stayed unknown and whose prompt never showed
    retry_attempt: int  #: tenacity's attempt number of the request being retried
    retry_since: float  #: when that request was first tried
    list_before: int  #: cursor while paging Astria's listing for an unanswered POST (0: newest)
    list_oldest: float  #: created_at of the oldest prompt seen on the last page
    # the prompt (a POST may answer several: prompt_id is the first of prompt_ids)
    prompt_id: int | None
    prompt_ids: tuple[int, ...]  #: every prompt the job's POST created, in id order
    prompts_done: tuple[dict[str, Any], ...]  #: of several prompts, those done (as read)
    tune_id: int
    rerouted: bool
    sent_text: str
    submitted_at: float
    deadline: float  #: no images by then: PromptTimeout
    polls: int
    inline_image: bool  #: the spec's input_image_base64 is kept apart until the prompt exists
    step_failures: int  #: unexpected failures of this job's steps in a row (InternalError)
    poll_now: float  #: a callback asked for a poll at this time (callback.lua, schedule.lua)
    woken_at: float  #: when the last callback did (callbacks are spaced: callback.lua)
    # the end
    outcome: Outcome | None
    finished_at: float  #: when the outcome was decided
    leader: str
    delete_prompt: bool
    prompt_deleted: bool
    delete_error: str  #: why the prompt's DELETE failed for good (kept for operators)
    redriven: int  #: times an operator re-drove the job (each run's webhook has its own id)
    batch: str  #: the batch it belongs to ('' for none; worker.store.batches)
    webhook_events: str  #: the spec's webhook_events, as `,queued,waiting,` (lib/job_event.lua)
    stored: str  #: its images' durable copies, JSON (worker.flow.copies), '' before
    copy_attempts: int
    copy_error: str  #: what the last failed attempt at its copies got
    traceparent: str  #: its trace's register span, W3C (worker.net.tracing); '' when untraced

    @cached_property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = json.loads(self.spec_json)
        return spec

    def log_fields(self, **more: Any) -> dict[str, Any]:
        """What a log line about the job carries (`extra`): its id, tenant and lane, and more."""
        return {"job_id": self.id, "tenant": self.tenant, "lane": self.lane, **more}

    @property
    def requested_tune_id(self) -> int:
        return int(self.spec["tune_id"])

    @property
    def webhook_url(self) -> str | None:
        url = self.spec.get("callback")
        return str(url) if url else None

    @classmethod
    def from_hash(cls, job_id: str, raw: Mapping[Any, Any]) -> Job:
        f = {as_text(k): as_text(v) for k, v in raw.items()}

        def num(name: str) -> float:
            value = f.get(name, "")
            return float(value) if value else 0.0

        def whole(name: str) -> int:  # not through a float: ids keep every digit
            value = f.get(name, "")
            return int(value) if value.lstrip("-").isdigit() else int(num(name))

        def flag(name: str) -> bool:
            return f.get(name, "0") not in ("", "0")

        outcome = f.get("outcome")
        return cls(
            id=job_id,
            status=JobState(f.get("status", JobState.MISSING)),
            spec_json=f.get("spec", "{}"),
            tenant=f.get("tenant", "default"),
            lane=Lane(f.get("lane", Lane.NORMAL)),
            seq=f.get("seq", ""),
            created_at=num("created_at"),
            post_by=num("post_by"),
            seed=whole("seed"),
            token=f.get("token", ""),
            pending_post=num("pending_post"),
            post_attempts=whole("post_attempts"),
            post_tune_id=whole("post_tune_id"),
            post_text=f.get("post_text", ""),
            post_rerouted=flag("post_rerouted"),
            first_post_at=num("first_post_at"),
            gave_up_at=num("gave_up_at"),
            ambiguous_posts=whole("ambiguous_posts"),
            retry_attempt=whole("retry_attempt"),
            retry_since=num("retry_since"),
            list_before=whole("list_before"),
            list_oldest=num("list_oldest"),
            prompt_id=whole("prompt_id") or None,
            prompt_ids=tuple(int(x) for x in f.get("prompt_ids", "").split(",") if x)
            or ((whole("prompt_id"),) if whole("prompt_id") else ()),
            prompts_done=tuple(json.loads(f["prompts_done"])) if f.get("prompts_done") else (),
            tune_id=whole("tune_id"),
            rerouted=flag("rerouted"),
            sent_text=f.get("sent_text", ""),
            submitted_at=num("submitted_at"),
            deadline=num("deadline"),
            polls=whole("polls"),
            inline_image=flag("inline_image"),
            step_failures=whole("step_failures"),
            poll_now=num("poll_now"),
            woken_at=num("woken_at"),
            outcome=outcome_from_json(outcome) if outcome else None,
            finished_at=num("finished_at"),
            leader=f.get("leader", ""),
            delete_prompt=flag("delete_prompt"),
            prompt_deleted=flag("prompt_deleted"),
            delete_error=f.get("delete_error", ""),
            redriven=whole("redriven"),
            batch=f.get("batch", ""),
            webhook_events=f.get("webhook_events", ""),
            stored=f.get("stored", ""),
            copy_attempts=whole("copy_attempts"),
            copy_error=f.get("copy_error", ""),
            traceparent=f.get("traceparent", ""),
        )


#: The names of a job hash's fields: the Job record's, `spec_json` stored as `spec` (its id is
#: the hash's key). The store writes no other (`worker.store.types.job_fields`).
JOB_HASH_FIELDS = frozenset(
    {"spec" if f.name == "spec_json" else f.name for f in fields(Job) if f.name != "id"})


def as_text(value: Any) -> str:
    """A Redis reply (bytes, or a number from Lua) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
