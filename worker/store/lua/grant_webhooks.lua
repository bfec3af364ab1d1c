-- Which webhooks to producers go out now, for every worker. Due ones, oldest first, within the
-- caller's free webhook threads (their own budget: they never take a thread from Astria's
-- requests); at most `per_destination` in flight to one destination (a scheme://host:port); and
-- a destination that failed `failures_to_hold` times in a row gets one attempt at a time (a
-- probe), none before its `held_until` (webhook_done.lua sets both). Each granted webhook is due
-- again at its lease's end, later than its attempt's deadline: never granted twice at once.
-- A webhook whose retry window passed while its destination was held back is granted anyway:
-- one last attempt, or, never tried, dead without a request (`worker.webhooks.deliver`).
-- KEYS[1] webhooks_due
-- ARGV[1] room               free webhook threads of the caller
-- ARGV[2] now                '' for the Redis server's clock
-- ARGV[3] lease_seconds
-- ARGV[4] per_destination
-- ARGV[5] failures_to_hold
-- ARGV[6] retry_for          a webhook's retry window (seconds from its creation)
-- ARGV[7] webhook_prefix     a webhook's hash is webhook_prefix .. id
-- ARGV[8] destination_prefix a destination's state is destination_prefix .. destination, its
--                            webhooks in flight (id -> lease end) that .. ':inflight'
-- Returns {seconds until more may be due, id, id, ...}
--!include common
--!include destination
local due = KEY.webhooks_due
local room, now = tonumber(ARG.room), clock(ARG.now)
local lease_end = now + tonumber(ARG.lease_seconds)
local per_destination = tonumber(ARG.per_destination)
local failures_to_hold = tonumber(ARG.failures_to_hold)
local retry_for, webhook_prefix = tonumber(ARG.retry_for), ARG.webhook_prefix
local destination_prefix = ARG.destination_prefix
--: a webhook held back by its destination's in-flight cap looks again this much later
local RECHECK = 1

local granted = {}
if room > 0 then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, 4 * room + 16)) do
    if #granted >= room then break end
    local hook = redis.call('HMGET', webhook_prefix .. id, 'url', 'dest', 'created_at')
    local dest = hook[2] or (hook[1] and destination(hook[1]))
    local window_end = tonumber(hook[3] or now) + retry_for
    local not_before = nil
    if dest and window_end > now then
      local state, inflight = destination_prefix .. dest, destination_prefix .. dest .. ':inflight'
      redis.call('ZREMRANGEBYSCORE', inflight, '-inf', now)
      local f = redis.call('HMGET', state, 'failures', 'held_until')
      local limit = per_destination
      if tonumber(f[1] or '0') >= failures_to_hold then limit = 1 end
      if tonumber(f[2] or '0') > now then
        not_before = tonumber(f[2])
      elseif redis.call('ZCARD', inflight) >= limit then
        not_before = now + RECHECK
      else
        redis.call('ZADD', inflight, lease_end, id)
        redis.call('EXPIRE', inflight, math.ceil(tonumber(ARG.lease_seconds)) + 60)
      end
    end
    if not_before then
      redis.call('ZADD', due, math.min(not_before, window_end), id)
    else
      redis.call('ZADD', due, lease_end, id)
      granted[#granted + 1] = id
    end
  end
end

table.insert(granted, 1, tostring(next_due_in(due, now, room - #granted)))
return granted
