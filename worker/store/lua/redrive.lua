-- Put a failed job back to work under the same id. It keeps its prompt id and its record of an
-- unanswered POST, so it resumes waiting, or looks for its prompt, rather than paying again; its
-- callback token works again.
-- KEYS[1] job
-- KEYS[2] leases
-- KEYS[3] due_submit
-- KEYS[4] due_poll
-- KEYS[5] due_local
-- KEYS[6] queued
-- KEYS[7] expiry
-- KEYS[8] inflight
-- KEYS[9] inflight_jobs
-- KEYS[10] ready
-- KEYS[11] turns
-- KEYS[12] dead
-- KEYS[13] live
-- KEYS[14] result
-- KEYS[15] dispatch
-- ARGV[1] job_id
-- ARGV[2] now
-- ARGV[3] deadline         a redriven waiting job's new deadline
-- ARGV[4] lane
-- ARGV[5] member           tenant|seq|job id
-- ARGV[6] tenant
-- ARGV[7] wake             the pub/sub channel that wakes the engines
-- ARGV[8] token_prefix     a callback token's key is token_prefix .. token
-- ARGV[9] retention
-- Returns 'redriven', or the state the job kept ('missing' when there is none)
--!include common
--!include job
local id, now = ARGV[1], ARGV[2]
redis.call('PUBLISH', ARGV[7], 'redrive')
local status = redis.call('HGET', J.job, 'status')
if status ~= 'failed' then return status or 'missing' end
local f = redis.call('HMGET', J.job, 'prompt_id', 'pending_post', 'token')
redis.call('HDEL', J.job, 'outcome', 'finished_at', 'poll_now', 'woken_at', 'step_failures',
           'ambiguous_posts')
if f[3] then redis.call('SET', ARGV[8] .. f[3], id, 'EX', ARGV[9]) end
redis.call('HINCRBY', J.job, 'redriven', 1)
redis.call('HSET', J.job, 'retry_attempt', 0, 'retry_since', 0, 'list_before', 0,
           'list_oldest', 0)
redis.call('PERSIST', J.job)
redis.call('ZREM', KEYS[12], id)
redis.call('SADD', KEYS[13], id)
redis.call('DEL', KEYS[14])
local function count_inflight()
  redis.call('HSET', J.inflight_jobs, id, ARGV[6])
  redis.call('HINCRBY', J.inflight, ARGV[6], 1)
end
if f[1] then
  redis.call('HSET', J.job, 'status', 'waiting', 'deadline', ARGV[3], 'polls', 0)
  count_inflight()
  redis.call('ZADD', J.due_poll, now, id)
  return 'redriven'
end
redis.call('HSET', J.job, 'status', 'queued')
redis.call('HSET', J.queued, id, ARGV[4] .. '|' .. ARGV[5])
if tonumber(f[2] or '0') > 0 then
  count_inflight()
  redis.call('ZADD', J.due_poll, now, id)
else
  join_ready(J.ready, J.turns, KEYS[15], ARGV[4], ARGV[5])
end
return 'redriven'
