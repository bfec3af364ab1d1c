-- Record a POST before it is sent (when, to which tune, what text): if its answer is lost, this
-- record is how the job finds its prompt instead of paying for a second one. Refused for a job
-- that is no longer ours, or was cancelled (then it lets go: nothing is sent).
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
-- KEYS[13] stats            the job's first POST is observed in `post_seconds|<lane>` (enqueue
--                           to POST, lib/histogram.lua)
-- ARGV[1] job_id
-- ARGV[2] owner
-- ARGV[3] now
-- ARGV[4] events           the pub/sub channel of job events (Keys.events_channel)
-- ARGV[5] event            the job's event JSON to append to its stream, '' for none
-- ARGV[6] webhook_prefix
-- ARGV[7] retention
-- ARGV[8...] fields
-- Returns 'ok' | 'lost' | 'revoked'
--!include common
--!include job_event
--!include job
--!include histogram
local id, owner = ARG.job_id, ARG.owner
if not owns(KEY.leases, id, owner) then return 'lost' end
if redis.call('HGET', KEY.job, 'status') ~= 'queued' then
  settle_revoked(id, tonumber(ARG.now))
  return 'revoked'
end
local f = redis.call('HMGET', KEY.job, 'first_post_at', 'created_at', 'lane')
if tonumber(f[1] or '0') == 0 and f[2] and f[3] then  -- its first POST
  observe(KEY.stats, 'post_seconds|' .. f[3], math.max(0, ARG.now - tonumber(f[2])))
end
hset_fields(KEY.job, ARG.fields)
job_event(KEY.job, id, ARG.event)
return 'ok'
