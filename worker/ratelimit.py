"""One rate limit for Astria requests, shared by every worker process and host through Redis.

A token bucket kept in one Redis hash and changed only by a Lua script, timed by the Redis server's
clock so that hosts with skewed clocks agree. A 429 halves the rate and pauses everyone for the
`Retry-After`; each success wins back 5% of the configured rate. Polls may not dip into the last
`submit_reserve` share of the bucket, so a flood of polls never starves submissions.

At high rates a process takes up to SPARE_SECONDS' worth of tokens (at most MAX_SPARE) in one
round trip and spends the spares within SPARE_SECONDS, so the limiter costs a fraction of a round
trip per request; at Astria's usual rates (under 20 per second) it takes one token at a time.
"""

from __future__ import annotations

import threading
import time
from typing import Literal

import redis

from worker.settings import Settings

_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local max_rate = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'rate', 'until')
local rate = math.min(tonumber(b[3]) or max_rate, max_rate)
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
local blocked = tonumber(b[4]) or 0
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
local granted = 0
local op = ARGV[1]
if op == 'acquire' then
  if now < blocked then
    wait = blocked - now
  else
    local need = 1 + tonumber(ARGV[4]) * burst
    if tokens >= need then
      granted = math.min(tonumber(ARGV[5]), math.floor(tokens - need) + 1)
      tokens = tokens - granted
    else
      wait = (need - tokens) / rate
    end
  end
elseif op == 'throttle' then
  rate = math.max(max_rate * 0.05, rate * 0.5)
  local pause = tonumber(ARGV[4])
  if pause <= 0 then pause = 1 / rate end
  blocked = math.max(blocked, now + pause)
  tokens = 0
elseif op == 'recover' then
  rate = math.min(max_rate, rate + max_rate * 0.05)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now, 'rate', rate, 'until', blocked)
redis.call('EXPIRE', KEYS[1], 3600)
return {tostring(wait), tostring(rate), granted}
"""

RequestKind = Literal["submit", "poll"]
SPARE_SECONDS = 0.05
MAX_SPARE = 16


class RateLimiter:
    """Blocks the caller until the shared bucket grants it one Astria request."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._redis = client
        self._settings = settings
        self._key = f"{settings.key_prefix}:ratelimit"
        self._script = client.register_script(_SCRIPT)
        self._slowed = False
        self._batch = max(1, min(MAX_SPARE, int(settings.astria_rate_limit_per_second
                                                * SPARE_SECONDS)))
        self._lock = threading.Lock()
        self._spare = 0
        self._spare_until = 0.0

    def _call(self, op: str, arg: float, want: int = 1) -> tuple[float, float, int]:
        s = self._settings
        wait, rate, granted = self._script(
            keys=[self._key],
            args=[op, s.astria_rate_limit_per_second, s.astria_rate_limit_burst, arg, want],
        )
        return float(wait), float(rate), int(granted)

    def _take_spare(self) -> bool:
        with self._lock:
            if self._spare > 0 and time.monotonic() < self._spare_until:
                self._spare -= 1
                return True
            return False

    def acquire(self, kind: RequestKind) -> float:
        """Wait for a token; returns the seconds spent waiting."""
        if self._take_spare():
            return 0.0
        reserve = self._settings.astria_rate_limit_submit_reserve if kind == "poll" else 0.0
        waited = 0.0
        while True:
            wait, rate, granted = self._call("acquire", reserve, self._batch)
            self._slowed = rate < self._settings.astria_rate_limit_per_second
            if granted:
                if granted > 1:
                    with self._lock:
                        self._spare = granted - 1
                        self._spare_until = time.monotonic() + SPARE_SECONDS
                return waited
            pause = min(wait, 5.0)
            time.sleep(pause)
            waited += pause

    def throttled(self, retry_after: float | None) -> None:
        """Astria answered 429: slow everyone down and pause for `Retry-After` if it was given."""
        with self._lock:
            self._spare = 0
        self._call("throttle", retry_after or 0.0)
        self._slowed = True

    def succeeded(self) -> None:
        """A request went through: creep back towards the configured rate if we had slowed down."""
        if self._slowed:
            _, rate, _ = self._call("recover", 0.0)
            self._slowed = rate < self._settings.astria_rate_limit_per_second
