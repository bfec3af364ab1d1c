-- The adaptive rate limit of one kind of Astria request ('submit' or 'poll'), kept in the
-- limiter hash as `<field>:<kind>` (fields: LIMITER_FIELDS), shared by every host, and the
-- kind's sent list: when the requests whose answers passed were sent, for the last seconds.
-- Astria does not say how it counts its limit (a token bucket, a fixed or a sliding window per
-- second) and answers 429 for other reasons too, so one 429 is not taken for the limit. Answers
-- are counted in windows (at least WINDOW seconds and WINDOW_ANSWERS answers at the rate; a
-- window starts with its first answer after a pause, when nothing was in flight). Only a window
-- whose every grant had requests waiting (the limiter, not the demand, was the bottleneck), or
-- one over a limit, teaches anything:
-- * Until a limit is seen the rate is the ceiling (ASTRIA_RATE_LIMIT_PER_SECOND). A window with
--   at least OVER_ANSWERS answers, OVERSHOOT_COUNT of them 429 and more than OVERSHOOT of them
--   (a few stray 429s are not a limit) is over one. It brackets the limit: `hi`, its rate,
--   fails; `lo`, a STEP under hi at most, passes: what the limit passed of the requests sent in
--   the WINDOW from the second 429's (before it, a bucket's burst or a window's edge passed
--   more), counted by when they were sent, since answers overtake each other (each report
--   gives every answer's age: the sent list, `wfirst`, `wsecond`). It closes once their answers
--   are back (as far as its slowest answer says, `wlat`) and half its answers are 429.
-- * The rate is lo (between FLOOR x the ceiling and the ceiling). While the bracket is wider
--   than CLOSE, every window probes at the lesser of STEP x lo and the bracket's middle; once it
--   is closed, every CYCLE-th window probes at STEP x lo (a lifted limit is found within
--   seconds). A probe ends at its first 429 (its second once noise is known, below; a failed
--   probe costs a 429 or two): its rate is the new hi; a probe with none is the new lo, and one
--   at or above hi forgets hi, so the rate grows by GROW a window until a probe fails.
-- * 429s counted at lo since lo last fell (CRUISE_COUNT of them, more than CRUISE_DENT of the
--   answers) say lo fails too: hi becomes lo, and lo what passed meanwhile (BACK x lo at most,
--   BACK^2 x lo at least): a bucket's burst or a window's edge let a probe pass too high. Never
--   below KEEP x the limit a window over it measured last (`measured`): stray 429s beside a
--   limit would lower the rate step after step down to the floor, and a limit that falls
--   further is measured again: by a window over it (once a limit is known, only by the second
--   window over it in a row, `overs` counting them: the limit's 429s and stray ones together
--   put one window over now and then, and measured it would lower the floor), or, when it fell
--   by less than a window over it shows, at the floor (below).
-- * 429s that go on at the floor (or would take lo under it: a probe that passed lifts lo off
--   it now and then), on at most NOISE_MAX of the answers, are stray ones: their share is
--   `noise`. From then on only 429s beyond it lower lo, a probe passes with one 429,
--   and the rate goes back to the limit last measured with the bracket open above it (a stray
--   among the requests of the second measured makes the limit measure low). Noise is kept
--   NOISE_SECONDS, then learnt again at the floor if stray 429s go on: strays come and go, and
--   while noise is counted out, the limit's own 429s up to its share would be too. More 429s
--   at the floor, beyond DOUBT standard deviations, say the limit is under it (it fell by less
--   than a window over it shows, or was measured high): what passed there is its new measure.
-- * Tokens come at the rate, the bucket holding PACE seconds' worth (at least 1.5: grants are
--   not exactly on time, and no fraction of a token may be lost): requests go out evenly, with
--   no burst that a window counter at Astria would refuse.
-- * Its Retry-After pauses the kind for everyone only after a window over a limit; a stray
--   429's Retry-After is for its one request (its retry policy waits it out).
local WINDOW, WINDOW_ANSWERS, OVERSHOOT, OVERSHOOT_COUNT, OVER_ANSWERS = 1.0, 20, 0.2, 3, 10
local CRUISE_DENT, CRUISE_COUNT = 0.025, 3
local STEP, CLOSE, BACK, GROW, CYCLE = 1.05, 1.02, 0.97, 1.25, 6
local FLOOR, PACE, CREDIT, KEEP, NOISE_MAX, NOISE_SECONDS = 0.02, 0.2, 0.5, 0.9, 0.1, 600
local DOUBT = 2
local LIMITER_FIELDS = {'rate', 'tokens', 'ts', 'pause', 'lo', 'hi', 'phase', 'probe', 'wstart',
                       'wok', 'wthr', 'wfull', 'hungry', 'wra', 'lok', 'lthr', 'lsec',
                       'wfirst', 'wsecond', 'wlat', 'measured', 'overs', 'noise', 'noised'}

local function bucket_size(rate, burst)
  return math.max(1, math.min(burst, math.max(1.5, rate * PACE)))
end

local function limiter_load(key, sent_key, kind, ceiling, burst, now)
  local fields = {}
  for i, name in ipairs(LIMITER_FIELDS) do fields[i] = name .. ':' .. kind end
  local v = redis.call('HMGET', key, unpack(fields))
  local s = {key = key, sent_key = sent_key, kind = kind, ceiling = ceiling, burst = burst,
             rate = math.min(tonumber(v[1]) or ceiling, ceiling), ts = tonumber(v[3]) or now,
             pause = tonumber(v[4]) or 0, lo = tonumber(v[5]), hi = tonumber(v[6]),
             phase = tonumber(v[7]) or 0, probe = v[8] == '1', wstart = tonumber(v[9]) or 0,
             wok = tonumber(v[10]) or 0, wthr = tonumber(v[11]) or 0, wfull = v[12] ~= '0',
             was_hungry = v[13] == '1', wra = tonumber(v[14]) or 0, lok = tonumber(v[15]) or 0,
             lthr = tonumber(v[16]) or 0, lsec = tonumber(v[17]) or 0,
             wfirst = tonumber(v[18]) or 0, wsecond = tonumber(v[19]) or 0,
             wlat = tonumber(v[20]) or 0, measured = tonumber(v[21]) or 0,
             overs = tonumber(v[22]) or 0, noise = tonumber(v[23]) or 0,
             noised = tonumber(v[24]) or 0, used = 0,
             hungry = false}
  local elapsed = math.max(0, now - s.ts)
  s.tokens = math.min(bucket_size(s.rate, burst),
                      (tonumber(v[2]) or bucket_size(s.rate, burst)) + elapsed * s.rate)
  s.ts = now
  return s
end

-- The rate of the window that starts now, and whether it is a probe (see the top).
local function limiter_pace(s)
  s.probe = false
  if not s.lo then s.rate = s.ceiling; return end
  local rate = s.lo
  if not s.hi then
    rate, s.probe = s.lo * GROW, true
  elseif s.hi > s.lo * CLOSE then
    rate, s.probe = math.min(s.lo * STEP, (s.lo + s.hi) / 2), true
  elseif s.phase >= CYCLE - 1 then
    rate, s.probe = s.lo * STEP, true
  end
  s.rate = math.max(s.ceiling * FLOOR, math.min(s.ceiling, rate))
end

local function limiter_settle(s, lo, hi)
  s.lo, s.hi, s.lok, s.lthr, s.lsec = lo, hi, 0, 0, 0
end

-- A window clearly over a limit: enough answers, and more of them 429 than stray ones explain.
local function window_over(s)
  local answers = s.wok + s.wthr
  return answers >= OVER_ANSWERS and s.wthr >= OVERSHOOT_COUNT and s.wthr / answers > OVERSHOOT
end

-- The limit is measured on the requests sent in the WINDOW from the second 429's (by when they
-- were sent: answers overtake each other), not the first's: the first may be a stray one among
-- a bucket's burst. Whether every answer to them has come back (as far as the window's slowest
-- answer, at most a WINDOW, says):
local function measured_in_full(s, now)
  return s.wsecond > 0 and now >= s.wsecond + WINDOW + math.min(s.wlat, WINDOW)
end

-- What the limit passed of those requests, a second's worth. The WINDOW's end reaches half a
-- request further: a sliding window passes its next request a little after a second, where the
-- jitter of sending puts it.
local function passed_after_429s(s)
  local count, ends = 0, s.wsecond + WINDOW + 0.5 / s.rate
  for _, value in ipairs(redis.call('LRANGE', s.sent_key, 0, -1)) do
    local sent = tonumber(value)
    if sent >= s.wsecond and sent < ends then count = count + 1 end
  end
  return count / WINDOW
end

-- Add the send times of the answers that passed, and drop those from before `since` at the
-- head (the list is in the order answers came back, near enough to the order of sending). The
-- list only grows here, so it is trimmed only here; what is stale meanwhile is never counted.
local function limiter_note_sent(s, passed, now, since)
  if #passed == 0 then return end
  local sent = {}
  for i, age in ipairs(passed) do sent[i] = string.format('%.3f', now - age) end
  redis.call('RPUSH', s.sent_key, unpack(sent))
  redis.call('EXPIRE', s.sent_key, 3600)
  local head, old = redis.call('LRANGE', s.sent_key, 0, 63), 0
  while old < #head and tonumber(head[old + 1]) < since do old = old + 1 end
  if old > 0 then redis.call('LTRIM', s.sent_key, old, -1) end
end

-- The 429s a probe may meet and pass: one once stray ones are known (`noise`), else none.
local function probe_allowance(s)
  return s.noise > 0 and 1 or 0
end

-- 429s go on at the floor, or would take lo under it (their `share` of `answers` since lo last
-- fell). At most NOISE_MAX of them: stray ones, their share is noise, and the rate goes back to
-- the limit measured. At the floor, more, beyond DOUBT standard deviations: the limit is under
-- it (it fell by less than a window over it shows, or its first measurement was high), and
-- what passed meanwhile is its measure. In between, the answers are counted on until one or
-- the other is clear.
local function limiter_at_floor(s, share, answers)
  if share <= NOISE_MAX then
    s.noise, s.noised = share, s.ts
    limiter_settle(s, s.measured, nil)
  elseif share - DOUBT * math.sqrt(share * (1 - share) / answers) > NOISE_MAX then
    s.measured = s.lok / s.lsec
    limiter_settle(s, math.min(s.measured, s.lo / STEP), s.lo)
  end
end

-- Narrow the bracket [lo, hi] around the account's limit with what a window saw (see the top).
local function limiter_learn(s, seconds, over)
  if over then
    -- what passed once the limit was met, not a bucket's burst or a window's edge before (a
    -- window over a limit closes only once measured in full: limiter_close)
    local hi = math.min(s.hi or s.rate, s.rate)
    local passed = math.min(s.wok / seconds, passed_after_429s(s))
    limiter_settle(s, math.min(passed, hi / STEP), hi)
    s.measured, s.phase = s.lo, 0
    return
  end
  if not s.lo then return end  -- at the ceiling, no limit seen yet: a few 429s are stray ones
  if s.ts >= s.noised + NOISE_SECONDS then s.noise = 0 end  -- learnt again if strays go on
  if not s.probe then
    s.phase = s.phase + 1
  elseif s.wthr > probe_allowance(s) then
    s.hi, s.phase = math.min(s.hi or s.rate, s.rate), 0  -- the probe is above the limit
  else
    s.lo, s.hi, s.phase = s.rate, (s.hi and s.hi > s.rate) and s.hi or nil, 0
  end
  -- 429s beyond stray ones, counted since lo last fell, say lo is above the limit
  s.lok, s.lthr, s.lsec = s.lok + s.wok, s.lthr + s.wthr, s.lsec + seconds
  local answers = s.lok + s.lthr
  local beyond = s.lthr - s.noise * answers
  if beyond >= CRUISE_COUNT and beyond / answers > CRUISE_DENT then
    local passed = math.max(s.lo * BACK * BACK, s.lok / s.lsec)
    local floor = math.min(s.lo, s.measured * KEEP)
    local lo, share = math.max(math.min(s.lo * BACK, passed), floor), s.lthr / answers
    if lo > floor or (lo < s.lo and share > NOISE_MAX) then
      limiter_settle(s, lo, math.min(s.hi or s.lo, s.lo))
    else  -- at the floor, or a step that would go under it with few enough 429s to be noise
      limiter_at_floor(s, share, answers)
    end
  end
end

-- Close the window once it is long enough (a probe at its first 429 beyond probe_allowance; a
-- window over a limit never before it is measured in full, then as soon as half its answers are
-- 429), learn from it, and pace the next one.
local function limiter_close(s, now)
  if s.wstart == 0 then return end  -- the window starts with its first answer
  local seconds, over = now - s.wstart, window_over(s) and not s.probe
  if over and not measured_in_full(s, now) then return end
  if seconds < math.max(WINDOW, WINDOW_ANSWERS / s.rate)
      and not (s.probe and s.wthr > probe_allowance(s))
      and not (over and s.wthr * 2 > s.wok) then
    return
  end
  local first_over_known = over and s.lo ~= nil and s.overs == 0  -- held back (see the top)
  s.overs = first_over_known and 1 or 0
  if first_over_known then over = false end
  if over or (s.wfull and s.wok + s.wthr > 0) then
    limiter_learn(s, math.max(seconds, WINDOW), over)
  end
  limiter_pace(s)
  s.wstart, s.wok, s.wthr, s.wfull, s.wfirst, s.wsecond, s.wlat = now, 0, 0, true, 0, 0, 0
  if over and s.wra > 0 then
    s.pause = math.max(s.pause, now + s.wra)
    s.wstart = 0  -- nothing is sent meanwhile: the next window starts with its first answer
  end
  s.wra = 0
end

local function limiter_report(s, report, now)
  -- tokens granted for work that needed no request of its own (polls answered by one listing)
  s.tokens = math.min(s.tokens + (tonumber(report.unused) or 0), bucket_size(s.rate, s.burst))
  local passed, throttled = report.ok or {}, report.throttled or {}
  if s.wstart == 0 and #passed + #throttled > 0 then
    -- the first answers only mark the start: counted too, they would count one time too many
    s.wstart = now - 0.5 / s.rate
  end
  s.wok, s.wthr = s.wok + #passed, s.wthr + #throttled
  for _, age in ipairs(throttled) do
    local sent = now - age
    if s.wfirst == 0 or sent < s.wfirst then
      s.wfirst, s.wsecond = sent, s.wfirst
    elseif s.wsecond == 0 or sent < s.wsecond then
      s.wsecond = sent
    end
    s.wlat = math.max(s.wlat, age)
  end
  for _, age in ipairs(passed) do s.wlat = math.max(s.wlat, age) end
  -- answers passed, by when they were sent, kept as far back as two WINDOWs or the window's
  -- first 429 (this report's included), whichever is earlier: the second 429 cannot be older
  local since = now - 2 * WINDOW
  if s.wfirst > 0 then since = math.min(since, s.wfirst) end
  limiter_note_sent(s, passed, now, since)
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

-- Every field of LIMITER_FIELDS, from the state of the same name (true/false as 1/0, none as '').
local function limiter_save(s)
  s.tokens, s.used = s.tokens - s.used, 0
  local args = {}
  for _, name in ipairs(LIMITER_FIELDS) do
    local value = s[name]
    if type(value) == 'boolean' then value = value and 1 or 0 end
    args[#args + 1] = name .. ':' .. s.kind
    args[#args + 1] = value == nil and '' or value
  end
  redis.call('HSET', s.key, unpack(args))
  redis.call('EXPIRE', s.key, 3600)
end
