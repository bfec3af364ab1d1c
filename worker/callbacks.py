"""`astria-callbacks`: the HTTP receiver that completes jobs the moment Astria calls back.

Astria POSTs `{"prompt": {...}}` to the prompt's `callback` URL when it is done. With
ASTRIA_CALLBACK_URL set, workers send `ASTRIA_CALLBACK_URL?token=<job token>`; the token is a
per-job secret (Astria sends no signature), so a request without a known token changes nothing.
Polling stays as a slower fallback because Astria does not retry callbacks. A spec's own `callback`
keeps working: after completing the job, the receiver forwards Astria's body to it, once.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from worker import pipeline

log = logging.getLogger("astria.callbacks")
MAX_BODY = 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    #: Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm holds
    #: the body until the client's delayed ACK, 40 ms per keep-alive request.
    disable_nagle_algorithm = True
    server: CallbackServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self._send(200, {"ok": True})  # health check

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(413, {"error": "body too large"})
            return
        body = self.rfile.read(length)
        token = parse_qs(urlsplit(self.path).query).get("token", [""])[0]
        jobs = pipeline.runtime().jobs
        job_id = jobs.job_for_token(token) if token else None
        if job_id is None:
            self._send(404, {"error": "unknown token"})
            return
        try:
            payload = json.loads(body)
            prompt = payload["prompt"]
            if not isinstance(prompt, dict):
                raise TypeError("prompt is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            self._send(400, {"error": f"expected {{\"prompt\": {{...}}}}: {exc}"})
            return
        completed = pipeline.complete_from_callback(job_id, prompt)
        self._send(200, {"ok": True, "completed": completed})
        log.info("callback for job %s (completed: %s)", job_id, completed,
                 extra={"job_id": job_id, "prompt_id": prompt.get("id")})
        user_callback = jobs.load(job_id).spec.get("callback")
        if user_callback:
            self.server.forwarder.submit(_forward, str(user_callback), body)


def _forward(url: str, body: bytes) -> None:
    """Pass Astria's callback on to the producer's own URL, once, like Astria itself."""
    try:
        requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10,
                      allow_redirects=False)
    except requests.RequestException as exc:
        log.warning("forwarding a callback failed: %s", type(exc).__name__)


class CallbackServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, host: str, port: int) -> None:
        super().__init__((host, port), _Handler)
        self.forwarder = ThreadPoolExecutor(max_workers=8, thread_name_prefix="callback-forward")


def serve(host: str, port: int) -> None:
    """Run the receiver in the foreground."""
    pipeline.runtime()  # fail fast on bad settings
    server = CallbackServer(host, port)
    log.info("callback receiver on %s:%s", host, server.server_address[1])
    try:
        server.serve_forever()
    finally:
        server.server_close()
