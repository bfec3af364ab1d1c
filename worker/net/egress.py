"""HTTP to producers' webhook endpoints: one attempt, bounded in every direction.

A producer's endpoint is whatever its URL says, and it may be slow or hostile. Every attempt:
- connects only to an address `worker.net.addresses` allows, the very one it checked: the name is
  not resolved again by the connection (no DNS rebinding); TLS still verifies the certificate for
  the name in the URL. The name is resolved on one of RESOLVERS threads, waited for within the
  deadline (a resolver cannot be told to give up, so a slow one is left behind, not waited on);
- ends by a total deadline however the endpoint trickles: each socket operation, the TLS handshake
  included, waits at most the time left (`_DeadlineSocket`, `_DeadlineSSLSocket`);
- reads at most ANSWER_BYTES of the answer: its status is all that counts;
- carries no cookies, credentials or proxy settings and follows no redirect (a 3xx is a failure).

urllib3 (requests' own layer) does the HTTP; this module gives it sockets that keep to the rules
above. Its pools hold at most WEBHOOK_MAX_IN_FLIGHT_PER_DESTINATION kept-alive connections per
destination and NUM_POOLS destinations.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as ResolveTimeout
from dataclasses import dataclass
from functools import cache
from typing import Any

import certifi
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError, NameResolutionError, NewConnectionError, SSLError

from worker.errors import DestinationRefused
from worker.net.addresses import resolve_checked

#: Bytes of an answer read at most (the rest is never read: the connection is closed).
ANSWER_BYTES = 4096
#: Destinations whose connections are kept alive at once (least recently used go first).
NUM_POOLS = 256
#: Threads resolving webhook hosts' names, for every attempt of the process.
RESOLVERS = 32

_attempt = threading.local()


def _time_left() -> float | None:
    """Seconds left before this thread's attempt must end (None outside an attempt)."""
    until: float | None = getattr(_attempt, "until", None)
    if until is None:
        return None
    left = until - time.monotonic()
    if left <= 0:
        raise TimeoutError("the attempt's deadline passed")
    return left


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    _attempt.until = time.monotonic() + seconds
    try:
        yield
    finally:
        _attempt.until = None


class _Bounded:
    """Sends that end by the current attempt's deadline (mixed into the socket classes below)."""

    def _bound(self) -> None:
        left = _time_left()
        if left is not None:
            self.settimeout(left)  # type: ignore[attr-defined]

    def send(self, *args: Any, **kwargs: Any) -> int:
        self._bound()
        return super().send(*args, **kwargs)  # type: ignore[misc, no-any-return]

    def sendall(self, *args: Any, **kwargs: Any) -> None:
        self._bound()
        super().sendall(*args, **kwargs)  # type: ignore[misc]


class _DeadlineSocket(_Bounded, socket.socket):
    """A socket whose blocking calls end by the current attempt's deadline."""

    def recv_into(self, *args: Any, **kwargs: Any) -> int:
        self._bound()
        return super().recv_into(*args, **kwargs)

    def recv(self, *args: Any, **kwargs: Any) -> bytes:
        self._bound()
        return super().recv(*args, **kwargs)


class _DeadlineSSLSocket(_Bounded, ssl.SSLSocket):
    """The same for TLS: the handshake and reads too wait at most the time left."""

    def do_handshake(self, block: bool = False) -> None:
        self._bound()
        super().do_handshake(block)

    def read(self, *args: Any, **kwargs: Any) -> Any:
        self._bound()
        return super().read(*args, **kwargs)


@cache
def _resolvers() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(RESOLVERS, thread_name_prefix="astria-dns")


def _resolve(host: str, port: int, allow_private: bool) -> list[Any]:
    """`resolve_checked`, within the attempt's deadline."""
    future = _resolvers().submit(resolve_checked, host, port, allow_private=allow_private)
    try:
        return future.result(timeout=_time_left() or 30.0)
    except ResolveTimeout:
        future.cancel()
        raise TimeoutError(f"resolving {host} timed out") from None


class _CheckedAddress:
    """urllib3's connection, connecting to an address `resolve_checked` allows."""

    allow_private: bool
    _dns_host: str
    port: int
    timeout: Any

    def _new_conn(self) -> socket.socket:
        error: OSError | None = None
        try:
            found = _resolve(self._dns_host, self.port, self.allow_private)
        except socket.gaierror as exc:
            raise NameResolutionError(self._dns_host, self, exc) from None  # type: ignore[arg-type]
        for family, sockaddr in found:
            sock = _DeadlineSocket(family, socket.SOCK_STREAM)
            try:
                left = _time_left()
                timeout = self.timeout if isinstance(self.timeout, int | float) else None
                sock.settimeout(min(x for x in (left, timeout, 30.0) if x is not None))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise NewConnectionError(self, f"could not connect: {error}")  # type: ignore[arg-type]


class _Connection(_CheckedAddress, HTTPConnection):
    def __init__(self, *args: Any, allow_private: bool = False, **kwargs: Any) -> None:
        self.allow_private = allow_private
        super().__init__(*args, **kwargs)


class _TLSConnection(_CheckedAddress, HTTPSConnection):
    def __init__(self, *args: Any, allow_private: bool = False, **kwargs: Any) -> None:
        self.allow_private = allow_private
        super().__init__(*args, **kwargs)


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


class _Pools(urllib3.PoolManager):
    """One pool per destination, each making checked connections."""

    def __init__(self, *, allow_private: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}
        self._allow_private = allow_private

    def _new_pool(self, scheme: str, host: str, port: int,
                  request_context: dict[str, Any] | None = None) -> HTTPConnectionPool:
        pool = super()._new_pool(scheme, host, port, request_context)
        pool.conn_kw["allow_private"] = self._allow_private  # passed to each new connection
        return pool


@dataclass(frozen=True)
class Answer:
    """What one attempt got: '' when the endpoint answered 2xx, else why not."""

    status: int | None
    error: str
    refused: bool = False  #: not a public destination: no retry would change that

    @property
    def delivered(self) -> bool:
        return not self.error


def tls_context(cafile: str | None = None) -> ssl.SSLContext:
    """Certificates checked against `cafile` (default: certifi's bundle), with deadline sockets."""
    context = ssl.create_default_context(cafile=cafile or certifi.where())
    context.sslsocket_class = _DeadlineSSLSocket
    return context


class Egress:
    """POSTs to webhook endpoints, shared by the threads of one process."""

    def __init__(self, *, per_destination: int, allow_private: bool,
                 context: ssl.SSLContext | None = None) -> None:
        self._pools = _Pools(num_pools=NUM_POOLS, maxsize=per_destination, block=False,
                             allow_private=allow_private, ssl_context=context or tls_context())

    def post(self, url: str, body: bytes, headers: dict[str, str], *, deadline: float) -> Answer:
        """One POST, over within `deadline` seconds, whatever the endpoint does."""
        try:
            with _deadline(deadline):
                response = self._pools.urlopen(
                    "POST", url, body=body, headers=headers, retries=False, redirect=False,
                    preload_content=False, decode_content=False,
                    timeout=urllib3.Timeout(connect=deadline, read=deadline))
                try:
                    response.read(ANSWER_BYTES, decode_content=False)
                    if response.length_remaining != 0:
                        response.close()  # the rest is not read: the connection is not reused
                finally:
                    response.release_conn()
        except DestinationRefused as exc:
            return Answer(None, f"refused: {exc}", refused=True)
        except SSLError:
            return Answer(None, "TLS failed")
        except (HTTPError, OSError) as exc:
            return Answer(None, _network_error(exc))
        if 200 <= response.status < 300:
            return Answer(response.status, "")
        return Answer(response.status, f"HTTP {response.status}")


def _network_error(exc: BaseException) -> str:
    """A coarse reason: enough to act on, no detail about the endpoint's host."""
    if isinstance(exc, NameResolutionError):
        return "its name does not resolve"
    text = f"{type(exc).__name__} {exc}".lower()
    if "timed out" in text or "timeout" in text or "deadline" in text:
        return "timed out"
    return "connection failed"
