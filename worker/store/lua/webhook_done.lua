-- The result of one delivery attempt of a webhook. Delivered: done (kept for the record). Failed:
-- due again at `next_at`, or a dead letter when its retries ran out. An attempt that got no
-- answer at all (a timeout, a refused or reset connection, a TLS failure) counts one more failure
-- in a row for its destination, which from `failures_to_hold` on is held back (no attempt before
-- hold_base * 2^(failures - failures_to_hold) seconds, at most hold_max; grant_webhooks.lua then
-- sends one probe at a time); any answer, an error status included, ends the streak (a quick
-- 500 costs a thread nothing, and its webhook retries on its own schedule). Either way the attempt
-- leaves the destination's in-flight set. The body sent first is kept, so every retry sends the
-- same bytes under the same webhook-id.
-- KEYS[1] webhook
-- KEYS[2] webhooks_due
-- KEYS[3] webhooks_dead
-- KEYS[4] stats            counts the attempt: `webhook:<result>` (delivered, retry, dead); a
--                          delivery is observed in `webhook_seconds|<type>` (queued to
--                          delivered, lib/histogram.lua)
-- ARGV[1] message_id
-- ARGV[2] now
-- ARGV[3] result             delivered | retry | dead
-- ARGV[4] next_at            when to retry
-- ARGV[5] error              what the last attempt got, '' when delivered
-- ARGV[6] body               the bytes sent
-- ARGV[7] destination_prefix see grant_webhooks.lua
-- ARGV[8] failures_to_hold
-- ARGV[9] hold_base
-- ARGV[10] hold_max
-- ARGV[11] answered          1 when the destination answered (with any status), else 0
-- Returns 1, or 0 when the webhook is gone
--!include destination
--!include histogram
local webhook, due, dead = KEY.webhook, KEY.webhooks_due, KEY.webhooks_dead
local id, now, result = ARG.message_id, tonumber(ARG.now), ARG.result
local next_at, error = ARG.next_at, ARG.error
local destination_prefix, failures_to_hold = ARG.destination_prefix, tonumber(ARG.failures_to_hold)
local hold_base, hold_max = tonumber(ARG.hold_base), tonumber(ARG.hold_max)
local answered = ARG.answered == '1'
if redis.call('EXISTS', webhook) == 0 then
  redis.call('ZREM', due, id)
  return 0
end
local f = redis.call('HMGET', webhook, 'dest', 'url')
local dest = f[1] or (f[2] and destination(f[2]))
if dest then
  local state = destination_prefix .. dest
  redis.call('ZREM', state .. ':inflight', id)
  if answered then
    redis.call('DEL', state)
  else
    local failures = redis.call('HINCRBY', state, 'failures', 1)
    if failures >= failures_to_hold then
      local hold = math.min(hold_max, hold_base * 2 ^ (failures - failures_to_hold))
      redis.call('HSET', state, 'held_until', now + hold)
    end
    redis.call('EXPIRE', state, 86400)
  end
end
redis.pcall('HINCRBY', KEY.stats, 'webhook:' .. result, 1)
redis.call('HSETNX', webhook, 'body', ARG.body)
redis.call('HSETNX', webhook, 'first_attempt_at', now)
redis.call('HINCRBY', webhook, 'attempts', 1)
redis.call('HSET', webhook, 'last_attempt_at', now, 'last_error', error)
if result == 'delivered' then
  local made = redis.call('HMGET', webhook, 'created_at', 'type')
  if made[1] and made[2] then
    observe(KEY.stats, 'webhook_seconds|' .. made[2], math.max(0, now - tonumber(made[1])))
  end
  redis.call('HSET', webhook, 'status', 'delivered', 'delivered_at', now)
  redis.call('ZREM', due, id)
elseif result == 'retry' then
  redis.call('ZADD', due, next_at, id)
else
  redis.call('HSET', webhook, 'status', 'dead')
  redis.call('ZREM', due, id)
  redis.call('ZADD', dead, now, id)
end
return 1
