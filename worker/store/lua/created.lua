-- The job's prompt exists (its POST answered, or the prompt was found in Astria's listing): the
-- job waits for images, due for its first poll, and the result backend shows WAITING. Its inline
-- image is no longer needed and leaves Redis. A job cancelled meanwhile records the prompt and
-- ends here, or is due for the DELETE it asked for.
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
-- KEYS[12] result
-- KEYS[13] inline           the job's inline image
-- ARGV[1] job_id
-- ARGV[2] owner
-- ARGV[3] now
-- ARGV[4] first_poll_at
-- ARGV[5] doc              the WAITING document up to its task_id
-- ARGV[6] ttl
-- ARGV[7...] fields        prompt_id, tune_id, ... (pending_post 0)
-- Returns 'waiting' | 'delete' | 'revoked' | 'lost'
--!include common
--!include job
local id, owner = ARGV[1], ARGV[2]
if not owns(J.leases, id, owner) then return 'lost' end
hset_from(J.job, 7)
redis.call('DEL', KEYS[13])
if redis.call('HGET', J.job, 'status') ~= 'queued' then
  return settle_revoked(id, tonumber(ARGV[3]))
end
redis.call('HSET', J.job, 'status', 'waiting')
redis.call('HDEL', J.queued, id)
redis.call('ZREM', J.expiry, id)
redis.call('ZADD', J.due_poll, ARGV[4], id)
redis.call('HDEL', J.leases, id)
write_result(KEYS[12], ARGV[5], id, ARGV[6])
return 'waiting'
