"""What the queue learns from Astria, shared through Redis and read through a short local cache:
which tunes need their base tune (from 422s), how long a generation takes (from successes), and
whether a tune's training has ended (GET /tunes/:id, kept while fresh).

A stale read costs little: a missed route costs one 422 (which creates and bills nothing), a
stale generation time one early or late poll.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar, cast

import redis

from worker.astria.prompt import Tune
from worker.astria.routing import ROUTE_KINDS, RouteKind
from worker.constants import Keys

T = TypeVar("T")
CACHE_SECONDS = 2.0


class Recent(Generic[T]):
    """A value read at most every CACHE_SECONDS (per process)."""

    def __init__(self, read: Callable[[], T]) -> None:
        self._read = read
        self._value: T | None = None
        self._until = 0.0

    def get(self) -> T:
        now = time.monotonic()
        if now >= self._until:
            self._value, self._until = self._read(), now + CACHE_SECONDS
        return cast(T, self._value)


class Learnt:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._redis = client
        self._keys = keys
        self._generation = Recent(self._read_generation)
        self._routes: dict[int, Recent[RouteKind | None]] = {}

    def _read_generation(self) -> float | None:
        value = self._redis.get(self._keys.generation_seconds)
        return float(value) if value else None

    def expected_generation_seconds(self) -> float | None:
        """The moving average (weight 0.2) of generation times that finishing jobs keep."""
        return self._generation.get()

    def known_route(self, tune_id: int) -> RouteKind | None:
        """'pti', 'faceid' or 'flux' once a 422 taught us that this tune must go to a base
        tune."""
        if tune_id not in self._routes:
            key = self._keys.route(tune_id)

            def read() -> RouteKind | None:
                value = self._redis.get(key)
                text = value.decode() if isinstance(value, bytes) else value
                return next((kind for kind in ROUTE_KINDS if kind == text), None)

            self._routes[tune_id] = Recent(read)
        return self._routes[tune_id].get()

    def tune(self, tune_id: int) -> Tune | None:
        """The tune as last read by any worker, while fresh (`remember_tune`); None when not."""
        raw = self._redis.get(self._keys.tune(tune_id))
        return Tune.model_validate_json(raw) if raw else None

    def remember_tune(self, tune: Tune, fresh_for: float) -> None:
        self._redis.set(self._keys.tune(tune.id), tune.model_dump_json(),
                        px=max(1, int(fresh_for * 1000)))

    def remember_route(self, tune_id: int, kind: RouteKind) -> None:
        self._redis.set(self._keys.route(tune_id), kind)
        self._routes.pop(tune_id, None)
