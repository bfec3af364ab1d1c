-- The result of one attempt at a job's copies (worker.flow.copies). Stored: the job keeps
-- `stored` (JSON: url, key, sha256, bytes, content_type of each image), its batch counts it, and
-- its `stored` event is appended (lib/job_event.lua: a `job.stored` webhook when it has a
-- callback). Retry: due again at `next_at`. Dead: a dead letter (`astria-queue copies`).
-- KEYS[1] job
-- KEYS[2] copies_due
-- KEYS[3] copies_dead
-- KEYS[4] webhooks_due
-- ARGV[1] job_id
-- ARGV[2] now
-- ARGV[3] result           stored | retry | dead
-- ARGV[4] next_at
-- ARGV[5] stored           JSON list, when stored
-- ARGV[6] error            what the attempt got, '' when stored
-- ARGV[7] events           the pub/sub channel of job events (Keys.events_channel)
-- ARGV[8] webhook_prefix
-- ARGV[9] retention
-- ARGV[10] batch_prefix     a batch's hash is batch_prefix .. batch id (lib/batch.lua)
-- Returns 1, or 0 when the job is gone
--!include common
--!include job_event
--!include batch_member
local id, now, result = ARG.job_id, tonumber(ARG.now), ARG.result
if redis.call('EXISTS', KEY.job) == 0 then
  redis.call('ZREM', KEY.copies_due, id)
  return 0
end
if result == 'stored' then
  redis.call('ZREM', KEY.copies_due, id)
  redis.call('ZREM', KEY.copies_dead, id)
  if redis.call('HSETNX', KEY.job, 'stored', ARG.stored) == 1 then
    redis.call('HDEL', KEY.job, 'copy_error')
    batch_count(KEY.job, {'stored', 1})
    job_event(KEY.job, id, '{"type":"stored","at":' .. ARG.now .. ',"stored":' .. ARG.stored .. '}',
              true)
  end
  return 1
end
redis.call('HINCRBY', KEY.job, 'copy_attempts', 1)
redis.call('HSET', KEY.job, 'copy_error', ARG.error)
if result == 'retry' then
  redis.call('ZADD', KEY.copies_due, ARG.next_at, id)
else
  redis.call('ZREM', KEY.copies_due, id)
  redis.call('ZADD', KEY.copies_dead, now, id)
end
return 1
