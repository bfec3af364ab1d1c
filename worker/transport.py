"""Kombu's Redis transport, with a consumer that cannot lose a message.

Why: kombu takes a message with `BRPOP` and only then, in a second round trip, records it in its
`unacked` hash. A worker SIGKILLed between the two, or a Redis restart that swallows the `BRPOP`
reply, loses the message for good: the chaos test caught one job in 300 vanishing that way.

Here a worker moves the message atomically (`BLMOVE`) from the queue into a processing list of its
own, records it in `unacked` as kombu does, and only then removes it from the processing list. Each
processing list has a heartbeat key; a list whose owner stopped beating (a dead worker, or a
connection that broke mid-read) is pushed back onto its queue by any worker's periodic sweep.
The worst case is a message delivered twice, which our tasks are built to absorb.

It needs one Redis key per consume call: `priority_steps` is `[0]` and the worker consumes a single
queue (the default `celery`), which `worker.app` configures. Producers are unchanged: any
`redis://` producer, in any language, pushes to the same list. `SentinelTransport` is the same
consumer on kombu's Sentinel channel (a `sentinel://` REDIS_URL).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from queue import Empty
from time import monotonic, time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from kombu.utils.objects import cached_property

from worker.connections import FollowingSentinelConnection
from worker.constants import Keys
from worker.settings import get_settings


def _keys() -> Keys:
    return Keys(get_settings().key_prefix)


class QoS(kombu_redis.QoS):
    channel: Channel

    def append(self, message: Any, delivery_tag: str) -> None:
        """kombu's record of an unacknowledged message, and in the same MULTI the message leaves
        our processing list: it is in one of the two at every instant, and one round trip."""
        delivery = message.delivery_info
        moved = self.channel._moved
        with self.channel.conn_or_acquire() as client:
            pipe = client.pipeline()
            pipe.zadd(self.unacked_index_key, {delivery_tag: time()})
            pipe.hset(self.unacked_key, delivery_tag,
                      dumps([message._raw, delivery["exchange"], delivery["routing_key"]]))
            if moved is not None:
                pipe.lrem(self.channel._processing_key, 1, moved)
            pipe.execute()
        self.channel._moved = None
        virtual.QoS.append(self, message, delivery_tag)

    def restore_visible(self, *args: Any, **kwargs: Any) -> Any:
        """kombu's periodic sweep of unacknowledged messages, plus ours of abandoned lists."""
        with contextlib.suppress(*self.channel.connection_errors):  # the next sweep will do it
            self.channel.recover_abandoned()
        return super().restore_visible(*args, **kwargs)


class Channel(kombu_redis.Channel):
    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._moving_from: str | None = None
        self._moved: bytes | None = None  # the message being delivered, still in our list
        self._new_processing_key()

    @cached_property
    def _side(self) -> Any:
        """One client (on kombu's connection pool) for bookkeeping, acks and publishing."""
        return self._create_client()

    @contextlib.contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """kombu builds a new Redis client object for every ack and publish; reuse one."""
        yield client or self._side

    @property
    def _alive_seconds(self) -> int:
        return int(max(5.0, min(60.0, float(self.visibility_timeout) / 2)))

    def _new_processing_key(self) -> None:
        """Start a fresh processing list; an old one is left to the sweep once its heart stops."""
        old = getattr(self, "_processing_key", None)
        self._processing_key = _keys().processing_list(uuid.uuid4().hex)
        self._beat_at = 0.0
        if old:
            with contextlib.suppress(*self.connection_errors):
                self._side.delete(f"{old}.alive")  # else it expires by itself

    def _heartbeat(self, source: str) -> None:
        if monotonic() - self._beat_at < self._alive_seconds / 4:
            return
        self._side.pipeline().set(f"{self._processing_key}.alive", 1, ex=self._alive_seconds).hset(
            _keys().processing, self._processing_key, source
        ).execute()
        self._beat_at = monotonic()

    def _brpop_start(self, timeout: float | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        keys = [self._q_for_pri(q, pri) for pri in self.priority_steps for q in queues]
        if len(keys) != 1 or self.global_keyprefix:
            self._moving_from = None
            super()._brpop_start(timeout)
            return
        if timeout is None:
            timeout = self.brpop_timeout
        self._heartbeat(keys[0])
        self._moving_from = keys[0]
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]
        self.client.connection.send_command(
            "BLMOVE", keys[0], self._processing_key, "RIGHT", "LEFT", timeout or 0
        )

    def _brpop_read(self, **options: Any) -> bool:
        source = self._moving_from
        if source is None:
            return bool(super()._brpop_read(**options))
        try:
            try:
                item = self.client.parse_response(self.client.connection, "BLMOVE", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                self._new_processing_key()
                raise
            if not item:
                raise Empty()
            self._queue_cycle.rotate(source)
            try:
                self._moved = item  # QoS.append moves it from our list to kombu's unacked
                self.connection._deliver(loads(bytes_to_str(item)), source)
                if self._moved is not None:  # consumed without acknowledgement: not recorded
                    self._side.lrem(self._processing_key, 1, item)
            except BaseException:
                self._new_processing_key()
                raise
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]
            self._moving_from = None
            self._moved = None
            if hasattr(self, "_flush_brpop_reauth"):
                self._flush_brpop_reauth()

    def recover_abandoned(self) -> int:
        """Push the messages of processing lists whose owner stopped beating back to their queue."""
        moved = 0
        client = self._side
        registry = _keys().processing
        for raw_key, raw_source in client.hgetall(registry).items():
            key, source = bytes_to_str(raw_key), bytes_to_str(raw_source)
            if key == self._processing_key or client.exists(f"{key}.alive"):
                continue
            while client.lmove(key, source, "RIGHT", "RIGHT") is not None:
                moved += 1
            client.hdel(registry, key)
        return moved


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """Our consumer, connected through the Sentinels to the current master."""

    def _sentinel_managed_pool(self, asynchronous: bool = False) -> Any:
        pool = super()._sentinel_managed_pool(asynchronous)
        pool.connection_class = FollowingSentinelConnection  # follows a failover at once
        return pool


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel
