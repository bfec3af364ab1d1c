"""A stand-in for Astria's prompt API: a real HTTP server for tests, the demo and users' own tests.

It implements what `astria-api-facts.md` documents: create / get / list / delete prompts with
Bearer auth, `prompt[...]` form or `{"prompt": {...}}` JSON bodies, the `pti` and `faceid` 422s
with their base tunes, a generation delay, `user_error`, `cost_mc`, and `{"prompt": {...}}`
callbacks (to loopback hosts only).

Real conditions are knobs: a latency per request (mean and jitter), a share of slow answers (N
seconds, then a chosen status or the real answer), an account rate limit (a token bucket that
answers 429, with or without Retry-After), and random 429s, 5xx, 504-after-create and garbage
bodies. `/_sim/*` admin endpoints expose counters and every prompt created, so that tests can
count duplicates, and change knobs at run time.
"""

from __future__ import annotations

import heapq
import ipaddress
import json
import math
import random
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

USER_ERROR_MARKER = "SIMULATE_USER_ERROR"
_INT_FIELDS = {"num_images", "seed", "steps", "w", "h"}
_FLOAT_FIELDS = {"cfg_scale", "denoising_strength", "controlnet_conditioning_scale"}
_PROMPT_PATH = re.compile(r"^/tunes/(\d+)/prompts/?$")
_ONE_PROMPT_PATH = re.compile(r"^/(?:tunes/\d+/)?prompts/(\d+)(?:\.json)?$")


@dataclass
class SimConfig:
    """Behaviour of the simulator; fault knobs are probabilities per request (0..1)."""

    api_key: str = "sim-key"
    generation_seconds: float = 2.0
    #: Per-tune generation time, overriding generation_seconds for those tunes.
    generation_seconds_by_tune: dict[int, float] = field(default_factory=dict)
    pti_tunes: set[int] = field(default_factory=set)
    faceid_tunes: set[int] = field(default_factory=set)
    sdxl_base_tune_id: int = 666678
    faceid_base_tune_id: int = 690204
    fault_429: float = 0.0
    fault_5xx: float = 0.0
    fault_504_after_create: float = 0.0
    fault_garbage: float = 0.0
    fault_slow: float = 0.0
    slow_seconds: float = 1.0
    #: What a slow answer ends with: None for the real answer, else this status (a POST answered
    #: 500, 502 or 504 has created its prompt first, as Astria's 504 "would probably have").
    slow_status: int | None = None
    #: Retry-After (seconds) sent with the random 429s of fault_429 (None: no header).
    retry_after: float | None = 0.2
    #: Every request takes this long (seconds) before its answer, +/- latency_jitter of it.
    latency_seconds: float = 0.0
    latency_jitter: float = 0.5
    #: Account rate limit: requests per second (0: none), a token bucket of rate_limit_burst
    #: (default: one second's worth) answering 429 when empty.
    rate_limit: float = 0.0
    rate_limit_burst: float | None = None
    #: Which requests the account limit counts: "POST" (creating prompts) or "ALL".
    rate_limit_methods: str = "ALL"
    #: Whether its 429s carry Retry-After (whole seconds until the next token, at least 1).
    rate_limit_retry_after: bool = True
    rng_seed: int | None = None


def _iso(timestamp: float) -> str:
    return (datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"))


def _now_iso() -> str:
    return _iso(time.time())


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    try:
        return all(
            ipaddress.ip_address(info[4][0]).is_loopback
            for info in socket.getaddrinfo(host, None)
        )
    except (OSError, ValueError):
        return False


class _State:
    """Prompts and counters, behind one lock."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.prompts: dict[int, dict[str, Any]] = {}
        self.ready_at: dict[int, float] = {}
        self.trained_at: dict[int, str] = {}
        self.next_id = 1000
        self.counters: dict[str, int] = {}
        self.rng = random.Random(config.rng_seed)
        self.pending_callbacks: list[tuple[float, int]] = []
        self.wakeup = threading.Condition(self.lock)
        self.bucket: float | None = None
        self.bucket_at = time.monotonic()

    def take_token(self) -> float | None:
        """The account limit: None when the request may pass, else seconds until a token."""
        cfg = self.config
        if cfg.rate_limit <= 0:
            return None
        burst = cfg.rate_limit_burst or max(1.0, cfg.rate_limit)
        now = time.monotonic()
        tokens = burst if self.bucket is None else self.bucket
        self.bucket = min(burst, tokens + (now - self.bucket_at) * cfg.rate_limit)
        self.bucket_at = now
        if self.bucket >= 1:
            self.bucket -= 1
            return None
        return (1 - self.bucket) / cfg.rate_limit

    def latency(self) -> float:
        cfg = self.config
        if cfg.latency_seconds <= 0:
            return 0.0
        spread = cfg.latency_seconds * cfg.latency_jitter
        return max(0.0, self.rng.uniform(cfg.latency_seconds - spread,
                                         cfg.latency_seconds + spread))

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def roll(self, probability: float) -> bool:
        return probability > 0 and self.rng.random() < probability

    def view(self, prompt_id: int, base_url: str) -> dict[str, Any]:
        """The prompt as Astria shows it now: images or user_error once generation time passed."""
        prompt = dict(self.prompts[prompt_id])
        if time.monotonic() >= self.ready_at[prompt_id]:
            prompt["trained_at"] = prompt["updated_at"] = self.trained_at[prompt_id]
            if USER_ERROR_MARKER in prompt["text"]:
                prompt["user_error"] = "Simulated failure: the prompt could not be generated"
            else:
                prompt["images"] = [
                    f"{base_url}/_sim/images/{prompt_id}/{i}.jpg"
                    for i in range(int(prompt.get("num_images") or 1))
                ]
        return prompt


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    #: Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm holds
    #: the body until the client's delayed ACK, 40 ms per keep-alive request.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet by default
        pass

    # --- plumbing -------------------------------------------------------------------------
    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    @property
    def state(self) -> _State:
        return self.server.state

    def _authorized(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {self.state.config.api_key}"

    def _faults_before(self, method: str) -> bool:
        """The account limit, latency, slow answers, random 429s and 5xx, which all happen
        before any work; True if the request was answered here. A slow answer that ends with a
        status other than the real answer is answered after the work (`_slow_status`)."""
        state, cfg = self.state, self.state.config
        with state.lock:
            state.count(f"requests_{method}")
            limited = (state.take_token()
                       if cfg.rate_limit_methods.upper() in ("ALL", method) else None)
            if limited is not None:
                state.count("throttled")
            delay = state.latency()
            slow = state.roll(cfg.fault_slow)
            throttle = state.roll(cfg.fault_429)
            error = state.roll(cfg.fault_5xx)
            status = state.rng.choice([500, 502, 503])
            for name, hit in (("slow", slow), ("429", throttle), ("5xx", error)):
                if hit:
                    state.count(f"fault_{name}")
        self.slow_status = cfg.slow_status if slow else None
        time.sleep(delay + (cfg.slow_seconds if slow else 0.0))
        if limited is not None:
            headers = ({"Retry-After": str(max(1, math.ceil(limited)))}
                       if cfg.rate_limit_retry_after else {})
            self._send(429, {"error": "Rate limit exceeded"}, headers)
            return True
        if throttle:
            headers = {"Retry-After": str(cfg.retry_after)} if cfg.retry_after is not None else {}
            self._send(429, {"error": "Too many requests"}, headers)
            return True
        if error:
            self._send(status, {"error": f"Simulated {status}"})
            return True
        if self.slow_status is not None and self.slow_status not in (500, 502, 504):
            self._send(self.slow_status, {"error": f"Simulated slow {self.slow_status}"})
            return True
        return False

    # --- routes ---------------------------------------------------------------------------
    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path.startswith("/_sim/"):
            self._admin_get(parts.path)
            return
        if not self._authorized():
            self._send(401, {"error": "Unauthorized"})
            return
        if self._faults_before("GET"):
            return
        if self.slow_status is not None:
            self._send(self.slow_status, {"error": f"Simulated slow {self.slow_status}"})
            return
        if self._garbage():
            return
        one = _ONE_PROMPT_PATH.match(parts.path)
        listing = _PROMPT_PATH.match(parts.path) or re.match(r"^/prompts/?$", parts.path)
        with self.state.lock:
            if one:
                self.state.count("get")
                prompt_id = int(one.group(1))
                if self.state.prompts.get(prompt_id, {"deleted": True}).get("deleted"):
                    body: Any = None
                else:
                    body = self.state.view(prompt_id, self.server.base_url)
            elif listing:
                self.state.count("list")
                body = self._list(listing, parse_qs(parts.query))
            else:
                body = None
        if body is None:
            self._send(404, {"error": "Not found"})
        else:
            self._send(200, body)

    def _list(self, match: re.Match[str], query: dict[str, list[str]]) -> list[dict[str, Any]]:
        limit = min(120, int(query.get("limit", ["20"])[0]))
        before = int(query["before_id"][0]) if "before_id" in query else None
        tune = int(match.group(1)) if match.groups() else None
        ids = sorted(self.state.prompts, reverse=True)
        out = []
        for pid in ids:
            if before is not None and pid >= before:
                continue
            if tune is not None and self.state.prompts[pid]["tune_id"] != tune:
                continue
            if self.state.prompts[pid].get("deleted"):
                continue
            out.append(self.state.view(pid, self.server.base_url))
            if len(out) >= limit:
                break
        return out

    def _garbage(self) -> bool:
        with self.state.lock:
            hit = self.state.roll(self.state.config.fault_garbage)
            if hit:
                self.state.count("fault_garbage")
        if hit:
            self._send(200, b"<html>502 Bad Gateway</html>")
        return hit

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        body = self._body()
        if parts.path.startswith("/_sim/"):
            self._admin_post(parts.path, body)
            return
        if not self._authorized():
            self._send(401, {"error": "Unauthorized"})
            return
        match = _PROMPT_PATH.match(parts.path)
        if not match:
            self._send(404, {"error": "Not found"})
            return
        if self._faults_before("POST"):
            return
        fields = self._fields(body)
        tune_id = int(match.group(1))
        status, answer = self._create(tune_id, fields)
        if status != 201:
            self._send(status, answer)
            return
        if self.slow_status is not None:  # created, then a gateway gave up on the answer
            self._send(self.slow_status, {"error": f"Simulated slow {self.slow_status}"})
            return
        cfg = self.state.config
        with self.state.lock:
            after_504 = self.state.roll(cfg.fault_504_after_create)
            garbage = not after_504 and self.state.roll(cfg.fault_garbage)
            if after_504:
                self.state.count("fault_504_after_create")
            if garbage:
                self.state.count("fault_garbage")
        if after_504:
            self._send(504, {"error": "Gateway timeout"})
        elif garbage:
            self._send(201, b"<html>upstream answered nonsense</html>")
        else:
            self._send(201, answer)

    def do_DELETE(self) -> None:
        parts = urlsplit(self.path)
        if not self._authorized():
            self._send(401, {"error": "Unauthorized"})
            return
        one = _ONE_PROMPT_PATH.match(parts.path)
        if not one:
            self._send(404, {"error": "Not found"})
            return
        if self._faults_before("DELETE"):
            return
        with self.state.lock:
            prompt = self.state.prompts.get(int(one.group(1)))
            if prompt is not None and prompt.get("deleted"):
                prompt = None
            if prompt is not None:
                prompt["deleted"] = True
                self.state.count("deleted")
        self._send(200 if prompt is not None else 404,
                   {"ok": True} if prompt is not None else {"error": "Not found"})

    def _fields(self, body: bytes) -> dict[str, Any]:
        if self.headers.get("Content-Type", "").startswith("application/json"):
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                return {}
            prompt = data.get("prompt", {}) if isinstance(data, dict) else {}
            return prompt if isinstance(prompt, dict) else {}
        fields: dict[str, Any] = {}
        for key, values in parse_qs(body.decode(), keep_blank_values=True).items():
            m = re.fullmatch(r"prompt\[(\w+)\]", key)
            if not m:
                continue
            name, value = m.group(1), values[-1]
            if value in ("true", "false"):
                fields[name] = value == "true"
            elif name in _INT_FIELDS and value.lstrip("-").isdigit():
                fields[name] = int(value)
            elif name in _FLOAT_FIELDS:
                try:
                    fields[name] = float(value)
                except ValueError:
                    fields[name] = value
            else:
                fields[name] = value
        return fields

    def _create(self, tune_id: int, fields: dict[str, Any]) -> tuple[int, Any]:
        cfg, state = self.state.config, self.state
        text = str(fields.get("text") or "")
        if tune_id in cfg.pti_tunes or tune_id in cfg.faceid_tunes:
            with state.lock:
                state.count("rejected_422")
        if tune_id in cfg.pti_tunes:
            return 422, {"error": "model_type=pti is not supported. Use a checkpoint instead"}
        if tune_id in cfg.faceid_tunes:
            return 422, {"error": "model_type=faceid is not supported. Use a checkpoint instead"}
        if not text.strip():
            return 422, {"text": ["can't be blank"]}
        num_images = fields.get("num_images", 1)
        if not isinstance(num_images, int) or not 1 <= num_images <= 8:
            return 422, {"num_images": ["must be between 1 and 8"]}
        if tune_id == cfg.sdxl_base_tune_id and len(re.findall(r"<lora:", text)) > 1:
            return 422, {"error": "With SDXL you cannot combine multiple LoRAs"}
        with state.lock:
            state.next_id += 1
            prompt_id = state.next_id
            now = _now_iso()
            prompt: dict[str, Any] = {
                "id": prompt_id, "tune_id": tune_id, "text": text,
                "negative_prompt": fields.get("negative_prompt", ""),
                "callback": fields.get("callback"), "cfg_scale": fields.get("cfg_scale"),
                "steps": fields.get("steps"),
                "seed": fields.get("seed", state.rng.randrange(2**32)),
                "num_images": num_images, "trained_at": None, "started_training_at": now,
                "created_at": now, "updated_at": now, "images": [], "user_error": None,
                "url": f"{self.server.base_url}/tunes/{tune_id}/prompts/{prompt_id}.json",
                "cost_mc": 1000,
                **{k: v for k, v in fields.items() if k not in ("text",)},
            }
            prompt["id"], prompt["tune_id"] = prompt_id, tune_id
            state.prompts[prompt_id] = prompt
            generation = cfg.generation_seconds_by_tune.get(tune_id, cfg.generation_seconds)
            state.ready_at[prompt_id] = time.monotonic() + generation
            state.trained_at[prompt_id] = _iso(time.time() + generation)
            state.count("created")
            if prompt.get("callback"):
                heapq.heappush(state.pending_callbacks, (state.ready_at[prompt_id], prompt_id))
                state.wakeup.notify()
            return 201, dict(prompt)

    # --- admin ----------------------------------------------------------------------------
    def _admin_get(self, path: str) -> None:
        with self.state.lock:
            if path == "/_sim/stats":
                body: Any = {"counters": dict(self.state.counters),
                             "prompts": len(self.state.prompts)}
            elif path == "/_sim/prompts":
                body = [self.state.view(pid, self.server.base_url) for pid in self.state.prompts]
            elif path == "/_sim/config":
                body = {k: sorted(v) if isinstance(v, set) else v
                        for k, v in asdict(self.state.config).items() if k != "api_key"}
            elif path.startswith("/_sim/images/"):
                body = {"image": path}
            else:
                body = None
        self._send(200 if body is not None else 404, body or {"error": "Not found"})

    def _admin_post(self, path: str, raw: bytes) -> None:
        if path != "/_sim/config":
            self._send(404, {"error": "Not found"})
            return
        try:
            changes = json.loads(raw or b"{}")
            with self.state.lock:
                for key, value in changes.items():
                    if key == "api_key" or not hasattr(self.state.config, key):
                        raise ValueError(f"unknown knob {key}")
                    if key in ("pti_tunes", "faceid_tunes"):
                        value = set(value)
                    elif key == "generation_seconds_by_tune":
                        value = {int(k): float(v) for k, v in value.items()}
                    setattr(self.state.config, key, value)
        except (ValueError, TypeError, AttributeError) as exc:
            self._send(422, {"error": str(exc)})
            return
        self._send(200, {"ok": True})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    state: _State
    base_url: str


class AstriaSimulator:
    """Run the simulator on a free loopback port: `with AstriaSimulator(cfg) as sim: sim.url`."""

    def __init__(self, config: SimConfig | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.config = config or SimConfig()
        self._server = _Server((host, port), _Handler)
        self._server.state = _State(self.config)
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._server.base_url = self.url
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._callbacks = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sim-callback")

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
        try:
            requests.post(url, json={"prompt": prompt}, timeout=5)
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
