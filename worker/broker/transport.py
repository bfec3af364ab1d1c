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
queue (the default `celery`), which `worker.broker.app` configures. Producers are unchanged: any
`redis://` producer, in any language, pushes to the same list. A producer that sets Celery's
`priority=` makes kombu push to `celery\x06\x16<N>` instead, which no worker reads: the sweep, and
an idle consumer, move such messages onto the queue (a job's priority is its spec's `priority`).
`SentinelTransport` is the same consumer on kombu's Sentinel channel (a `sentinel://` REDIS_URL).

Each message is checked before kombu reads it (`worker.broker.intake`): one that cannot be read is
moved to the dead messages (`worker.store.messages`) instead of stopping the worker, and so is one
whose delivery still raises. A Redis out of memory (`maxmemory` reached) or read-only (a replica
just demoted) pauses consumption for a second rather than ending the worker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Iterator
from queue import Empty
from time import monotonic, sleep, time
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from kombu.utils.objects import cached_property

from worker.broker import intake
from worker.constants import Keys
from worker.settings import get_settings
from worker.store.connections import FollowingSentinelConnection
from worker.store.messages import DeadMessages
from worker.store.results import ResultFormat

log = logging.getLogger("astria.intake")
#: The priority lists kombu's Redis transport may push to (priorities 1-9; 0 is the queue).
PRIORITY_LEVELS = range(1, 10)
#: Messages moved from one priority list to its queue per sweep.
ADOPT_BATCH = 1000


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

    def ack(self, delivery_tag: str) -> None:
        """kombu's ack; when Redis refuses it (out of memory refuses every command inside a
        transaction), the message stays recorded as unacknowledged: it is delivered again after
        BROKER_VISIBILITY_TIMEOUT and its registration finds the job. The error never ends the
        worker."""
        try:
            super().ack(delivery_tag)
        except redis.ResponseError as exc:
            self._refused(delivery_tag, "acknowledgement", exc)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """kombu's reject; when Redis refuses the requeue, the message likewise stays recorded
        as unacknowledged and comes back after BROKER_VISIBILITY_TIMEOUT."""
        try:
            super().reject(delivery_tag, requeue)
        except redis.ResponseError as exc:
            self._refused(delivery_tag, "requeue", exc)

    def _refused(self, delivery_tag: str, what: str, exc: Exception) -> None:
        log.warning("message %s stays unacknowledged (Redis refused its %s: %s); it comes back "
                    "after BROKER_VISIBILITY_TIMEOUT", delivery_tag, what, type(exc).__name__)
        virtual.QoS.ack(self, delivery_tag)  # forgotten here only

    def restore_visible(self, *args: Any, **kwargs: Any) -> Any:
        """kombu's periodic sweep of unacknowledged messages, plus ours of abandoned lists and
        of messages stranded on priority lists."""
        with contextlib.suppress(*self.channel.connection_errors, redis.ResponseError):
            self.channel.recover_abandoned()  # the next sweep will do it
            self.channel.adopt_priority_lists()
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

    @cached_property
    def _dead(self) -> DeadMessages:
        settings = get_settings()
        return DeadMessages(self._side, _keys(), ResultFormat(settings.job_retention_seconds))

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
        try:
            self._side.pipeline().set(f"{self._processing_key}.alive", 1,
                                      ex=self._alive_seconds).hset(
                _keys().processing, self._processing_key, source).execute()
        except redis.ResponseError:  # a write refused (out of memory): the BLMOVE will be too
            return
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
            except redis.ResponseError as exc:  # BLMOVE refused: out of memory, read-only
                self._pause(exc)
            if not item:
                self._adopt_when_idle()
                raise Empty()
            self._queue_cycle.rotate(source)
            rejected = intake.problem(item, task=source == get_settings().broker_queue)
            if rejected is not None:
                try:
                    self._bury(item, source, rejected)
                except redis.ResponseError as exc:  # refused: it waits for the sweep, as above
                    self._new_processing_key()
                    self._pause(exc)
                raise Empty()
            try:
                self._moved = item  # QoS.append moves it from our list to kombu's unacked
                self.connection._deliver(loads(bytes_to_str(item)), source)
                if self._moved is not None:  # consumed without acknowledgement: not recorded
                    self._side.lrem(self._processing_key, 1, item)
            except self.connection_errors:
                self._new_processing_key()
                raise
            except redis.RedisError as exc:  # a write refused: out of memory, read-only, ...
                self._new_processing_key()  # the message waits in the old list for the sweep
                self._pause(exc)
            except Exception as exc:  # the message still made kombu or Celery fail
                self._bury_delivered(item, source, exc)
                raise Empty() from None
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

    @staticmethod
    def _pause(exc: Exception) -> None:
        """Redis refused a write it needs (out of memory under noeviction, a replica just
        demoted): wait a second and consume again, rather than end the worker."""
        log.warning("consuming paused for a second: Redis refused a write (%s: %s)",
                    type(exc).__name__, str(exc)[:120])
        sleep(1.0)
        raise Empty() from None

    def _bury(self, item: bytes, source: str, rejected: intake.Rejected) -> None:
        """The message leaves our processing list for the dead messages, logged once."""
        entry = self._dead.bury(item, reason=rejected.reason, queue=source,
                                task_id=rejected.task_id, processing=self._processing_key)
        log.error("dead message %s from %s (%d bytes, task id %s): %s", entry, source,
                  len(item), rejected.task_id or "unknown", rejected.reason)

    def _bury_delivered(self, item: bytes, source: str, exc: Exception) -> None:
        """A message that passed the checks and still failed kombu or Celery: buried too; if
        kombu had recorded it as unacknowledged, that record goes."""
        envelope = json.loads(item)
        self._bury(item, source, intake.Rejected(
            f"could not be delivered: {type(exc).__name__}: {exc}"[:500],
            (envelope.get("headers") or {}).get("id")))
        if self._moved is None:
            self.qos.ack(envelope["properties"]["delivery_tag"])

    def _adopt_when_idle(self) -> None:
        if monotonic() - getattr(self, "_adopted_at", 0.0) >= 1.0:
            self._adopted_at = monotonic()
            self.adopt_priority_lists()

    def adopt_priority_lists(self) -> int:
        """Move messages stranded on priority lists (Celery's `priority=`) onto their queue."""
        client, moved = self._side, 0
        for queue in self.active_queues:
            lists = [f"{queue}{self.sep}{level}" for level in PRIORITY_LEVELS]
            pipe = client.pipeline(transaction=False)
            for name in lists:
                pipe.llen(name)
            for name, length in zip(lists, pipe.execute(), strict=True):
                if not length:
                    continue
                pipe = client.pipeline(transaction=False)
                for _ in range(min(length, ADOPT_BATCH)):
                    pipe.lmove(name, queue, "RIGHT", "LEFT")
                moved += sum(1 for item in pipe.execute() if item is not None)
        if moved:
            log.info("moved %d message(s) sent with a Celery priority onto the queue", moved)
        return moved

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
