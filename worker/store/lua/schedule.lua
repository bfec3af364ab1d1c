-- Look at the job again at `at` with a request other than a POST (its next poll, the next page
-- of Astria's listing, another look for an unanswered POST's prompt) and let go of it. A callback
-- that came meanwhile makes it due at once instead; a job cancelled meanwhile lets go (unless its
-- unanswered POST is still looked for).
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
-- KEYS[12] webhooks_due
-- ARGV[1] job_id
-- ARGV[2] owner
-- ARGV[3] now
-- ARGV[4] at
-- ARGV[5] events           the pub/sub channel of job events (Keys.events_channel)
-- ARGV[6] event            the job's event JSON to append to its stream, '' for none
-- ARGV[7] webhook_prefix
-- ARGV[8] retention
-- ARGV[9...] fields
-- Returns 'ok' | 'lost' | 'revoked' | 'delete'
--!include common
--!include job_event
--!include job
local id, owner, now = ARG.job_id, ARG.owner, tonumber(ARG.now)
if not owns(KEY.leases, id, owner) then return 'lost' end
hset_fields(KEY.job, ARG.fields)
local f = redis.call('HMGET', KEY.job, 'status', 'pending_post', 'poll_now')
if f[1] == 'revoked' and tonumber(f[2] or '0') == 0 then return settle_revoked(id, now) end
redis.call('HDEL', KEY.leases, id)
if f[3] then
  redis.call('HDEL', KEY.job, 'poll_now')
  redis.call('ZADD', KEY.due_poll, math.min(tonumber(ARG.at), tonumber(f[3])), id)
else
  redis.call('ZADD', KEY.due_poll, ARG.at, id)
end
job_event(KEY.job, id, ARG.event)
return 'ok'
