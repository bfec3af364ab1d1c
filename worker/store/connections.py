"""Redis clients for the job store, from REDIS_URL in any of kombu's forms.

`redis://`, `rediss://` (TLS) and `unix://` connect directly; `sentinel://h1:26379;sentinel://
h2:26379/0` asks those Sentinels for the master named REDIS_SENTINEL_MASTER and follows it across
a failover. Every client rides out a restart or failover: commands are retried with back-off on
connection errors and timeouts, and idle connections are health-checked.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

from worker.settings import Settings

_OPTIONS: dict[str, Any] = {"socket_timeout": 15, "socket_connect_timeout": 5,
                            "health_check_interval": 15}


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=20,
                 supported_errors=(redis.ConnectionError, redis.TimeoutError))


class FollowingSentinelConnection(SentinelManagedConnection):
    """A connection to the current master. redis-py asks the Sentinels for the master when a
    connection is handed out, but a pipeline that lost its connection reconnects to the old
    address until its retries run out (redis-py 8.1: half a minute of refused connections after
    every failover). This one asks again whenever it connects."""

    def connect_check_health(self, check_health: bool = True,
                             retry_socket_connect: bool = True) -> None:
        if not self._sock and self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        super().connect_check_health(check_health=check_health,
                                     retry_socket_connect=retry_socket_connect)


def sentinel_hosts(url: str) -> tuple[list[tuple[str, int]], int, str | None]:
    """The Sentinels, the database number and the password of a kombu sentinel:// URL."""
    hosts: list[tuple[str, int]] = []
    db, password = 0, None
    for part in url.split(";"):
        parts = urlsplit(part.strip())
        hosts.append((parts.hostname or "localhost", parts.port or 26379))
        if parts.password:
            password = unquote(parts.password)
        if parts.path.strip("/"):
            db = int(parts.path.strip("/"))
    return hosts, db, password


def redis_client(settings: Settings, *, patient: bool = True) -> redis.Redis:
    """`patient`: ride out a restart or failover (retries for about half a minute); else one
    try with short timeouts (a container's probe must answer within seconds)."""
    url = settings.redis_url
    retry = _retry() if patient else Retry(ExponentialBackoff(), 0)
    if url.startswith("sentinel://"):
        hosts, db, password = sentinel_hosts(url)
        sentinel = Sentinel(hosts, socket_timeout=5, sentinel_kwargs={"socket_timeout": 5})
        assert settings.redis_sentinel_master  # checked by Settings
        master: redis.Redis = sentinel.master_for(
            settings.redis_sentinel_master, db=db, password=password, retry=retry,
            connection_class=FollowingSentinelConnection, **_options(patient))
        return master
    return redis.Redis.from_url(url, retry=retry, **_options(patient))


def _options(patient: bool) -> dict[str, Any]:
    return _OPTIONS if patient else {**_OPTIONS, "socket_timeout": 3, "socket_connect_timeout": 3}


def async_redis_client(settings: Settings) -> redis.asyncio.Redis:
    """The same, for asyncio producers (`worker.producer.aio`)."""
    from redis.asyncio.sentinel import Sentinel as AsyncSentinel

    url = settings.redis_url
    if url.startswith("sentinel://"):
        hosts, db, password = sentinel_hosts(url)
        sentinel = AsyncSentinel(hosts, socket_timeout=5, sentinel_kwargs={"socket_timeout": 5})
        assert settings.redis_sentinel_master  # checked by Settings
        master: redis.asyncio.Redis = sentinel.master_for(
            settings.redis_sentinel_master, db=db, password=password, **_OPTIONS)
        return master
    return redis.asyncio.Redis.from_url(url, **_OPTIONS)
