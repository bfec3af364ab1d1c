"""What a producer sees of a job: its state and, once decided, its outcome (the HTTP API's
`GET /v1/jobs/{id}` and `astria-queue status`)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from worker.records import Job, JobState, outcome_to_json
from worker.runtime import Runtime


class JobView(BaseModel):
    id: str
    state: JobState
    tenant: str
    lane: str
    tune_id: int | None = Field(description="the tune the job asked for (None: a refused spec "
                                            "that named none)")
    prompt_id: int | None = None
    prompt_ids: list[int] = Field(default_factory=list)
    post_attempts: int = 0
    polls: int = 0
    created_at: float
    outcome: dict[str, Any] | None = Field(
        None, description="once decided: {state: SUCCESS, result} | {state: FAILURE, error: "
                          "{type, message}} | {state: REVOKED, reason}")
    stored: list[dict[str, Any]] | None = Field(
        None, description="with STORAGE_URL, once its images are copied: each {url, key, "
                          "sha256, bytes, content_type} (a follower: its leader's)")


def job_view(rt: Runtime, job: Job) -> JobView:
    """The job as its producer sees it; a follower shows its leader's outcome."""
    outcome, stored = job.outcome, job.stored
    if job.status is JobState.FOLLOWER and job.leader:
        leader = rt.jobs.load(job.leader)
        outcome, stored = outcome or leader.outcome, leader.stored
    return JobView(id=job.id, state=job.status, tenant=job.tenant, lane=job.lane,
                   tune_id=_asked_tune(job), prompt_id=job.prompt_id,
                   prompt_ids=list(job.prompt_ids), post_attempts=job.post_attempts,
                   polls=job.polls, created_at=job.created_at,
                   outcome=json.loads(outcome_to_json(outcome)) if outcome else None,
                   stored=json.loads(stored) if stored else None)


def _asked_tune(job: Job) -> int | None:
    tune_id = job.spec.get("tune_id")
    return tune_id if isinstance(tune_id, int) and not isinstance(tune_id, bool) else None
