-- The adaptive rate limit of one kind of Astria request ('submit' or 'poll'), kept in the
-- limiter hash as `<field>:<kind>` (fields: LIMITER_FIELDS), shared by every host.
-- Astria does not say how it counts its limit (a token bucket, a fixed or a sliding window per
-- second) and answers 429 for other reasons too, so a 429 is not taken for the limit: what
-- passes is. Answers are counted in windows (at least WINDOW seconds and WINDOW_ANSWERS answers
-- at the rate; a window starts with its first answer after a pause, when nothing was in flight):
-- * `bw`, the rate Astria lets through, is the most that passed a second in the last HISTORY
--   windows whose every grant had requests waiting (the limiter, not the demand, was the
--   bottleneck). A window with at least OVER_ANSWERS answers, OVERSHOOT_COUNT of them 429 and
--   more than OVERSHOOT of them (a few stray 429s are not a limit) is over a limit: bw is what
--   it let through, the older windows are forgotten. Until one is seen, bw is unknown and the
--   rate is the ceiling (ASTRIA_RATE_LIMIT_PER_SECOND). Such a window closes after WINDOW
--   seconds already when a third of its answers are 429. A window below the probe's rate with
--   more than DENT of its answers 429 says bw was counted high (a bucket's burst, a window
--   counter's edge): the history is capped at the larger of what passed and SHRINK x bw.
-- * The rate cycles through CYCLE windows: a probe at PROBE x bw, a drain at DRAIN x bw, the
--   rest at CRUISE x bw, never above the ceiling nor below FLOOR of it. A probe that let through
--   more than PROBE_GAIN x bw is followed by a larger one (GROW x bw): a lifted limit is found
--   within a few windows, and stray 429s only lower what passes, which the next probe makes up.
-- * Tokens come at the rate, the bucket holding PACE seconds' worth (at least 1.5: grants are
--   not exactly on time, and no fraction of a token may be lost): requests go out evenly, with
--   no burst that a window counter at Astria would refuse.
-- * Its Retry-After pauses the kind for everyone only after a window over a limit; a stray
--   429's Retry-After is for its one request (its retry policy waits it out).
local WINDOW, WINDOW_ANSWERS, HISTORY, OVERSHOOT, OVERSHOOT_COUNT, OVER_ANSWERS = 1.0, 20, 10, 0.2,
  3, 10
local PROBE, PROBE_GAIN, DRAIN, CRUISE, GROW, CYCLE, FLOOR, PACE, CREDIT = 1.1, 1.04, 0.95, 0.97,
  1.25, 8, 0.02, 0.2, 0.5
local DENT, SHRINK = 0.1, 0.95
local LIMITER_FIELDS = {'rate', 'tokens', 'ts', 'pause', 'bw', 'hist', 'phase', 'wstart', 'wok',
                       'wthr', 'wfull', 'hungry', 'wra'}

local function bucket_size(rate, burst)
  return math.max(1, math.min(burst, math.max(1.5, rate * PACE)))
end

local function split_numbers(text)
  local out = {}
  for value in string.gmatch(text or '', '[^,]+') do out[#out + 1] = tonumber(value) end
  return out
end

local function limiter_load(key, kind, ceiling, burst, now)
  local fields = {}
  for i, name in ipairs(LIMITER_FIELDS) do fields[i] = name .. ':' .. kind end
  local v = redis.call('HMGET', key, unpack(fields))
  local s = {key = key, kind = kind, ceiling = ceiling, burst = burst,
             rate = math.min(tonumber(v[1]) or ceiling, ceiling), ts = tonumber(v[3]) or now,
             pause = tonumber(v[4]) or 0, bw = tonumber(v[5]), hist = split_numbers(v[6]),
             phase = tonumber(v[7]) or 0, wstart = tonumber(v[8]) or 0,
             wok = tonumber(v[9]) or 0, wthr = tonumber(v[10]) or 0, wfull = v[11] ~= '0',
             was_hungry = v[12] == '1', wra = tonumber(v[13]) or 0, used = 0, hungry = false}
  local elapsed = math.max(0, now - s.ts)
  s.tokens = math.min(bucket_size(s.rate, burst),
                      (tonumber(v[2]) or bucket_size(s.rate, burst)) + elapsed * s.rate)
  s.ts = now
  return s
end

-- The rate of the window that starts now, from bw and the place in the cycle.
local function limiter_pace(s)
  if not s.bw then s.rate = s.ceiling; return end
  local gain = CRUISE
  if s.phase == 0 then gain = PROBE elseif s.phase == 1 then gain = DRAIN end
  if s.phase < 0 then gain = GROW end
  s.rate = math.max(s.ceiling * FLOOR, math.min(s.ceiling, gain * s.bw))
end

-- A window clearly over a limit: enough answers, and more of them 429 than stray ones explain.
local function window_over(s)
  local answers = s.wok + s.wthr
  return answers >= OVER_ANSWERS and s.wthr >= OVERSHOOT_COUNT and s.wthr / answers > OVERSHOOT
end

-- Close the window once it is long enough (sooner when most answers are 429), learn from it, and
-- pace the next one. Only a window whose every grant had requests waiting says what passes.
local function limiter_close(s, now)
  local seconds, answers = now - s.wstart, s.wok + s.wthr
  if s.wstart == 0 then return end  -- the window starts with its first answer
  local over = window_over(s)
  if seconds < math.max(WINDOW, WINDOW_ANSWERS / s.rate)
      and not (over and s.wthr * 2 > s.wok and seconds >= WINDOW) then
    return
  end
  local passed, previous = s.wok / math.max(seconds, WINDOW), s.bw
  if over then
    s.hist, s.bw, s.phase = {passed}, passed, 1  -- the limit is what passed: drain, then cruise
  elseif s.wfull and answers > 0 then
    table.insert(s.hist, passed)
    while #s.hist > HISTORY do table.remove(s.hist, 1) end
    if s.bw and s.phase > 0 and s.wthr >= OVERSHOOT_COUNT and s.wthr / answers > DENT then
      -- 429s below the probe's rate: bw was counted high; lower what the history remembers
      local cap = math.max(passed, s.bw * SHRINK)
      for i, value in ipairs(s.hist) do s.hist[i] = math.min(value, cap) end
    end
    if s.bw then s.bw = math.max(unpack(s.hist)) end
    if previous and s.phase <= 0 and passed > previous * PROBE_GAIN then
      s.phase = -1  -- the probe let more through than the limit we knew: a larger one
    else
      s.phase = (math.max(s.phase, 0) + 1) % CYCLE
    end
  else
    s.phase = (math.max(s.phase, 0) + 1) % CYCLE
  end
  limiter_pace(s)
  s.wstart, s.wok, s.wthr, s.wfull = now, 0, 0, true
  if over and s.wra > 0 then
    s.pause = math.max(s.pause, now + s.wra)
    s.wstart = 0  -- nothing is sent meanwhile: the next window starts with its first answer
  end
  s.wra = 0
end

local function limiter_report(s, report, now)
  -- tokens granted for work that needed no request of its own (polls answered by one listing)
  s.tokens = math.min(s.tokens + (tonumber(report.unused) or 0), bucket_size(s.rate, s.burst))
  local ok, throttled = tonumber(report.ok) or 0, tonumber(report.throttled) or 0
  if s.wstart == 0 and ok + throttled > 0 then
    -- the first answers only mark the start: counted too, they would count one time too many
    s.wstart = now - 0.5 / s.rate
  end
  s.wok, s.wthr = s.wok + ok, s.wthr + throttled
  s.wra = math.max(s.wra, tonumber(report.retry_after) or 0)
  s.wfull = s.wfull and s.was_hungry  -- every grant of the window had requests waiting
  limiter_close(s, now)
end

local function limiter_available(s, now)
  if now < s.pause then return 0 end
  return math.max(0, math.floor(s.tokens - s.used))
end

-- Units that may be granted now when the requests they make are reported afterwards (polls that
-- one listing may answer, their unused tokens coming back): at least CREDIT seconds' worth once
-- a token is there, the excess a debt that later grants pay back. The average stays the rate.
local function limiter_on_credit(s, now)
  local available = limiter_available(s, now)
  if available < 1 then return 0 end
  return math.max(available, math.floor(math.max(1, math.min(s.burst, s.rate * CREDIT))))
end

local function limiter_wait(s, now)
  if now < s.pause then return s.pause - now end
  return math.max(0, 1 - (s.tokens - s.used)) / s.rate
end

local function limiter_save(s)
  local hist = {}
  for i, value in ipairs(s.hist) do hist[i] = string.format('%.4f', value) end
  redis.call('HSET', s.key, 'rate:' .. s.kind, s.rate, 'tokens:' .. s.kind, s.tokens - s.used,
             'ts:' .. s.kind, s.ts, 'pause:' .. s.kind, s.pause, 'bw:' .. s.kind, s.bw or '',
             'hist:' .. s.kind, table.concat(hist, ','), 'phase:' .. s.kind, s.phase,
             'wstart:' .. s.kind, s.wstart, 'wok:' .. s.kind, s.wok, 'wthr:' .. s.kind, s.wthr,
             'wfull:' .. s.kind, s.wfull and 1 or 0, 'hungry:' .. s.kind,
             s.hungry and 1 or 0, 'wra:' .. s.kind, s.wra)
  redis.call('EXPIRE', s.key, 3600)
end
