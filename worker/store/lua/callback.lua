-- Astria called back for a waiting job: the job is due for its poll now. The callback's body is
-- never taken for the outcome (anyone who learnt the URL could send one): Astria's own answer to
-- the poll is. Callbacks wake a job at most once every `spacing` seconds: a later one makes it
-- due at the end of that spacing (never ignored, so Astria's real callback is at most `spacing`
-- late however many forged ones came first, and forged ones cost at most a poll each spacing).
-- A worker holding the job now polls it then when it lets go (schedule.lua).
-- KEYS[1] job
-- KEYS[2] leases
-- KEYS[3] due_poll
-- ARGV[1] job_id
-- ARGV[2] prompt_id        the id in the callback's body
-- ARGV[3] now
-- ARGV[4] wake             the pub/sub channel that wakes the engines
-- ARGV[5] spacing          seconds
-- Returns 'queued' | 'held' | 'ignored' (the job waits for no such prompt)
--!include common
local job, leases, due_poll = KEY.job, KEY.leases, KEY.due_poll
local id, prompt_id, now, wake = ARG.job_id, ARG.prompt_id, tonumber(ARG.now), ARG.wake
local spacing = tonumber(ARG.spacing)
local f = redis.call('HMGET', job, 'status', 'prompt_id', 'woken_at')
if f[1] ~= 'waiting' or f[2] ~= prompt_id then return 'ignored' end
local at = math.max(now, tonumber(f[3] or '0') + spacing)
if tonumber(f[3] or '0') >= now then at = tonumber(f[3]) end  -- a wake is already set
redis.call('HSET', job, 'woken_at', at)
if leased(leases, id, now) then
  redis.call('HSET', job, 'poll_now', at)
  return 'held'
end
redis.call('ZADD', due_poll, 'LT', at, id)
if at <= now then redis.call('PUBLISH', wake, 'callback') end
return 'queued'
