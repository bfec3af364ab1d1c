"""The HTTP API for producers in any language (`astria-queue api`, FastAPI under uvicorn):
internal, on its own port (API_PORT), never the internet-facing callback receiver's.

Every request carries `Authorization: Bearer <token>`; the token's sha256 names its tenant in
TENANTS_FILE (without a file there are no tokens, and every request is 401). A job is checked as
`enqueue` checks it and registered directly in the job store (no broker hop): the `202` means it
is durably queued, and a refused job leaves nothing. Another tenant's job is a 404, as one that
does not exist. Errors are RFC 9457 problems (`worker.edge.problems`). A W3C `traceparent`
header on a POST makes the job's spans its children (`worker.net.tracing`).

    POST   /v1/jobs            the spec; Idempotency-Key, Prefer: wait=N (N <= 60), traceparent
    GET    /v1/jobs/{id}       state, lane, prompt ids, attempts, the outcome once decided
    GET    /v1/jobs/{id}/events  its events as server-sent events (Last-Event-ID resumes)
    DELETE /v1/jobs/{id}       cancel (?delete_prompt=true also deletes its prompt at Astria)
    POST   /v1/batches         {"specs": [...], "callback"?, "batch_id"?}: its id, its jobs' ids
    GET    /v1/batches/{id}    its counts (one read); /events: each member decided, `completed`
    DELETE /v1/batches/{id}    cancel every member without an outcome
    GET    /v1/schema          the JSON Schema of a spec; /openapi.json, /docs: the API's own
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, Path, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from worker.edge import problems
from worker.edge.guards import BodyLimit, TokenRates
from worker.edge.problems import Problem
from worker.edge.waiting import RECHECK, Waiters
from worker.errors import InvalidSpec
from worker.flow import batching
from worker.flow.accept import check, register
from worker.flow.batching import open_batch
from worker.flow.view import JobView, job_view
from worker.records import Job, JobState
from worker.runtime import Runtime
from worker.spec import PromptSpec, spec_json_schema
from worker.store.batches import Batch
from worker.store.channels import FINAL_EVENTS
from worker.store.types import Registered
from worker.tenants import token_digest

#: The longest `Prefer: wait` honoured, in seconds.
MAX_WAIT = 60
WAIT_PREFERENCE = re.compile(r"(?:^|[,;\s])wait=(\d{1,6})(?:$|[,;\s])")


class ProblemDetails(BaseModel):
    """RFC 9457 (application/problem+json)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    errors: list[dict[str, str]] | None = Field(
        None, description="a refused spec or request: each {field, rule}")


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ProblemDetails, "content": {problems.MEDIA_TYPE: {}},
                     "description": HTTPStatus(status).phrase} for status in statuses}


#: What any route may answer besides its own: who you are, how often you ask.
COMMON = _problems(401, 413, 422, 429)


class Accepted(BaseModel):
    id: str
    state: JobState


class BatchRequest(BaseModel):
    specs: list[dict[str, Any]] = Field(description="prompt specs (GET /v1/schema), one tenant")
    callback: str | None = Field(None, description="where its one batch.completed webhook goes")
    batch_id: str | None = Field(None, description="yours, to resume a send (default: a new id)")


class BatchView(BaseModel):
    """A batch's counts: `queued` is every member neither waiting for images nor decided."""

    id: str
    size: int
    queued: int
    waiting: int
    succeeded: int
    failed: int
    revoked: int
    cost_mc: int
    stored: int
    created_at: float
    completed_at: float | None
    jobs: list[str] | None = Field(None, description="its members' job ids (when created)")

    @classmethod
    def of(cls, batch: Batch, jobs: list[str] | None = None) -> BatchView:
        """The store's record (`worker.store.batches.Batch`) as the API shows it."""
        return cls.model_validate({**asdict(batch), "jobs": jobs})


def create_app(rt: Runtime | None = None) -> FastAPI:
    """The API on `rt` (the process's runtime by default: uvicorn's factory)."""
    if rt is None:
        from worker.runtime import runtime

        rt = runtime()
    runtime_ = rt
    s = rt.settings
    waiters = Waiters(rt)
    rates = TokenRates(s.api_rate_per_second, s.api_rate_burst)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        waiters.stop()

    app = FastAPI(title="astria-queue", version="1", lifespan=lifespan,
                  description=__doc__.split("\n\n")[0] if __doc__ else "")
    problems.install(app)
    app.add_middleware(BodyLimit, limit=s.api_max_body_bytes)

    def tenant_of(authorization: str | None) -> str:
        scheme, _, token = (authorization or "").partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="astria-queue"'}
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(401, "unauthorized", "authorization: a Bearer token is required",
                          headers=challenge)
        digest = token_digest(token.strip())
        tenant = runtime_.settings.tenants.for_digest(digest)
        if tenant is None:
            raise Problem(401, "unauthorized", "authorization: the token is not known",
                          headers=challenge)
        wait = rates.wait(digest)
        if wait:
            raise Problem(429, "rate-limited",
                          f"authorization: this token's rate is {s.api_rate_per_second:g} "
                          "requests a second (API_RATE_PER_SECOND)",
                          headers={"Retry-After": str(max(1, round(wait)))})
        return tenant

    def owned(job_id: str, tenant: str) -> Job:
        job = runtime_.jobs.load(job_id)
        if job.status is JobState.MISSING or job.tenant != tenant:
            raise Problem(404, "not-found", f"id: no job {job_id!r} of tenant {tenant!r}")
        return job

    def view(job: Job) -> JobView:
        return job_view(runtime_, job)

    def as_tenants(tenant: str, spec: dict[str, Any], where: str = "") -> dict[str, Any]:
        """The spec with the token's tenant (403 when it names another)."""
        if "tenant" in spec and spec["tenant"] != tenant:
            raise Problem(403, "forbidden", f"{where}tenant: this token is tenant {tenant!r}'s, "
                          f"not {str(spec['tenant'])[:64]!r}'s")
        return {**spec, "tenant": tenant}

    def post_by(spec: PromptSpec) -> float:
        return time.time() + spec.expires_in if spec.expires_in else 0.0

    def enqueue(tenant: str, spec: dict[str, Any], idempotency_key: str | None,
                traceparent: str | None) -> str:
        spec = as_tenants(tenant, spec)
        if idempotency_key is not None:
            if spec.get("idempotency_key", idempotency_key) != idempotency_key:
                raise Problem(422, "invalid-spec", "idempotency_key: differs from the "
                              "Idempotency-Key header")
            spec = {**spec, "idempotency_key": idempotency_key}
        try:
            parsed: PromptSpec = check(runtime_, spec)
            job_id = str(uuid.uuid4())
            registration = register(runtime_, job_id, parsed, post_by=post_by(parsed),
                                    traceparent=traceparent)
            if registration.kind is Registered.TOO_MANY:
                raise InvalidSpec(f"idempotency_key: {s.idempotency_max_followers} jobs already "
                                  "wait on this key's prompt (IDEMPOTENCY_MAX_FOLLOWERS)")
        except InvalidSpec as exc:
            raise problems.invalid_spec(exc) from None
        return job_id

    @app.post("/v1/jobs", status_code=202, response_model=Accepted,
              responses={200: {"model": JobView, "description": "decided within Prefer: wait"},
                         **COMMON, **_problems(400, 403)},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": {
                      k: v for k, v in spec_json_schema().items() if k != "$schema"}}}}})
    async def create_job(
        spec: Annotated[dict[str, Any], Body(description="the prompt spec (GET /v1/schema)")],
        authorization: Annotated[str | None, Header()] = None,
        idempotency_key: Annotated[str | None, Header(max_length=256)] = None,
        prefer: Annotated[str | None, Header(max_length=256)] = None,
        traceparent: Annotated[str | None, Header(max_length=256)] = None,
    ) -> Response:
        tenant = tenant_of(authorization)
        wait = _wait_preference(prefer)
        job_id = await run_in_threadpool(enqueue, tenant, spec, idempotency_key, traceparent)
        location = {"Location": f"/v1/jobs/{job_id}"}
        if wait and await waiters.decided(job_id, wait):
            job = await run_in_threadpool(runtime_.jobs.load, job_id)
            return JSONResponse(view(job).model_dump(mode="json"), headers=location)
        job = await run_in_threadpool(runtime_.jobs.load, job_id)
        return JSONResponse(Accepted(id=job_id, state=job.status).model_dump(mode="json"),
                            status_code=202, headers=location)

    @app.get("/v1/schema")
    def schema() -> dict[str, Any]:
        """The JSON Schema of a prompt spec."""
        return spec_json_schema()

    @app.get("/v1/jobs/{job_id}", response_model=JobView, responses={**COMMON, **_problems(404)})
    def get_job(job_id: Annotated[str, Path(max_length=200)],
                authorization: Annotated[str | None, Header()] = None) -> JobView:
        return view(owned(job_id, tenant_of(authorization)))

    @app.get("/v1/jobs/{job_id}/events", response_class=EventSourceResponse,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "the job's events, then the end of the stream"},
                        **COMMON, **_problems(404)})
    async def job_events(job_id: Annotated[str, Path(max_length=200)],
                         authorization: Annotated[str | None, Header()] = None,
                         last_event_id: Annotated[str | None, Header(max_length=64)] = None,
                         ) -> EventSourceResponse:
        """Server-sent events: each of the job's events (`event:` its type, `data:` its JSON,
        `id:` its place), from after `Last-Event-ID` when reconnecting; the stream ends after
        the job's final event (succeeded, failed, revoked)."""
        await run_in_threadpool(owned, job_id, tenant_of(authorization))
        return event_stream(job_id, last_event_id,
                            lambda after: runtime_.channels.events_after(job_id, after),
                            FINAL_EVENTS)

    @app.delete("/v1/jobs/{job_id}", response_model=JobView,
                responses={**COMMON, **_problems(404)})
    def cancel_job(job_id: Annotated[str, Path(max_length=200)],
                   authorization: Annotated[str | None, Header()] = None,
                   delete_prompt: Annotated[bool, Query()] = False) -> JobView:
        """Cancel: not yet POSTed, it never is; waiting, it stops polling; a decided job keeps
        its outcome."""
        job = owned(job_id, tenant_of(authorization))
        runtime_.jobs.cancel(job.id, delete_prompt=delete_prompt)
        return view(runtime_.jobs.load(job.id))

    def owned_batch(batch_id: str, tenant: str) -> Batch:
        batch = runtime_.batches.load(batch_id)
        if batch is None or batch.tenant != tenant:
            raise Problem(404, "not-found", f"id: no batch {batch_id!r} of tenant {tenant!r}")
        return batch

    def enqueue_batch(tenant: str, request: BatchRequest, traceparent: str | None) -> BatchView:
        specs = [as_tenants(tenant, spec, f"specs[{n}].") for n, spec in enumerate(request.specs)]
        try:
            opened = open_batch(runtime_, specs, callback=request.callback,
                                batch_id=request.batch_id)
        except InvalidSpec as exc:
            raise problems.invalid_spec(exc) from None
        for job_id, spec in zip(opened.job_ids, opened.specs, strict=True):
            register(runtime_, job_id, spec, post_by=post_by(spec), batch_id=opened.id,
                     traceparent=traceparent)
        return BatchView.of(owned_batch(opened.id, tenant), opened.job_ids)

    @app.post("/v1/batches", status_code=202, response_model=BatchView,
              responses={**COMMON, **_problems(403)})
    async def create_batch(
            request: BatchRequest, authorization: Annotated[str | None, Header()] = None,
            traceparent: Annotated[str | None, Header(max_length=256)] = None) -> Response:
        """Check every spec (nothing is stored when one is refused), create the batch and queue
        its members (`jobs[n]` is `specs[n]`); the same `batch_id` and specs again resume an
        interrupted request."""
        tenant = tenant_of(authorization)
        view = await run_in_threadpool(enqueue_batch, tenant, request, traceparent)
        return JSONResponse(view.model_dump(mode="json"), status_code=202,
                            headers={"Location": f"/v1/batches/{view.id}"})

    @app.get("/v1/batches/{batch_id}", response_model=BatchView,
             responses={**COMMON, **_problems(404)})
    def get_batch(batch_id: Annotated[str, Path(max_length=200)],
                  authorization: Annotated[str | None, Header()] = None) -> BatchView:
        return BatchView.of(owned_batch(batch_id, tenant_of(authorization)))

    @app.delete("/v1/batches/{batch_id}", response_model=BatchView,
                responses={**COMMON, **_problems(404)})
    def cancel_batch(batch_id: Annotated[str, Path(max_length=200)],
                     authorization: Annotated[str | None, Header()] = None,
                     delete_prompt: Annotated[bool, Query()] = False) -> BatchView:
        """Cancel every member without an outcome (one not arrived yet is refused when it
        does); decided members keep theirs."""
        owned_batch(batch_id, tenant := tenant_of(authorization))
        batching.cancel_batch(runtime_, batch_id, delete_prompt=delete_prompt)
        return BatchView.of(owned_batch(batch_id, tenant))

    @app.get("/v1/batches/{batch_id}/events", response_class=EventSourceResponse,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "its members' decisions, then `completed`"},
                        **COMMON, **_problems(404)})
    async def batch_events(batch_id: Annotated[str, Path(max_length=200)],
                           authorization: Annotated[str | None, Header()] = None,
                           last_event_id: Annotated[str | None, Header(max_length=64)] = None,
                           ) -> EventSourceResponse:
        """Server-sent events: `member` ({job_id, status}) as each member is decided (the last
        hundred or so are kept), then `completed` with the counts, which ends the stream."""
        await run_in_threadpool(owned_batch, batch_id, tenant_of(authorization))
        return event_stream(f"batch:{batch_id}", last_event_id,
                            lambda after: runtime_.channels.batch_events_after(batch_id, after),
                            frozenset({"completed"}))

    def event_stream(watched: str, last_event_id: str | None,
                     read: Callable[[str], list[tuple[str, dict[str, Any]]]],
                     final: frozenset[str]) -> EventSourceResponse:
        """The events `read` gives after Last-Event-ID, read again whenever `watched` is
        published, ending after one of the `final` types."""
        async def stream() -> AsyncIterator[ServerSentEvent]:
            after = last_event_id or "0-0"
            while True:
                with waiters.watching(watched) as changed:
                    events = await run_in_threadpool(read, after)
                    for after, event in events:
                        yield ServerSentEvent(json.dumps(event), event=event["type"], id=after)
                        if event["type"] in final:
                            return
                    if not events:
                        await changed(RECHECK)

        return EventSourceResponse(stream(), ping=15)

    return app


def _wait_preference(prefer: str | None) -> int:
    """N of `Prefer: wait=N` (RFC 7240), at most MAX_WAIT; 0 without one."""
    if not prefer:
        return 0
    found = WAIT_PREFERENCE.search(prefer)
    if found is None:
        return 0
    seconds = int(found.group(1))
    if seconds > MAX_WAIT:
        raise Problem(400, "bad-request", f"prefer: wait is at most {MAX_WAIT} seconds")
    return seconds
