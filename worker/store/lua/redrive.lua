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
-- KEYS[16] webhooks_due
-- ARGV[1] job_id
-- ARGV[2] now
-- ARGV[3] deadline         a redriven waiting job's new deadline
-- ARGV[4] lane
-- ARGV[5] member           tenant|seq|job id
-- ARGV[6] tenant
-- ARGV[7] wake             the pub/sub channel that wakes the engines
-- ARGV[8] token_prefix     a callback token's key is token_prefix .. token
-- ARGV[9] retention
-- ARGV[10] events           the pub/sub channel of job events (Keys.events_channel)
-- ARGV[11] batch_prefix     a batch's hash is batch_prefix .. batch id (lib/batch.lua)
-- ARGV[12] webhook_prefix
-- Returns 'redriven', or the state the job kept ('missing' when there is none)
--!include common
--!include job_event
--!include job
--!include batch_member
local id, now = ARG.job_id, ARG.now
redis.call('PUBLISH', ARG.wake, 'redrive')
local status = redis.call('HGET', KEY.job, 'status')
if status ~= 'failed' then return status or 'missing' end
local f = redis.call('HMGET', KEY.job, 'prompt_id', 'pending_post', 'token')
redis.call('HDEL', KEY.job, 'outcome', 'finished_at', 'poll_now', 'woken_at', 'step_failures',
           'ambiguous_posts')
if f[3] then redis.call('SET', ARG.token_prefix .. f[3], id, 'EX', ARG.retention) end
redis.call('HINCRBY', KEY.job, 'redriven', 1)
redis.call('HSET', KEY.job, 'retry_attempt', 0, 'retry_since', 0, 'list_before', 0,
           'list_oldest', 0)
redis.call('PERSIST', KEY.job)
redis.call('ZREM', KEY.dead, id)
redis.call('SADD', KEY.live, id)
redis.call('DEL', KEY.result)
batch_moved(KEY.job, f[1] and 1 or 0, -1)
job_event(KEY.job, id, cjson.encode({type = 'redriven', at = tonumber(now)}))
local function count_inflight()
  redis.call('HSET', KEY.inflight_jobs, id, ARG.tenant)
  redis.call('HINCRBY', KEY.inflight, ARG.tenant, 1)
end
if f[1] then
  redis.call('HSET', KEY.job, 'status', 'waiting', 'deadline', ARG.deadline, 'polls', 0)
  count_inflight()
  redis.call('ZADD', KEY.due_poll, now, id)
  return 'redriven'
end
redis.call('HSET', KEY.job, 'status', 'queued')
redis.call('HSET', KEY.queued, id, ARG.lane .. '|' .. ARG.member)
if tonumber(f[2] or '0') > 0 then
  count_inflight()
  redis.call('ZADD', KEY.due_poll, now, id)
else
  join_ready(KEY.ready, KEY.turns, KEY.dispatch, ARG.lane, ARG.member)
end
return 'redriven'
