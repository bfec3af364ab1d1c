"""RFC 9457 problem details: every error the HTTP API gives is `application/problem+json`, with
the HTTP status, a title, a detail that names the field and the rule, and for a refused spec an
`errors` list of `{"field", "rule"}`."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from worker.errors import InvalidSpec

MEDIA_TYPE = "application/problem+json"
#: Each kind of problem's type URI (the README's section on the API lists them).
TYPE_BASE = "urn:astria-queue:problem:"


class Problem(Exception):
    """An error answer: raise it anywhere in a request."""

    def __init__(self, status: int, kind: str, detail: str, *,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail
        self.headers, self.extra = headers or {}, extra


def problem_body(status: int, kind: str, detail: str, instance: str,
                 **extra: Any) -> dict[str, Any]:
    return {"type": TYPE_BASE + kind, "title": HTTPStatus(status).phrase, "status": status,
            "detail": detail, "instance": instance, **extra}


def problem_response(status: int, kind: str, detail: str, instance: str,
                     headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse(problem_body(status, kind, detail, instance, **extra),
                        status_code=status, media_type=MEDIA_TYPE, headers=headers)


def spec_errors(message: str) -> list[dict[str, str]]:
    """An InvalidSpec's "field: rule; field: rule" as a list."""
    out = []
    for part in message.split("; "):
        field, _, rule = part.partition(": ")
        out.append({"field": field, "rule": rule} if rule else {"field": "", "rule": part})
    return out


def invalid_spec(exc: InvalidSpec) -> Problem:
    return Problem(422, "invalid-spec", str(exc), errors=spec_errors(str(exc)))


def _field(error: Any) -> str:
    """A request error's field: `body` for a body that is not JSON (its loc is an offset)."""
    where = [str(p) for p in error["loc"]]
    if error.get("type") == "json_invalid" or where == ["body"]:
        return "body"
    return ".".join(where[1:] if where[0] in ("body", "header", "query", "path") else where)


def install(app: FastAPI) -> None:
    """Answer every error of `app` as a problem."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(exc.status, exc.kind, exc.detail, request.url.path,
                                exc.headers, **exc.extra)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [{"field": _field(e), "rule": str(e["msg"])} for e in exc.errors()[:20]]
        detail = "; ".join(f"{e['field']}: {e['rule']}" for e in errors)
        return problem_response(422, "invalid-request", detail, request.url.path, errors=errors)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        kind = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "-")
        return problem_response(exc.status_code, kind, str(exc.detail), request.url.path,
                                dict(exc.headers or {}))

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
