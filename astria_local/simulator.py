"""A stand-in for Astria's prompt API: a real HTTP server for tests, the demo and users' own tests.

It implements what `astria-api-facts.md` documents: create / get / list / delete prompts with
Bearer auth, `prompt[...]` form or `{"prompt": {...}}` JSON bodies, the `pti` and `faceid` 422s
with their base tunes, a generation delay, `user_error`, `cost_mc`, and `{"prompt": {...}}`
callbacks (to loopback hosts only).

Real conditions are knobs: a latency per request (mean and jitter), a share of slow answers (N
seconds, then a chosen status or the real answer), an account rate limit (counted as a token
bucket, per whole second or in any one second: `sim_limit`; its 429s with or without
Retry-After), and random 429s, 5xx, 504-after-create and garbage bodies. `/_sim/*` admin
endpoints expose counters and every prompt created, so that tests can count duplicates, and
change knobs at run time.
"""

from __future__ import annotations

import heapq
import ipaddress
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import requests

from astria_local.sim_account import USER_ERROR_MARKER, Account, SimConfig
from astria_local.sim_http import AstriaHandler, SimServer

__all__ = ["USER_ERROR_MARKER", "AstriaSimulator", "SimConfig"]


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    try:
        return all(
            ipaddress.ip_address(info[4][0]).is_loopback
            for info in socket.getaddrinfo(host, None)
        )
    except (OSError, ValueError):
        return False


class AstriaSimulator:
    """Run the simulator on a free loopback port: `with AstriaSimulator(cfg) as sim: sim.url`."""

    def __init__(self, config: SimConfig | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.config = config or SimConfig()
        self._server = SimServer((host, port), AstriaHandler)
        self._server.state = Account(self.config)
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._server.base_url = self.url
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._callbacks = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sim-callback")
        self._sessions = threading.local()
        self._opened: list[requests.Session] = []  #: every sender's, closed by `stop`

    def start(self) -> AstriaSimulator:
        for target in (self._server.serve_forever, self._deliver_callbacks):
            thread = threading.Thread(target=target, daemon=True, name="astria-simulator")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._server.state.lock:
            self._server.state.wakeup.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._callbacks.shutdown(wait=False, cancel_futures=True)
        # kept-alive connections would hold a receiver that is stopping until they time out
        with self._server.state.lock:
            opened, self._opened = self._opened, []
        for session in opened:
            session.close()

    def __enter__(self) -> AstriaSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Serve in the foreground until interrupted (the CLI's `simulator` command)."""
        self.start()
        try:
            while not self._stopping.wait(1):
                pass
        finally:
            self.stop()

    def _deliver_callbacks(self) -> None:
        state = self._server.state
        while not self._stopping.is_set():
            with state.lock:
                due: list[dict[str, Any]] = []
                now = time.monotonic()
                while state.pending_callbacks and state.pending_callbacks[0][0] <= now:
                    _, prompt_id = heapq.heappop(state.pending_callbacks)
                    due.append(state.view(prompt_id, self.url))
                if not due:
                    delay = state.pending_callbacks[0][0] - now if state.pending_callbacks else 1
                    state.wakeup.wait(timeout=max(0.01, min(delay, 1)))
                    continue
            for prompt in due:
                self._callbacks.submit(self._post_callback, prompt)

    def _post_callback(self, prompt: dict[str, Any]) -> None:
        url = str(prompt.get("callback") or "")
        if not url.startswith(("http://", "https://")) or not _is_loopback(url):
            return  # like Astria, never retried; unlike it, only loopback hosts are called
        session = getattr(self._sessions, "session", None)
        if session is None:  # one kept-alive session per sender thread: cheap on shared cores
            session = self._sessions.session = requests.Session()
            with self._server.state.lock:
                self._opened.append(session)
        try:
            session.post(url, json={"prompt": prompt}, timeout=5)
            outcome = "callback_sent"
        except requests.RequestException:
            outcome = "callback_failed"
        with self._server.state.lock:
            self._server.state.count(outcome)

    # --- what tests look at ---------------------------------------------------------------
    @property
    def counters(self) -> dict[str, int]:
        with self._server.state.lock:
            return dict(self._server.state.counters)

    def prompts(self) -> list[dict[str, Any]]:
        with self._server.state.lock:
            return [self._server.state.view(pid, self.url) for pid in self._server.state.prompts]
