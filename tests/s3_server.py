"""A fault proxy in front of an S3 server (`astria_local.s3_server`): it answers some PUTs 500
or stalls them, as a real store sometimes does."""

from __future__ import annotations

import http.client
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FaultyProxy:
    """An HTTP proxy to `target` that answers a share of PUTs 500 (before they reach the store)
    and stalls another share for `stall` seconds first."""

    def __init__(self, target: str, *, fail: float, stall: float, stall_share: float) -> None:
        host, port = target.removeprefix("http://").split(":")
        rng = random.Random(5)
        counts = self.counts = {"put": 0, "failed": 0, "stalled": 0}

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.command == "PUT":
                    counts["put"] += 1
                    roll = rng.random()
                    if roll < fail:
                        counts["failed"] += 1
                        self.send_response(500)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    if roll < fail + stall_share:
                        counts["stalled"] += 1
                        time.sleep(stall)
                upstream = http.client.HTTPConnection(host, int(port), timeout=30)
                upstream.request(self.command, self.path, body, dict(self.headers))
                answer = upstream.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _forward

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up on a stalled PUT: its broken pipe is expected

        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
