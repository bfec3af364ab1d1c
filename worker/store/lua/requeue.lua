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
-- ARGV[1] job_id
-- ARGV[2] owner
-- ARGV[3] now
-- ARGV[4] at
-- ARGV[5...] fields
-- Returns 'ok' | 'lost' | 'revoked'
--!include common
--!include job
local id, owner, now, at = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if not owns(J.leases, id, owner) then return 'lost' end
hset_from(J.job, 5)
if redis.call('HGET', J.job, 'status') ~= 'queued' then return settle_revoked(id, now) end
redis.call('HDEL', J.leases, id)
redis.call('ZREM', J.due_poll, id)
release_inflight(J.inflight, J.inflight_jobs, id)
local post_by = tonumber(redis.call('HGET', J.job, 'post_by') or '0')
if post_by > 0 then redis.call('ZADD', J.expiry, post_by, id) end
if at > now then
  redis.call('ZADD', J.due_submit, at, id)
else
  local lane, member = split2(redis.call('HGET', J.queued, id))
  join_ready(J.ready, J.turns, KEYS[12], lane, member)
end
return 'ok'
