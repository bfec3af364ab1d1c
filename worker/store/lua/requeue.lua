-- Back to the lane's queue: the POST created nothing (429, 503, refused, or a 422 that re-routes
-- the job), or Astria's listing never showed the prompt of an unanswered POST. At `at` <= now
-- the job rejoins its queue at its own place; later, it waits in due_submit until then. A job
-- cancelled meanwhile lets go instead.
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
-- KEYS[12] dispatch
-- KEYS[13] webhooks_due
-- ARGV[1] job_id
-- ARGV[2] owner
-- ARGV[3] now
-- ARGV[4] at
-- ARGV[5] events           the pub/sub channel of job events (Keys.events_channel)
-- ARGV[6] event            the job's event JSON to append to its stream, '' for none
-- ARGV[7] webhook_prefix
-- ARGV[8] retention
-- ARGV[9...] fields
-- Returns 'ok' | 'lost' | 'revoked'
--!include common
--!include job_event
--!include job
local id, owner, now, at = ARG.job_id, ARG.owner, tonumber(ARG.now), tonumber(ARG.at)
if not owns(KEY.leases, id, owner) then return 'lost' end
hset_fields(KEY.job, ARG.fields)
if redis.call('HGET', KEY.job, 'status') ~= 'queued' then return settle_revoked(id, now) end
redis.call('HDEL', KEY.leases, id)
redis.call('ZREM', KEY.due_poll, id)
release_inflight(KEY.inflight, KEY.inflight_jobs, id)
local post_by = tonumber(redis.call('HGET', KEY.job, 'post_by') or '0')
if post_by > 0 then redis.call('ZADD', KEY.expiry, post_by, id) end
if at > now then
  redis.call('ZADD', KEY.due_submit, at, id)
else
  local lane, member = split2(redis.call('HGET', KEY.queued, id))
  join_ready(KEY.ready, KEY.turns, KEY.dispatch, lane, member)
end
job_event(KEY.job, id, ARG.event)
return 'ok'
