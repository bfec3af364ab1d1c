"""The simulator's HTTP side: Astria's prompt endpoints, with latency, slow answers, the account
rate limit and injected faults, and the `/_sim/*` admin endpoints tests use."""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import re
import sys
import time
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from astria_local.sim_account import Account, iso, now_iso

_INT_FIELDS = {"num_images", "seed", "steps", "w", "h"}
_FLOAT_FIELDS = {"cfg_scale", "denoising_strength", "controlnet_conditioning_scale"}
_PROMPT_PATH = re.compile(r"^/tunes/(\d+)/prompts/?$")
def image_bytes(path: str, kib: int = 16) -> bytes:
    """A generated image's bytes (`kib` KiB after a JPEG's start marker), from its path."""
    return b"\xff\xd8\xff\xe0" + hashlib.sha256(path.encode()).digest() * 32 * kib


_TUNE_PATH = re.compile(r"^/tunes/(\d+)(?:\.json)?$")
_ONE_PROMPT_PATH = re.compile(r"^/(?:tunes/\d+/)?prompts/(\d+)(?:\.json)?$")


class AstriaHandler(BaseHTTPRequestHandler):
    """Astria's prompt endpoints, and the `/_sim/*` admin endpoints."""

    protocol_version = "HTTP/1.1"
    #: Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm holds
    #: the body until the client's delayed ACK, 40 ms per keep-alive request.
    disable_nagle_algorithm = True
    server: SimServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet by default
        pass

    # --- plumbing -------------------------------------------------------------------------
    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        if getattr(self, "_in_flight", False):  # an Astria request ends with its answer
            with self.state.lock:
                self.state.inflight -= 1
            self._in_flight = False
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = dict(headers or {})
        self.send_response(status)
        self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(raw)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    @property
    def state(self) -> Account:
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
            state.inflight += 1
            state.counters["max_in_flight"] = max(state.counters.get("max_in_flight", 0),
                                                  state.inflight)
            self._in_flight = True
            limited = (state.take_token()
                       if cfg.rate_limit_methods.upper() in ("ALL", method) else None)
            if limited is not None:
                state.count("throttled")
            delay = state.latency()
            faulty = cfg.fault_methods.upper() in ("ALL", method)
            slow = faulty and state.roll(cfg.fault_slow)
            throttle = faulty and state.roll(cfg.fault_429)
            error = faulty and state.roll(cfg.fault_5xx)
            status = cfg.fault_5xx_status or state.rng.choice([500, 502, 503])
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
            elif tune := _TUNE_PATH.match(parts.path):
                self.state.count("get_tune")
                body = self.state.tune(int(tune.group(1)))
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
        for tunes, model_type in ((cfg.pti_tunes, "pti"), (cfg.faceid_tunes, "faceid"),
                                  (cfg.flux_tunes, "lora")):
            if tune_id in tunes:
                with state.lock:
                    state.count("rejected_422")
                return 422, {"error": f"model_type={model_type} is not supported. Use a "
                                      "checkpoint instead"}
        if not text.strip():
            return 422, {"text": ["can't be blank"]}
        num_images = fields.get("num_images", 1)
        if not isinstance(num_images, int) or not 1 <= num_images <= 8:
            return 422, {"num_images": ["must be between 1 and 8"]}
        if tune_id == cfg.sdxl_base_tune_id and len(re.findall(r"<lora:", text)) > 1:
            return 422, {"error": "With SDXL you cannot combine multiple LoRAs"}
        with state.lock:
            made = [self._prompt(tune_id, text, num_images, fields)
                    for _ in range(cfg.list_answer_tunes.get(tune_id, 1))]
            state.wakeup.notify()
        return 201, made if tune_id in cfg.list_answer_tunes else made[0]

    def _prompt(self, tune_id: int, text: str, num_images: int,
                fields: dict[str, Any]) -> dict[str, Any]:
        """Create one prompt (the account's lock held)."""
        cfg, state = self.state.config, self.state
        state.next_id += 1
        prompt_id = state.next_id
        now = now_iso()
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
        if tune_id in cfg.expired_tunes:
            generation = float("inf")
        # a prompt on a tune still training starts when the training ends
        starts = max(time.time(), state.tune_trained_at(tune_id)) - time.time()
        state.ready_at[prompt_id] = time.monotonic() + starts + generation
        state.trained_at[prompt_id] = iso(time.time() + starts + min(generation, 10**9))
        state.count("created")
        if prompt.get("callback"):
            heapq.heappush(state.pending_callbacks, (state.ready_at[prompt_id], prompt_id))
        return dict(prompt)

    # --- admin ----------------------------------------------------------------------------
    def _admin_get(self, path: str) -> None:
        if path.startswith("/_sim/images/"):  # an image's bytes: the same for the same URL
            self._send(200, image_bytes(path, self.state.config.image_kib),
                       {"Content-Type": "image/jpeg"})
            return
        with self.state.lock:
            if path == "/_sim/stats":
                body: Any = {"counters": dict(self.state.counters),
                             "prompts": len(self.state.prompts)}
            elif path == "/_sim/prompts":
                body = [self.state.view(pid, self.server.base_url) for pid in self.state.prompts]
            elif path == "/_sim/config":
                body = {k: sorted(v) if isinstance(v, set) else v
                        for k, v in asdict(self.state.config).items() if k != "api_key"}
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
                    if key in ("pti_tunes", "faceid_tunes", "flux_tunes"):
                        value = set(value)
                    elif key == "generation_seconds_by_tune":
                        value = {int(k): float(v) for k, v in value.items()}
                    elif key == "list_answer_tunes":
                        value = {int(k): int(v) for k, v in value.items()}
                    setattr(self.state.config, key, value)
        except (ValueError, TypeError, AttributeError) as exc:
            self._send(422, {"error": str(exc)})
            return
        self._send(200, {"ok": True})


class SimServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    state: Account
    base_url: str

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up on a slow answer is what slow answers are for; not an error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)
