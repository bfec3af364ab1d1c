"""`AstriaClient`: Astria's prompt endpoints over `requests`, one request per call, typed errors.

It never waits and never retries: whether and when to try again is decided by the retry policy
(`worker.astria.retry`) and waited for in Redis (a due time), so no worker slot sleeps. A POST in
particular is made exactly once per call, because a retried POST can create a second billed
prompt. One requests transport adapter per process: its connection pool is shared by every
thread. Requests go straight to it, built as `PreparedRequest`s: a `Session` would only add
cookies, hooks and redirects that Astria's API never uses, at a third of the client's CPU.
"""

from __future__ import annotations

import email.utils
import os
import time
from typing import Any, Protocol
from urllib.parse import urlencode

import requests
from pydantic import ValidationError
from requests.adapters import BaseAdapter, HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import MaxRetryError, NewConnectionError

from worker.astria.prompt import MAX_PROMPTS, Prompt, Tune, read_prompt
from worker.errors import AstriaError, AstriaRejected, AstriaUnavailable
from worker.net.tracing import note
from worker.records import RequestKind
from worker.settings import Settings

#: Astria's error text is cut at this length: it reaches the job, the result, a webhook, a log.
MAX_ERROR_TEXT = 300

_RETRIED_STATUSES = {429, 500, 502, 503, 504}
#: Statuses after which a POST may or may not have created the prompt.
_AMBIGUOUS_STATUSES = {500, 502, 504}


class TransientError(AstriaUnavailable):
    """A failure worth retrying. `maybe_created` tells a POST's caller to look before re-posting;
    `retry_after` is Astria's Retry-After, in seconds, when it sent one; `not_sent`, that the
    connection failed before the request went out."""

    def __init__(self, message: str, *, status: int | None = None,
                 retry_after: float | None = None, maybe_created: bool = False,
                 not_sent: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.maybe_created = maybe_created
        self.not_sent = not_sent  #: the request never left: worth trying again at once


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def error_text(response: requests.Response) -> str:
    """Astria's error message from a body such as {"error": "..."} or {"field": ["msg"]}."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:MAX_ERROR_TEXT].strip() or response.reason
    if isinstance(body, dict):
        if "error" in body:
            return str(body["error"])[:MAX_ERROR_TEXT]
        parts = [
            f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in body.items()
        ]
        return "; ".join(parts)[:MAX_ERROR_TEXT] or response.reason
    return str(body)[:MAX_ERROR_TEXT]


def _as_prompt(body: Any, method: str) -> Prompt:
    """The prompt in an answer (`worker.astria.prompt`); an answer that is not one is a failed
    answer."""
    prompt = read_prompt(body)
    if prompt is None:
        raise TransientError(f"{method}: answer is not a prompt object")
    return prompt


def _as_prompts(body: Any) -> list[Prompt]:
    """The prompts a POST created: one object, or a list of them (partner models answer
    several, as Astria's CLI knows); an answer that is neither may have created prompts."""
    items = body if isinstance(body, list) else [body]
    prompts = [read_prompt(item) for item in items[:MAX_PROMPTS]]
    if not items or len(items) > MAX_PROMPTS or None in prompts:
        raise TransientError("POST: answer is not a prompt object or a list of them",
                             maybe_created=True)
    return [p for p in prompts if p is not None]


def _nothing_sent(exc: requests.ConnectionError) -> bool:
    """True when the connection failed before the request went out (refused, unreachable, no
    such name, TLS handshake): nothing can have been created."""
    if isinstance(exc, requests.exceptions.SSLError):
        return True
    reason = exc.args[0].reason if exc.args and isinstance(exc.args[0], MaxRetryError) else None
    return isinstance(reason, NewConnectionError)


class AnswerReports(Protocol):
    """Where the client tells the rate limiter how Astria answered
    (`worker.store.dispatch.Reports`): every answer but a 429 passed Astria's limit. `sent` is
    when the request went out (`time.monotonic()`): the limiter counts what passed by it."""

    def ok(self, kind: RequestKind, sent: float) -> None: ...

    def throttled(self, kind: RequestKind, sent: float, retry_after: float | None) -> None: ...


class RequestCounts(Protocol):
    """Where the client counts its requests (`worker.store.stats.Stats`)."""

    def request(self, kind: RequestKind, method: str, outcome: str, seconds: float) -> None: ...


class AstriaClient:
    """Talks to ASTRIA_BASE_URL only, with the Bearer key from settings."""

    def __init__(self, settings: Settings, stats: RequestCounts | None = None,
                 reports: AnswerReports | None = None, transport: BaseAdapter | None = None
                 ) -> None:
        """`transport` is requests' own seam (an adapter): tests answer in-process through it,
        as httpx's MockTransport does; by default, one pooled HTTPAdapter."""
        self._settings = settings
        self._stats = stats
        self._reports = reports
        self._base = settings.astria_base_url.rstrip("/")
        # Proxy and CA settings are read from the environment once, not on every request.
        self._proxies = requests.utils.get_environ_proxies(self._base)
        self._verify: bool | str = (os.environ.get("REQUESTS_CA_BUNDLE")
                                    or os.environ.get("CURL_CA_BUNDLE") or True)
        self._headers = CaseInsensitiveDict({
            "Authorization": f"Bearer {settings.api_key()}", "Accept": "application/json",
            "User-Agent": requests.utils.default_user_agent()})
        if settings.astria_workspace_id:
            self._headers["X-Workspace-Id"] = settings.astria_workspace_id
        # One pool for every thread of the process: as many connections as requests in flight.
        self._adapter = transport or HTTPAdapter(pool_connections=4,
                                                 pool_maxsize=settings.worker_http_concurrency)

    # --- the endpoints --------------------------------------------------------------------------
    def create_prompt(self, tune_id: int, fields: dict[str, Any]) -> list[Prompt]:
        """POST /tunes/{tune_id}/prompts once, with the documented `prompt[...]` form fields;
        the prompts it created (usually one)."""
        form = {
            f"prompt[{name}]": ("true" if value else "false") if isinstance(value, bool) else value
            for name, value in fields.items()
        }
        body = self._request(RequestKind.SUBMIT, "POST", f"/tunes/{tune_id}/prompts", data=form)
        return _as_prompts(body)

    def get_prompt(self, tune_id: int, prompt_id: int) -> Prompt:
        """GET /tunes/{tune_id}/prompts/{prompt_id}."""
        path = f"/tunes/{tune_id}/prompts/{prompt_id}"
        return _as_prompt(self._request(RequestKind.POLL, "GET", path), "GET")

    def get_tune(self, tune_id: int) -> Tune:
        """GET /tunes/{tune_id}: is its training over, when does it expire."""
        body = self._request(RequestKind.POLL, "GET", f"/tunes/{tune_id}")
        try:
            return Tune.model_validate(body)
        except ValidationError:
            raise TransientError("GET tune: answer is not a tune object") from None

    def list_prompts(self, tune_id: int, *, limit: int = 120, before_id: int | None = None
                     ) -> list[Prompt]:
        """GET /tunes/{tune_id}/prompts: newest first, `before_id` as the cursor."""
        params: dict[str, Any] = {"limit": limit}
        if before_id:
            params["before_id"] = before_id
        body = self._request(RequestKind.POLL, "GET", f"/tunes/{tune_id}/prompts", params=params)
        if not isinstance(body, list):
            raise TransientError("GET prompts: expected a list")
        return [prompt for prompt in map(read_prompt, body) if prompt is not None]

    def delete_prompt(self, tune_id: int, prompt_id: int) -> None:
        """DELETE /tunes/{tune_id}/prompts/{prompt_id}; a prompt already gone counts as deleted."""
        try:
            self._request(RequestKind.POLL, "DELETE", f"/tunes/{tune_id}/prompts/{prompt_id}")
        except AstriaRejected as exc:
            if exc.status != 404:
                raise

    # --- one request: send, then classify the answer --------------------------------------------
    def _request(self, kind: RequestKind, method: str, path: str, **kwargs: Any) -> Any:
        """One HTTP request; the decoded JSON body, or a typed AstriaError. Counted in the shared
        stats, and reported to the rate limiter: every answer but a 429 passed Astria's limit."""
        started = time.monotonic()
        outcome, retry_after = "error", None
        try:
            response = self._send(method, path, **kwargs)
            body = self._check(method, path, response)
            outcome = "2xx"
            return body
        except AstriaError as exc:
            outcome = str(exc.status) if exc.status else "network"
            retry_after = exc.retry_after if isinstance(exc, TransientError) else None
            raise
        finally:
            note(**{"http.request.method": method, "astria_queue.answer": outcome})
            if self._stats:
                self._stats.request(kind, method, outcome, time.monotonic() - started)
            if self._reports and outcome != "network":
                if outcome == "429":
                    self._reports.throttled(kind, started, retry_after)
                else:
                    self._reports.ok(kind, started)

    def _prepare(self, method: str, path: str, params: dict[str, Any] | None = None,
                 data: dict[str, Any] | None = None) -> requests.PreparedRequest:
        """requests' own PreparedRequest, built directly: the URL is ours (nothing to parse or
        re-quote) and there are no cookies, auth or hooks to merge."""
        request = requests.PreparedRequest()
        request.method = method
        request.url = self._base + path + (f"?{urlencode(params)}" if params else "")
        request.headers = self._headers.copy()
        request.hooks = {"response": []}
        request.prepare_body(data, None)
        return request

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        s = self._settings
        timeout = (s.astria_connect_timeout,
                   s.astria_read_timeout if method == "POST" else s.astria_poll_read_timeout)
        request = self._prepare(method, path, **kwargs)
        maybe_created = method == "POST"
        try:
            return self._adapter.send(request, timeout=timeout, verify=self._verify,
                                      proxies=self._proxies)
        except requests.ConnectTimeout:
            raise TransientError(f"{method} {path}: connect timeout", not_sent=True) from None
        except requests.Timeout:
            raise TransientError(f"{method} {path}: read timeout",
                                 maybe_created=maybe_created) from None
        except requests.ConnectionError as exc:
            # Refused before sending is safe; a drop after sending may have created the prompt.
            sent = not _nothing_sent(exc)
            raise TransientError(
                f"{method} {path}: connection error ({type(exc).__name__}"
                f"{'' if sent else ', nothing sent'})",
                maybe_created=maybe_created and sent, not_sent=not sent) from None

    @staticmethod
    def _check(method: str, path: str, response: requests.Response) -> Any:
        status = response.status_code
        if status == 429:
            raise TransientError(f"{method} {path}: 429 rate limited", status=429,
                                 retry_after=_retry_after(response))
        if status in _RETRIED_STATUSES:
            raise TransientError(
                f"{method} {path}: {status} {error_text(response)}", status=status,
                retry_after=_retry_after(response),
                maybe_created=method == "POST" and status in _AMBIGUOUS_STATUSES,
            )
        if not 200 <= status < 300:
            error = AstriaRejected(f"Astria {status}: {error_text(response)}")
            error.status = status
            raise error
        if status == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise TransientError(f"{method} {path}: {status} with a body that is not JSON",
                                 status=status, maybe_created=method == "POST") from None
