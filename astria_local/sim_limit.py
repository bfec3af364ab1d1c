"""An account rate limit counted the ways Astria might count it (it does not document how): the
simulator's account and the limiter's virtual-time tests share it, so both meet the same limits."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

Counter = Literal["bucket", "fixed", "sliding"]
COUNTERS: tuple[Counter, ...] = ("bucket", "fixed", "sliding")


@dataclass
class AccountLimit:
    """`limit` requests a second (0: none), counted as `counter` says: "bucket", a token bucket
    of `burst` (default: one second's worth); "fixed", at most `limit` per whole second of the
    clock; "sliding", at most `limit` in any one second. Not thread-safe: callers lock."""

    limit: float
    counter: Counter = "bucket"
    burst: float | None = None
    _tokens: float | None = None
    _refilled: float = 0.0
    _passed: deque[float] = field(default_factory=deque)  #: when requests passed (windows)

    def admit(self, at: float) -> float | None:
        """None when a request arriving at `at` (seconds, any clock) passes, else the seconds
        until one would."""
        if self.limit <= 0:
            return None
        if self.counter == "bucket":
            burst = self.burst or max(1.0, self.limit)
            tokens = burst if self._tokens is None else self._tokens
            self._tokens = min(burst, tokens + (at - self._refilled) * self.limit)
            self._refilled = at
            if self._tokens >= 1:
                self._tokens -= 1
                return None
            return (1 - self._tokens) / self.limit
        if self.counter == "fixed":
            start = math.floor(at)
            while self._passed and self._passed[0] < start:
                self._passed.popleft()
            wait = start + 1 - at
        else:
            while self._passed and self._passed[0] <= at - 1.0:
                self._passed.popleft()
            wait = (self._passed[0] + 1.0 - at) if self._passed else 0.0
        if len(self._passed) < self.limit:
            self._passed.append(at)
            return None
        return wait
