"""Astria answered in-process: a requests transport adapter (the client's seam, as httpx's
`MockTransport` is httpx's) that hands every request to a function of the test's and keeps it.

The function gets a `Call` (method, path, query, form) and returns `(status, body)` or
`(status, body, headers)`, or raises what the network would (`requests.ConnectionError`,
`requests.ReadTimeout`). The process tests talk to the simulator over real HTTP; these answer
what the simulator cannot be told to answer exactly: a listing whose second page holds the
prompt of an unanswered POST, a refused connection before anything was sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import MaxRetryError, NewConnectionError


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    query: Mapping[str, str]
    form: Mapping[str, str]


Answer = tuple[int, Any] | tuple[int, Any, Mapping[str, str]]


class ScriptedAstria(BaseAdapter):
    def __init__(self, answer: Callable[[Call], Answer]) -> None:
        super().__init__()
        self._answer = answer
        self.calls: list[Call] = []

    def send(self, request: requests.PreparedRequest, stream: bool = False,  # type: ignore[override]
             timeout: Any = None, verify: Any = True, cert: Any = None,
             proxies: Any = None) -> requests.Response:
        url = urlsplit(request.url or "")
        body = request.body.decode() if isinstance(request.body, bytes) else request.body or ""
        call = Call(request.method or "", url.path,
                    {k: v[0] for k, v in parse_qs(url.query).items()},
                    {k: v[0] for k, v in parse_qs(body).items()})
        self.calls.append(call)
        status, content, *headers = self._answer(call)
        response = requests.Response()
        response.status_code = status
        response._content = json.dumps(content).encode()
        response.headers = CaseInsensitiveDict({"Content-Type": "application/json",
                                                **(headers[0] if headers else {})})
        response.url, response.request, response.reason = request.url or "", request, "scripted"
        return response

    def close(self) -> None:
        pass

    def posts(self) -> list[Call]:
        return [call for call in self.calls if call.method == "POST"]


def refused() -> requests.ConnectionError:
    """What requests raises when the connection is refused: nothing was sent."""
    return requests.ConnectionError(MaxRetryError(None, "/",  # type: ignore[arg-type]
                                                  NewConnectionError(None, "refused")))  # type: ignore[arg-type]
