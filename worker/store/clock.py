"""`RedisClock`: the time every host agrees on, Redis's own (`TIME`).

Why: the decisions that keep a prompt from being paid for twice compare a time one host wrote
with a time another host reads: when a POST was sent (`pending_post`), when its answer was given
up (`gave_up_at`), whether the grace after it has passed. Hosts' clocks drift apart; Redis has
one. The engine learns the offset from every grant (the grant script reads `TIME`); a process
that has none fresher than MAX_AGE asks Redis (`TIME`, one round trip).
"""

from __future__ import annotations

import threading
import time

import redis

MAX_AGE = 30.0


class RedisClock:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._offset: float | None = None
        self._at = 0.0
        self._lock = threading.Lock()

    def seen(self, redis_now: float) -> None:
        """Redis's time, as a script just read it."""
        with self._lock:
            self._offset, self._at = redis_now - time.time(), time.monotonic()

    def now(self) -> float:
        """Seconds since the epoch by Redis's clock."""
        if self._offset is None or time.monotonic() - self._at > MAX_AGE:
            seconds, micros = self._redis.time()
            self.seen(seconds + micros / 1e6)
        assert self._offset is not None
        return time.time() + self._offset
