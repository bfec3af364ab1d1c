"""The receiver: a WSGI app for the internet-facing side (Astria's callbacks, health, metrics).

Astria POSTs `{"prompt": {...}}` to a prompt's `callback` URL when it is done. With
ASTRIA_CALLBACK_URL set, workers send `ASTRIA_CALLBACK_URL?token=<job token>`; the token is a
per-job secret (Astria signs nothing), so a request without a known token changes nothing. The
body is kept on the job and a worker finishes it at once, without a request to Astria (polling
stays as a slower fallback: Astria does not retry callbacks).

It is served by gunicorn with gevent workers (`worker.gunicorn_conf`): each connection is a
greenlet, not a thread, and a request whose headers do not arrive within the keep-alive timeout,
or whose body does not arrive within BODY_TIMEOUT, is dropped, so idle or half-sent connections
cost little and cannot crowd out Astria's callbacks. Bodies over MAX_BODY are refused (413).

    POST <any path>?token=...   Astria's callback
    GET  /healthz               200 when Redis answers, else 503
    GET  /metrics               Prometheus text for the whole pool (`worker.metrics`)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import redis

from worker import metrics
from worker.runtime import runtime

log = logging.getLogger("astria.receiver")
MAX_BODY = 1024 * 1024
BODY_TIMEOUT = 20.0

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


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
    except ImportError:  # pragma: no cover - gevent is a dependency
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


def callback(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    """Astria's callback: keep the body on the job it belongs to."""
    try:
        body = _read_body(environ)
    except BodyTooLarge:
        return _json(start_response, "413 Payload Too Large", {"error": "body too large"})
    token = parse_qs(environ.get("QUERY_STRING", "")).get("token", [""])[0]
    jobs = runtime().jobs
    job_id = jobs.job_for_token(token) if token else None
    if job_id is None:
        return _json(start_response, "404 Not Found", {"error": "unknown token"})
    try:
        prompt = json.loads(body)["prompt"]
        if not isinstance(prompt, dict):
            raise TypeError("prompt is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        return _json(start_response, "400 Bad Request",
                     {"error": f'expected {{"prompt": {{...}}}}: {exc}'})
    state = jobs.callback(job_id, prompt)
    log.info("callback for job %s: %s", job_id, state,
             extra={"job_id": job_id, "prompt_id": prompt.get("id")})
    return _json(start_response, "200 OK", {"ok": True, "state": state})


def healthz(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    try:
        runtime().redis.ping()
    except redis.RedisError as exc:
        return _json(start_response, "503 Service Unavailable",
                     {"ok": False, "redis": type(exc).__name__})
    return _json(start_response, "200 OK", {"ok": True})


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
    if method == "GET" and path == "/healthz":
        return healthz(environ, start_response)
    if method == "GET" and path == "/metrics":
        return metrics.wsgi_app(environ, start_response)
    if method == "POST":
        return callback(environ, start_response)
    return _json(start_response, "405 Method Not Allowed", {"error": "POST a callback"})
