-- The one place that decides which job gets the next Astria request, for every worker.
-- In order: jobs past their expires_in end (no request); local steps that are due;
-- jobs whose back-off ended rejoin their lane's queue; due polls take poll tokens; then POSTs
-- take submit tokens, lane by lane (interactive, normal, batch, with minimum shares for the
-- lower lanes) and, within a lane, tenant by tenant (start-time fair queueing with weights,
-- skipping tenants at their cap of prompts in flight). Each granted job is leased to the caller
-- and stays due at the lease's end, so a worker that dies loses nothing.
-- KEYS[1] due_submit          jobs waiting out a back-off before rejoining their queue
-- KEYS[2] due_poll            jobs due for a non-POST request (or at their lease's end)
-- KEYS[3] due_local           jobs due for a step without any request
-- KEYS[4] queued              job -> lane|member, for jobs without a prompt
-- KEYS[5] expiry              job -> the time it must be sent by
-- KEYS[6] leases
-- KEYS[7] inflight            tenant -> prompts in flight
-- KEYS[8] inflight_jobs       job -> tenant
-- KEYS[9] limiter
-- KEYS[10] dispatch           lane credits and clocks
-- KEYS[11] sent_submit        when the POSTs whose answers passed Astria's limit were sent
-- KEYS[12] sent_poll          the same for the other requests
-- KEYS[13...] lanes           each lane's queue and tenant turns, in lane order: ready, turns, ...
-- ARGV[1] owner               the caller's lease owner token
-- ARGV[2] room                most units the caller can take now
-- ARGV[3] lease_seconds
-- ARGV[4] ceiling             requests per second of each kind, at most
-- ARGV[5] burst
-- ARGV[6] lanes               the lane names, comma separated, in the order of KEYS lanes
-- ARGV[7] shares              JSON {lane: least share of POSTs while higher lanes have a backlog}
-- ARGV[8] weights             JSON {tenant: weight}
-- ARGV[9] caps                JSON {tenant: most prompts in flight}
-- ARGV[10] default_cap        for tenants not in caps (0: none)
-- ARGV[11] report             JSON {kind: {ok, throttled, retry_after, unused}} since the last call
--                             (ok, throttled: each answer's age, seconds since its request was sent)
-- ARGV[12] now                '' for the Redis server's clock (tests pass a virtual time)
-- Returns {seconds until more may be due, the time it used (Redis's clock), id, kind, ...}.
--!include common
--!include limiter
local owner, room, lease_seconds = ARG.owner, tonumber(ARG.room), tonumber(ARG.lease_seconds)
local ceiling, burst = tonumber(ARG.ceiling), tonumber(ARG.burst)
local shares, weights = cjson.decode(ARG.shares), cjson.decode(ARG.weights)
local caps = cjson.decode(ARG.caps)
local default_cap, report = tonumber(ARG.default_cap), cjson.decode(ARG.report)
local now = clock(ARG.now)
local lease_end = now + lease_seconds
local due_submit, due_poll, due_local = KEY.due_submit, KEY.due_poll, KEY.due_local
local ready, turns = {}, {}
for i = 1, #KEY.lanes, 2 do
  ready[#ready + 1], turns[#turns + 1] = KEY.lanes[i], KEY.lanes[i + 1]
end
local queued, expiry, leases, inflight = KEY.queued, KEY.expiry, KEY.leases, KEY.inflight
local inflight_jobs, dispatch = KEY.inflight_jobs, KEY.dispatch
local names, index = {}, {}
for name in string.gmatch(ARG.lanes, '[^,]+') do names[#names + 1] = name; index[name] = #names end

local units = {}
local function left() return room - #units / 2 end
local function grant(id, kind, due)
  redis.call('HSET', leases, id, owner .. '|' .. lease_end)
  redis.call('ZADD', due, lease_end, id)
  units[#units + 1] = id
  units[#units + 1] = kind
end

local limits = {}
for _, kind in ipairs({'submit', 'poll'}) do
  limits[kind] = limiter_load(KEY.limiter, KEY['sent_' .. kind], kind, ceiling, burst, now)
  limiter_report(limits[kind], report[kind] or {}, now)
end

-- 1. Jobs not sent to Astria before their expires_in end without a POST.
if left() > 0 then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, left())) do
    redis.call('ZREM', expiry, id)
    local entry = redis.call('HGET', queued, id)
    if entry then
      local lane = split2(entry)
      leave_ready(queued, ready[index[lane]], turns[index[lane]], id)
    end
    redis.call('ZREM', due_submit, id)
    grant(id, 'expire', due_local)
  end
end

-- 2. Steps that need no request.
if left() > 0 then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', due_local, '-inf', now, 'LIMIT', 0, left())) do
    grant(id, 'local', due_local)
  end
end

-- 3. Jobs whose back-off ended rejoin their lane's queue at their own place.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', due_submit, '-inf', now, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', due_submit, id)
  redis.call('HDEL', leases, id)
  local entry = redis.call('HGET', queued, id)
  if entry then
    local lane, member = split2(entry)
    join_ready(ready[index[lane]], turns[index[lane]], dispatch, lane, member)
  end
end

-- 4. Polls (and other non-POST requests) of prompts already paid for, oldest due first; on
--    credit, since polls of one tune share one listing request and return the tokens it saved.
local polls = limits.poll
local want = left()
if want > 0 then
  local take = math.min(want, limiter_on_credit(polls, now))
  local due = {}
  if take > 0 then
    due = redis.call('ZRANGEBYSCORE', due_poll, '-inf', now, 'LIMIT', 0, take)
  end
  for _, id in ipairs(due) do
    polls.used = polls.used + 1
    grant(id, 'poll', due_poll)
  end
  if #due == take and left() > 0 and
     #redis.call('ZRANGEBYSCORE', due_poll, '-inf', now, 'LIMIT', 0, 1) > 0 then
    polls.hungry = true
  end
end

-- 5. POSTs: the lane, then the tenant, then the tenant's oldest job.
local function credit(lane)
  return tonumber(redis.call('HGET', dispatch, 'credit:' .. names[lane]) or '0')
end
local function backlogged(lane) return redis.call('ZCARD', turns[lane]) > 0 end
local function pick_tenant(lane)
  local entries = redis.call('ZRANGE', turns[lane], 0, 63, 'WITHSCORES')
  for i = 1, #entries, 2 do
    local tenant = entries[i]
    local cap = tonumber(caps[tenant] or default_cap)
    if cap == 0 or tonumber(redis.call('HGET', inflight, tenant) or '0') < cap then
      return tenant, tonumber(entries[i + 1])
    end
  end
  return nil
end

local posts = limits.submit
local blocked = {}
while left() > 0 do
  -- a lower lane whose minimum share is due goes first, else the highest lane with a backlog
  local lane, by_credit = nil, false
  for l = #names, 2, -1 do
    if not blocked[l] and backlogged(l) and credit(l) >= 1 then lane, by_credit = l, true end
  end
  if not lane then
    for l = 1, #names do
      if not blocked[l] and backlogged(l) then lane = l; break end
    end
  end
  if not lane then break end
  if limiter_available(posts, now) < 1 then posts.hungry = true; break end
  local tenant, start = pick_tenant(lane)
  if not tenant then
    blocked[lane] = true
  else
    local member = redis.call('ZRANGEBYLEX', ready[lane], '[' .. tenant .. '|',
                              '(' .. tenant .. '}', 'LIMIT', 0, 1)[1]
    if not member then
      redis.call('ZREM', turns[lane], tenant)
    else
      redis.call('ZREM', ready[lane], member)
      local id = member_id(member)
      redis.call('ZREM', expiry, id)
      redis.call('HINCRBY', inflight, tenant, 1)
      redis.call('HSET', inflight_jobs, id, tenant)
      posts.used = posts.used + 1
      grant(id, 'submit', due_poll)
      redis.call('HSET', dispatch, 'clock:' .. names[lane], start)
      if has_ready(ready[lane], tenant) then
        redis.call('ZADD', turns[lane], start + 1 / tonumber(weights[tenant] or 1), tenant)
      else
        redis.call('ZREM', turns[lane], tenant)
      end
      -- every grant earns each backlogged lower lane its share; a grant by credit spends one
      for l = 2, #names do
        local key = 'credit:' .. names[l]
        local share = tonumber(shares[names[l]] or 0)
        if not backlogged(l) then
          redis.call('HDEL', dispatch, key)
        elseif l ~= lane then
          if tonumber(redis.call('HINCRBYFLOAT', dispatch, key, share)) > 2 then
            redis.call('HSET', dispatch, key, 2)  -- a lane blocked by tenant caps banks no more
          end
        elseif by_credit then
          redis.call('HINCRBYFLOAT', dispatch, key, share - 1)
        end
      end
    end
  end
end

-- When to look again: the next token if work waits for one, else the next due time.
local wait = 3600
local function sooner(seconds) wait = math.min(wait, math.max(0, seconds)) end
if polls.hungry then sooner(limiter_wait(polls, now)) end
if posts.hungry then sooner(limiter_wait(posts, now)) end
for _, key in ipairs({due_poll, due_local, due_submit, expiry}) do
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #first > 0 then
    local at = tonumber(first[2])
    if key ~= due_poll or at > now or not polls.hungry then sooner(at - now) end
  end
end
limiter_save(polls)
limiter_save(posts)
table.insert(units, 1, tostring(now))
table.insert(units, 1, tostring(wait))
return units
