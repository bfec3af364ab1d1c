"""The shapes of what we send producers, as models: a success's outcome, a failure as Celery's
result backend stores it, and each webhook event. `schemas()` gives their JSON Schemas,
committed under `schema/` (`astria-queue schema --of NAME`); tests check what the code emits
against them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

DRAFT = "https://json-schema.org/draft/2020-12/schema"


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Outcome(_Shape):
    """A succeeded job's outcome: `outcome()`'s return, a job.succeeded webhook's `data`, the
    API's `outcome.result`."""

    job_id: str
    prompt_id: int = Field(description="the first (usually only) prompt of the job's POST")
    prompt_ids: list[int] | None = Field(None, description="present when the POST made several")
    tune_id: int = Field(description="the tune the prompt ran on (the base tune if re-routed)")
    requested_tune_id: int
    rerouted: bool
    text: str = Field(description="the text as sent (with <lora:...> when re-routed)")
    images: list[str] = Field(description="image URLs, in prompt order")
    seed: int | None
    num_images: int | None
    cost_mc: int | None = Field(None, description="Astria's cost in thousandths of a cent")


class Failure(_Shape):
    """A failed or revoked job in Celery's result backend (`celery-task-meta-<id>`'s `result`);
    Celery raises it as the class `exc_type` of `exc_module`."""

    exc_type: str = Field(description="a class of worker.errors, or TaskRevokedError")
    exc_message: list[str] = Field(min_length=1, max_length=1,
                                   description="the message (a revoked job: its reason)")
    exc_module: Literal["worker.errors", "celery.exceptions"]


class _Event(_Shape):
    timestamp: AwareDatetime = Field(description="when the outcome was decided (UTC, ms)")


class SucceededEvent(_Event):
    type: Literal["job.succeeded"]
    data: Outcome


class FailedData(_Shape):
    job_id: str
    error: str = Field(description="a class of worker.errors")
    message: str


class FailedEvent(_Event):
    type: Literal["job.failed"]
    data: FailedData


class RevokedData(_Shape):
    job_id: str
    reason: Literal["revoked", "expired"]


class RevokedEvent(_Event):
    type: Literal["job.revoked"]
    data: RevokedData


class BatchCounts(_Shape):
    size: int
    queued: int = Field(description="members neither waiting for images nor decided")
    waiting: int = Field(description="members whose prompt exists")
    succeeded: int
    failed: int
    revoked: int
    cost_mc: int = Field(description="the sum over decided members")
    stored: int = Field(description="members whose images are copied (STORAGE_URL)")


class BatchData(_Shape):
    batch_id: str
    counts: BatchCounts


class BatchCompletedEvent(_Shape):
    type: Literal["batch.completed"]
    timestamp: AwareDatetime = Field(description="when its last member was decided (UTC, ms)")
    data: BatchData


class JobEventData(BaseModel):
    """A job's event as its stream holds it (the API's event stream), with its job's id."""

    model_config = ConfigDict(extra="allow")
    job_id: str
    type: str = Field(description="queued, following, posted, reconciling, retrying, waiting, "
                                  "redriven; stored (with `stored`: each copy's url, key, "
                                  "sha256, bytes, content_type)")
    at: float = Field(description="when (Unix seconds)")


class JobEvent(_Shape):
    """One the spec's `webhook_events` asked for (lib/job_event.lua); `job.stored` is sent to
    every callback once the job's images are copied (STORAGE_URL)."""

    type: Literal["job.queued", "job.following", "job.posted", "job.reconciling",
                  "job.retrying", "job.waiting", "job.redriven", "job.stored"]
    timestamp: AwareDatetime = Field(description="when it happened (UTC, ms)")
    data: JobEventData


WebhookEvent = TypeAdapter(Annotated[
    SucceededEvent | FailedEvent | RevokedEvent | BatchCompletedEvent | JobEvent,
    Field(discriminator="type")])


def schemas() -> dict[str, dict[str, Any]]:
    """Each shape's JSON Schema, by the name of its file under schema/ (without .schema.json)."""
    made = {"outcome": Outcome.model_json_schema(), "failure": Failure.model_json_schema(),
            "webhook-event": WebhookEvent.json_schema()}
    made["webhook-event"]["title"] = "A webhook event's body (Standard Webhooks)"
    return {name: {"$schema": DRAFT, **schema} for name, schema in made.items()}
