-- Astria called back for a waiting job: keep its body on the job and make the job due at once
-- for a local step, which finishes it without a request. A worker holding the job now does that
-- when it lets go (schedule.lua).
-- KEYS[1] job
-- KEYS[2] leases
-- KEYS[3] due_poll
-- KEYS[4] due_local
-- ARGV[1] job_id
-- ARGV[2] prompt_id        the id in Astria's body
-- ARGV[3] body             Astria's prompt object, JSON
-- ARGV[4] now
-- ARGV[5] wake             the pub/sub channel that wakes the engines
-- Returns 'queued' | 'held' | 'ignored' (not waiting for that prompt)
--!include common
local f = redis.call('HMGET', KEYS[1], 'status', 'prompt_id')
if f[1] ~= 'waiting' or f[2] ~= ARGV[2] then return 'ignored' end
redis.call('HSET', KEYS[1], 'callback_prompt', ARGV[3])
if leased(KEYS[2], ARGV[1], tonumber(ARGV[4])) then return 'held' end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
redis.call('PUBLISH', ARGV[5], 'callback')
return 'queued'
