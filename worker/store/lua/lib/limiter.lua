-- The adaptive rate limit of one kind of Astria request ('submit' or 'poll'), kept in the
-- limiter hash as `<field>:<kind>`: a token bucket whose rate looks for Astria's own limit.
-- * A 429 to a request sent after the last cut sets the rate to MARGIN of what Astria let
--   through since that cut, per second of sending (its bucket was empty at both, so what passed
--   between them is its rate; the Retry-After pause, when nothing was sent, does not count), or
--   cuts it by BACKOFF without such a measurement; never more than halves it, never below FLOOR
--   of the ceiling. Its Retry-After pauses the kind until then. A 429 to a request sent before
--   the cut says nothing new.
-- * While requests wait for tokens and no 429 came for HOLD s, each answered request lets the
--   rate grow by GROWTH, up to the ceiling (ASTRIA_RATE_LIMIT_PER_SECOND). Growing per request,
--   not per second, makes a probe cost the same share of 429s at any rate or latency.
-- * The bucket holds CAP seconds' worth of tokens (at most ASTRIA_RATE_LIMIT_BURST): enough to
--   send, after a pause, part of what Astria's own bucket refilled meanwhile, and no burst that a
--   small bucket at Astria would refuse.
local HOLD, GROWTH, FLOOR, BACKOFF, MARGIN, CAP = 1.0, 0.0015, 0.02, 0.7, 0.93, 0.5
local LIMITER_FIELDS = {'rate', 'tokens', 'ts', 'pause', 'ok', 'last429', 'hungry', 'plen'}

-- The most tokens the bucket holds at `rate` (see CAP above), whole or not.
local function bucket_size(rate, burst) return math.max(1, math.min(burst, rate * CAP)) end

local function limiter_load(key, kind, ceiling, burst, now)
  local fields = {}
  for i, name in ipairs(LIMITER_FIELDS) do fields[i] = name .. ':' .. kind end
  local v = redis.call('HMGET', key, unpack(fields))
  local s = {key = key, kind = kind, ceiling = ceiling, burst = burst,
             rate = math.min(tonumber(v[1]) or ceiling, ceiling), ts = tonumber(v[3]) or now,
             pause = tonumber(v[4]) or 0, ok = tonumber(v[5]) or 0,
             last429 = tonumber(v[6]) or 0, was_hungry = v[7] == '1', plen = tonumber(v[8]) or 0,
             used = 0, hungry = false}
  local elapsed = math.max(0, now - s.ts)
  s.tokens = math.min(bucket_size(s.rate, burst), (tonumber(v[2]) or burst) + elapsed * s.rate)
  s.ts = now
  return s
end

local function limiter_report(s, report, now)
  -- tokens granted for work that needed no request of its own (polls answered by one listing)
  s.tokens = s.tokens + (tonumber(report.unused) or 0)
  local ok = tonumber(report.ok) or 0
  s.ok = s.ok + ok
  if (tonumber(report.throttled) or 0) == 0 or (tonumber(report.sent) or 0) <= s.last429 then
    if s.was_hungry and ok > 0 and now - s.last429 >= HOLD then
      s.rate = math.min(s.ceiling, s.rate * (1 + GROWTH) ^ ok)
    end
    return
  end
  local window = now - s.last429
  local rate = s.rate * BACKOFF
  if s.last429 > 0 and window <= 60 then
    local sending = math.max(0.5, window - math.min(s.plen, window))
    rate = math.max(s.rate * 0.5, math.min(s.rate, s.ok / sending) * MARGIN)
  end
  s.rate = math.max(rate, s.ceiling * FLOOR)
  s.last429, s.ok, s.tokens = now, 0, 0
  local retry_after = tonumber(report.retry_after) or 0
  s.plen = math.max(0, retry_after)
  if retry_after > 0 then s.pause = math.max(s.pause, now + retry_after) end
end

local function limiter_available(s, now)
  if now < s.pause then return 0 end
  return math.max(0, math.floor(s.tokens - s.used))
end

-- Units that may be granted now when the requests they make are reported afterwards (polls that
-- one listing may answer, their unused tokens coming back): at least a full bucket's worth once
-- a token is there, the excess a debt that later grants pay back. The average stays the rate;
-- the burst, what the bucket holds anyway.
local function limiter_on_credit(s, now)
  local available = limiter_available(s, now)
  if available < 1 then return 0 end
  return math.max(available, math.floor(bucket_size(s.rate, s.burst)))
end

local function limiter_wait(s, now)
  if now < s.pause then return s.pause - now end
  return math.max(0, 1 - (s.tokens - s.used)) / s.rate
end

local function limiter_save(s)
  redis.call('HSET', s.key, 'rate:' .. s.kind, s.rate, 'tokens:' .. s.kind, s.tokens - s.used,
             'ts:' .. s.kind, s.ts, 'pause:' .. s.kind, s.pause, 'ok:' .. s.kind, s.ok,
             'last429:' .. s.kind, s.last429, 'hungry:' .. s.kind, s.hungry and 1 or 0,
             'plen:' .. s.kind, s.plen)
  redis.call('EXPIRE', s.key, 3600)
end
