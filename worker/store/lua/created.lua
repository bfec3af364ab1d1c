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
-- KEYS[14] webhooks_due
-- ARGV[1] job_id
-- ARGV[2] owner
-- ARGV[3] now
-- ARGV[4] first_poll_at
-- ARGV[5] doc              the WAITING document up to its task_id
-- ARGV[6] ttl
-- ARGV[7] events           the pub/sub channel of job events (Keys.events_channel)
-- ARGV[8] event            the job's event JSON to append to its stream, '' for none
-- ARGV[9] batch_prefix     a batch's hash is batch_prefix .. batch id (lib/batch.lua)
-- ARGV[10] webhook_prefix
-- ARGV[11] retention
-- ARGV[12...] fields        prompt_id, tune_id, ... (pending_post 0)
-- Returns 'waiting' | 'delete' | 'revoked' | 'lost'
--!include common
--!include job_event
--!include job
--!include batch_member
local id, owner = ARG.job_id, ARG.owner
if not owns(KEY.leases, id, owner) then return 'lost' end
hset_fields(KEY.job, ARG.fields)
redis.call('DEL', KEY.inline)
if redis.call('HGET', KEY.job, 'status') ~= 'queued' then
  return settle_revoked(id, tonumber(ARG.now))
end
redis.call('HSET', KEY.job, 'status', 'waiting')
batch_moved(KEY.job, 1, 0)
redis.call('HDEL', KEY.queued, id)
redis.call('ZREM', KEY.expiry, id)
redis.call('ZADD', KEY.due_poll, ARG.first_poll_at, id)
redis.call('HDEL', KEY.leases, id)
write_result(KEY.result, ARG.doc, id, ARG.ttl)
job_event(KEY.job, id, ARG.event)
return 'waiting'
