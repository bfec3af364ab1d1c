-- Cancel a job. One not yet sent to Astria is never sent; one waiting for images stops polling
-- (or is due for its DELETE when asked); either way its outcome is REVOKED at once. A POST
-- already under way is still recorded when it answers (created.lua); an unanswered one is
-- still looked for, so its prompt id is recorded. A job not registered yet is remembered and
-- refused when its message arrives. A job that already has an outcome keeps it.
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
-- KEYS[12] followers
-- KEYS[13] result
-- KEYS[14] live
-- KEYS[15] dead
-- KEYS[16] stats
-- KEYS[17] generation
-- KEYS[18] latency
-- KEYS[19] webhooks_due
-- KEYS[20] revoked          cancellations, also of jobs not registered yet
-- KEYS[21] leader_followers the leader's followers, when the job is a follower
-- KEYS[22] inline           the job's inline image
-- ARGV[1] job_id
-- ARGV[2] now
-- ARGV[3] retention
-- ARGV[4] outcome           JSON of the REVOKED outcome
-- ARGV[5] doc
-- ARGV[6] ttl
-- ARGV[7] result_prefix
-- ARGV[8] counter
-- ARGV[9] webhook_prefix
-- ARGV[10] webhook_url
-- ARGV[11] delete_prompt    1: delete the prompt at Astria once its id is known
-- ARGV[12] token_prefix     a callback token's key is token_prefix .. token
-- ARGV[13] events           the pub/sub channel of job events (Keys.events_channel)
-- ARGV[14] batch_prefix     a batch's hash is batch_prefix .. batch id (lib/batch.lua)
-- Returns the job's state after the call: 'revoked' (by this call), or the state it kept.
--!include common
--!include job
--!include decide
local id, now = ARG.job_id, tonumber(ARG.now)
local status = redis.call('HGET', KEY.job, 'status')
if not status then
  redis.call('ZADD', KEY.revoked, now, id)
  redis.call('ZREMRANGEBYSCORE', KEY.revoked, '-inf', now - tonumber(ARG.retention))
  write_result(KEY.result, ARG.doc, id, ARG.ttl)
  return 'revoked'
end
if status ~= 'queued' and status ~= 'waiting' and status ~= 'follower' then return status end

local d = {status = 'revoked', state = 'REVOKED', error = '', seconds = '', cost = '',
           webhook_type = 'job.revoked', created_at = redis.call('HGET', KEY.job, 'created_at')}
if status == 'follower' then
  redis.call('HDEL', KEY.leader_followers, id)  -- it no longer shares the leader's outcome
  decide(d)
  return 'revoked'
end
if ARG.delete_prompt == '1' then redis.call('HSET', KEY.job, 'delete_prompt', 1) end
decide(d)
if leased(KEY.leases, id, now) then return 'revoked' end  -- its holder settles it
if tonumber(redis.call('HGET', KEY.job, 'pending_post') or '0') > 0 then
  -- a POST's answer was lost: keep looking for the prompt, to record it (created.lua)
  redis.call('ZADD', KEY.due_poll, now, id)
  return 'revoked'
end
settle_revoked(id, now)
return 'revoked'
