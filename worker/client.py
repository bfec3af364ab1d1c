"""`AstriaClient`: Astria's prompt endpoints over `requests`, typed errors, tenacity retries.

Reads (GET) are retried here. A POST is made exactly once per call: whether to POST again is the
pipeline's decision, because a retried POST can create a second billed prompt.
"""

from __future__ import annotations

import email.utils
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from worker.errors import AstriaError, AstriaRejected, AstriaUnavailable
from worker.ratelimit import RateLimiter, RequestKind
from worker.settings import Settings
from worker.stats import Stats

Prompt = dict[str, Any]
T = TypeVar("T")

_RETRIED_STATUSES = {429, 500, 502, 503, 504}
#: Statuses after which a POST may or may not have created the prompt.
_AMBIGUOUS_STATUSES = {500, 502, 504}


class TransientError(AstriaUnavailable):
    """A failure worth retrying. `maybe_created` tells a POST's caller to look before re-posting."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None,
        maybe_created: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.maybe_created = maybe_created


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
        return response.text[:300].strip() or response.reason
    if isinstance(body, dict):
        if "error" in body:
            return str(body["error"])
        parts = [
            f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in body.items()
        ]
        return "; ".join(parts) or response.reason
    return str(body)[:300]


def _wait(settings: Settings) -> Callable[[RetryCallState], float]:
    backoff = wait_random_exponential(
        multiplier=settings.astria_retry_initial_delay, max=settings.astria_retry_max_delay
    )

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            return min(exc.retry_after, settings.astria_retry_max_seconds)
        return float(backoff(state))

    return wait


def retrying(settings: Settings) -> Retrying:
    """The retry policy: TransientError only, exponential backoff with jitter (or `Retry-After`),
    bounded by ASTRIA_RETRY_ATTEMPTS and ASTRIA_RETRY_MAX_SECONDS."""
    return Retrying(
        retry=retry_if_exception_type(TransientError),
        stop=stop_after_attempt(settings.astria_retry_attempts)
        | stop_after_delay(settings.astria_retry_max_seconds),
        wait=_wait(settings),
        reraise=True,
    )


class AstriaClient:
    """Talks to ASTRIA_BASE_URL only, with the Bearer key from settings."""

    def __init__(self, settings: Settings, limiter: RateLimiter | None = None,
                 stats: Stats | None = None) -> None:
        self._settings = settings
        self._limiter = limiter
        self._stats = stats
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # Read proxy and CA settings from the environment once, not on every request.
            session.trust_env = False
            session.proxies.update(
                requests.utils.get_environ_proxies(self._settings.astria_base_url))
            session.verify = (os.environ.get("REQUESTS_CA_BUNDLE")
                              or os.environ.get("CURL_CA_BUNDLE") or True)
            session.headers["Authorization"] = f"Bearer {self._settings.api_key()}"
            session.headers["Accept"] = "application/json"
            if self._settings.astria_workspace_id:
                session.headers["X-Workspace-Id"] = self._settings.astria_workspace_id
            self._local.session = session
        return session

    def _request(self, kind: RequestKind, method: str, path: str, **kwargs: Any) -> Any:
        """One HTTP request, counted in the shared stats."""
        started = time.monotonic()
        outcome = "error"
        try:
            body = self._attempt(kind, method, path, **kwargs)
            outcome = "2xx"
            return body
        except AstriaError as exc:
            outcome = str(exc.status) if exc.status else "network"
            raise
        finally:
            if self._stats:
                self._stats.request(method, outcome, time.monotonic() - started)

    def _attempt(self, kind: RequestKind, method: str, path: str, **kwargs: Any) -> Any:
        """One HTTP request; returns the decoded JSON body or raises a typed AstriaError."""
        is_post = method == "POST"
        if self._limiter:
            self._limiter.acquire(kind)
        url = self._settings.astria_base_url.rstrip("/") + path
        timeout = (self._settings.astria_connect_timeout, self._settings.astria_read_timeout)
        session = self._session()
        # Prepared with the session's headers only: Session.request would also merge cookies,
        # auth and hooks we never use, a third of the client's CPU per request.
        request = requests.Request(method, url, headers=session.headers, **kwargs).prepare()
        try:
            response = session.send(request, timeout=timeout, allow_redirects=False)
        except requests.ConnectTimeout:
            raise TransientError(f"{method} {path}: connect timeout") from None
        except requests.Timeout:
            raise TransientError(
                f"{method} {path}: read timeout", maybe_created=is_post
            ) from None
        except requests.ConnectionError as exc:
            # Refused before sending is safe; a drop after sending may have created the prompt.
            raise TransientError(
                f"{method} {path}: connection error ({type(exc).__name__})", maybe_created=is_post
            ) from None
        status = response.status_code
        if status == 429:
            retry_after = _retry_after(response)
            if self._limiter:
                self._limiter.throttled(retry_after)
            raise TransientError(
                f"{method} {path}: 429 rate limited", status=429, retry_after=retry_after
            )
        if status in _RETRIED_STATUSES:
            raise TransientError(
                f"{method} {path}: {status} {error_text(response)}", status=status,
                maybe_created=is_post and status in _AMBIGUOUS_STATUSES,
            )
        if not 200 <= status < 300:
            error = AstriaRejected(f"Astria {status}: {error_text(response)}")
            error.status = status
            raise error
        if self._limiter:
            self._limiter.succeeded()
        try:
            body = response.json()
        except ValueError:
            raise TransientError(
                f"{method} {path}: {status} with a body that is not JSON", status=status,
                maybe_created=is_post,
            ) from None
        return body

    def _read(self, path: str, params: dict[str, Any] | None = None) -> Any:
        for attempt in retrying(self._settings):
            with attempt:
                return self._request("poll", "GET", path, params=params)
        raise AssertionError("unreachable")  # pragma: no cover

    def create_prompt(self, tune_id: int, fields: dict[str, Any]) -> Prompt:
        """POST /tunes/{tune_id}/prompts once, with the documented `prompt[...]` form fields."""
        form = {
            f"prompt[{name}]": ("true" if value else "false") if isinstance(value, bool) else value
            for name, value in fields.items()
        }
        prompt = self._request("submit", "POST", f"/tunes/{tune_id}/prompts", data=form)
        return _as_prompt(prompt, "POST")

    def get_prompt(self, tune_id: int, prompt_id: int) -> Prompt:
        """GET /tunes/{tune_id}/prompts/{prompt_id}, retried on transient errors."""
        return _as_prompt(self._read(f"/tunes/{tune_id}/prompts/{prompt_id}"), "GET")

    def list_prompts(
        self, tune_id: int, *, limit: int = 120, before_id: int | None = None
    ) -> list[Prompt]:
        """GET /tunes/{tune_id}/prompts, newest first, retried on transient errors."""
        params: dict[str, Any] = {"limit": limit}
        if before_id is not None:
            params["before_id"] = before_id
        body = self._read(f"/tunes/{tune_id}/prompts", params)
        if not isinstance(body, list):
            raise TransientError("GET prompts: expected a list")
        return [p for p in body if isinstance(p, dict) and "id" in p]


def _as_prompt(body: Any, method: str) -> Prompt:
    """A prompt object; Astria's own CLI unwraps a one-element list, so we accept both shapes."""
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    if not isinstance(body, dict) or not isinstance(body.get("id"), int):
        raise TransientError(
            f"{method}: answer is not a prompt object", maybe_created=method == "POST"
        )
    return body


__all__ = ["AstriaClient", "AstriaError", "Prompt", "TransientError", "error_text", "retrying"]
