-- The adaptive rate limit of one kind of Astria request ('submit' or 'poll'), kept in the
-- limiter hash as `<field>:<kind>`: a token bucket whose rate looks for Astria's own limit.
-- * A 429 more than SETTLE s after the last one that counted sets the rate to MARGIN of what
--   Astria let through since that one (its bucket was empty at both, so what passed between them
--   is its rate), or cuts it by BACKOFF without such a measurement; never more than halves it,
--   never below FLOOR of the ceiling. Retry-After pauses the kind until then.
-- * While requests wait for tokens and no 429 came for HOLD s, the rate grows by GROWTH a
--   second, up to the ceiling (ASTRIA_RATE_LIMIT_PER_SECOND).
-- * The bucket holds one second's worth of tokens (at most ASTRIA_RATE_LIMIT_BURST), so after a
--   pause the kind sends what Astria's own bucket refilled meanwhile.
local SETTLE, HOLD, GROWTH, FLOOR, BACKOFF, MARGIN = 1.0, 2.0, 0.05, 0.02, 0.7, 0.97
local LIMITER_FIELDS = {'rate', 'tokens', 'ts', 'pause', 'ok', 'last429'}

local function limiter_load(key, kind, ceiling, burst, now)
  local fields = {}
  for i, name in ipairs(LIMITER_FIELDS) do fields[i] = name .. ':' .. kind end
  local v = redis.call('HMGET', key, unpack(fields))
  local s = {key = key, kind = kind, ceiling = ceiling, burst = burst,
             rate = math.min(tonumber(v[1]) or ceiling, ceiling), ts = tonumber(v[3]) or now,
             pause = tonumber(v[4]) or 0, ok = tonumber(v[5]) or 0,
             last429 = tonumber(v[6]) or 0, used = 0, hungry = false}
  local elapsed = math.max(0, now - s.ts)
  s.tokens = math.min(math.max(1, math.min(burst, s.rate)),
                      (tonumber(v[2]) or burst) + elapsed * s.rate)
  s.elapsed, s.ts = math.min(elapsed, 1.0), now
  return s
end

local function limiter_report(s, report, now)
  s.ok = s.ok + (tonumber(report.ok) or 0)
  if (tonumber(report.throttled) or 0) == 0 then return end
  if now - s.last429 >= SETTLE then
    local window = now - s.last429
    local rate = s.rate * BACKOFF
    if s.last429 > 0 and window <= 60 then
      rate = math.max(s.rate * 0.5, math.min(s.rate, s.ok / window) * MARGIN)
    end
    s.rate = math.max(rate, s.ceiling * FLOOR)
    s.last429, s.ok = now, 0
  end
  s.tokens = 0
  local retry_after = tonumber(report.retry_after) or 0
  if retry_after > 0 then s.pause = math.max(s.pause, now + retry_after) end
end

local function limiter_available(s, now)
  if now < s.pause then return 0 end
  return math.max(0, math.floor(s.tokens - s.used))
end

local function limiter_wait(s, now)
  if now < s.pause then return s.pause - now end
  return math.max(0, 1 - (s.tokens - s.used)) / s.rate
end

local function limiter_save(s, now)
  if s.hungry and now - s.last429 >= HOLD then
    s.rate = math.min(s.ceiling, s.rate * (1 + GROWTH * s.elapsed))
  end
  redis.call('HSET', s.key, 'rate:' .. s.kind, s.rate, 'tokens:' .. s.kind, s.tokens - s.used,
             'ts:' .. s.kind, s.ts, 'pause:' .. s.kind, s.pause, 'ok:' .. s.kind, s.ok,
             'last429:' .. s.kind, s.last429)
  redis.call('EXPIRE', s.key, 3600)
end
