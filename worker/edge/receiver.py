"""The receiver: a WSGI app for the internet-facing side (Astria's callbacks, health, metrics).

Astria POSTs `{"prompt": {...}}` to a prompt's `callback` URL when it is done. With
ASTRIA_CALLBACK_URL set, workers send `ASTRIA_CALLBACK_URL?token=<job token>`; the token is a
per-job secret that stops working once the job is decided. A callback is a wake-up, not the
truth: Astria signs nothing, and the URL travels through Astria, proxies and logs, so the body is
never taken for the outcome. The receiver reads only the prompt's id, and a known token for that
prompt makes the job due for its poll at once: the outcome comes from Astria's own answer (a GET,
or one listing for many prompts of a tune, paid from the poll budget). Polling stays the fallback
(Astria does not retry callbacks). No body of any shape or size can finish, stall or fail a job.

It is served by gunicorn with gevent workers (`worker.edge.gunicorn_conf`): each connection is a
greenlet, not a thread, and a request whose headers do not arrive within the keep-alive timeout,
or whose body does not arrive within BODY_TIMEOUT, is dropped, so idle or half-sent connections
cost little and cannot crowd out Astria's callbacks. Bodies over MAX_BODY are refused (413). The
token never reaches a log: no line here carries the URL, an unexpected error answers 500 without
it, and gunicorn's own lines are redacted (`worker.edge.gunicorn_conf`).

    POST <any path>?token=...   Astria's callback
    GET  /healthz               200 when Redis answers and an engine beats (`worker.edge.health`)
    GET  /metrics               Prometheus text for the whole pool (`worker.edge.metrics`)
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from worker.edge import health, metrics
from worker.net.tracing import note
from worker.runtime import runtime

log = logging.getLogger("astria.receiver")
#: Astria's prompt object is a few KiB; nothing larger is read.
MAX_BODY = 64 * 1024
BODY_TIMEOUT = 20.0
#: Longest token looked up (ours are 22 characters).
MAX_TOKEN = 64

StartResponse = Callable[..., Any]  #: WSGI's start_response(status, headers, exc_info=None)


class BodyTooLarge(Exception):
    pass


def _read_body(environ: dict[str, Any]) -> bytes:
    """The request body, at most MAX_BODY bytes, within BODY_TIMEOUT under gevent."""
    length = environ.get("CONTENT_LENGTH") or ""
    if length.isdigit() and int(length) > MAX_BODY:
        raise BodyTooLarge
    stream = environ["wsgi.input"]
    with _deadline(BODY_TIMEOUT):
        body: bytes = stream.read(int(length)) if length.isdigit() else stream.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise BodyTooLarge
    return body


def _deadline(seconds: float) -> Any:
    """A gevent timeout when served by gevent workers (reads are cooperative there), else none
    (a threaded server sets its own socket timeouts)."""
    try:
        from gevent import Timeout, monkey
    except ImportError:  # pragma: no cover - gevent comes with [server]
        return _Nothing()
    return Timeout(seconds) if monkey.is_module_patched("socket") else _Nothing()


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _json(start_response: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    raw = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(raw)))])
    return [raw]


def _prompt_id(body: bytes) -> int | None:
    """The prompt id of a `{"prompt": {"id": ...}}` body; None for anything else."""
    try:
        prompt = json.loads(body).get("prompt")
        prompt_id = prompt.get("id")
    except Exception:  # not JSON, not objects, nested too deep: not a callback
        return None
    return prompt_id if type(prompt_id) is int and 0 < prompt_id < 2**63 else None


def callback(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    """Astria's callback: the job whose token it carries is due for its poll now."""
    try:
        body = _read_body(environ)
    except BodyTooLarge:
        return _json(start_response, "413 Payload Too Large", {"error": "body too large"})
    token = parse_qs(environ.get("QUERY_STRING", "")).get("token", [""])[0]
    rt = runtime()
    jobs = rt.jobs
    job_id = jobs.job_for_token(token) if 0 < len(token) <= MAX_TOKEN else None
    if job_id is None:
        return _json(start_response, "404 Not Found", {"error": "unknown token"})
    prompt_id = _prompt_id(body)
    if prompt_id is None:
        return _json(start_response, "400 Bad Request",
                     {"error": 'expected {"prompt": {"id": <integer>, ...}}'})
    traced = [(job_id, jobs.load(job_id).traceparent)] if rt.tracing.on else []
    with rt.tracing.spans("astria_queue.callback", traced):
        state = jobs.callback(job_id, prompt_id)
        note(**{"astria_queue.prompt_id": prompt_id, "astria_queue.callback": state})
    log.info("callback for job %s: %s", job_id, state,
             extra={"job_id": job_id, "prompt_id": prompt_id})
    return _json(start_response, "200 OK", {"ok": True, "state": state})


def healthz(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    report = health.check(runtime())
    return _json(start_response, "200 OK" if report.ok else "503 Service Unavailable",
                 report.as_json())


def _route(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
    if method == "GET" and path == "/healthz":
        return healthz(environ, start_response)
    if method == "GET" and path == "/metrics":
        return metrics.wsgi_app(environ, start_response)
    if method == "POST":
        return callback(environ, start_response)
    return _json(start_response, "405 Method Not Allowed", {"error": "POST a callback"})


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The WSGI app. An unexpected error answers 500 and is logged without the request's URL
    (gunicorn would print it, token included)."""
    try:
        return _route(environ, start_response)
    except Exception as exc:
        log.error("%s %s failed: %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"),
                  type(exc).__name__)
        raw = b'{"error": "internal error"}'
        start_response("500 Internal Server Error", [("Content-Type", "application/json"),
                                                     ("Content-Length", str(len(raw)))],
                       sys.exc_info())
        return [raw]
