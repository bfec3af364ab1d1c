"""A producer's webhook endpoint on loopback, for tests and the benchmark: well-behaved, failing,
or hostile on purpose.

    with WebhookEndpoint(secret) as hooks:            # verifies, answers 204
    with WebhookEndpoint(secret, failures=2) as hooks:  # 500 twice per webhook-id, then 204
    with WebhookEndpoint(trickle=True) as hooks:      # a byte every half second, for ever

It counts what a test asserts on: connections, the most open at once (a connection counts as open
until the client hangs up, which a trickling endpoint notices at once), attempts and bodies per
webhook-id, acknowledged events, and signatures that did not verify.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook


class WebhookEndpoint:
    def __init__(self, secret: str | None = None, *, failures: int = 0,
                 trickle: bool = False) -> None:
        self.failures = failures
        self.connections = self.open = self.most_open = 0
        self.attempts: Counter[str] = Counter()
        self.acknowledged: dict[str, Any] = {}
        self.headers: dict[str, dict[str, str]] = {}  #: of each acknowledged webhook, lower-case
        self.bodies: defaultdict[str, set[bytes]] = defaultdict(set)
        self.bad_signatures = 0
        lock, endpoint = threading.Lock(), self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with lock:
                    endpoint.connections += 1
                    endpoint.open += 1
                    endpoint.most_open = max(endpoint.most_open, endpoint.open)

            def finish(self) -> None:
                with lock:
                    endpoint.open -= 1
                super().finish()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if trickle:
                    self._trickle()
                    return
                message = self.headers.get("webhook-id", "")
                try:
                    event = Webhook(secret or "").verify(body, dict(self.headers))
                except Exception:
                    endpoint.bad_signatures += 1
                    self._answer(400)
                    return
                endpoint.attempts[message] += 1
                endpoint.bodies[message].add(body)
                ok = endpoint.attempts[message] > endpoint.failures
                if ok:
                    endpoint.acknowledged.setdefault(message, event)
                    endpoint.headers.setdefault(
                        message, {k.lower(): v for k, v in self.headers.items()})
                self._answer(204 if ok else 500)

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _trickle(self) -> None:
                """One byte every half second, until the client hangs up."""
                self.connection.settimeout(0.5)
                while True:
                    try:
                        if self.connection.recv(1) == b"":
                            return
                    except TimeoutError:
                        try:
                            self.wfile.write(b"H")
                            self.wfile.flush()
                        except OSError:
                            return
                    except OSError:
                        return

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 1024
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks?from=astria"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def destination(self) -> str:
        """The scheme, host and port webhooks to this endpoint share (their destination)."""
        return self.url.split("/hooks", 1)[0]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> WebhookEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
