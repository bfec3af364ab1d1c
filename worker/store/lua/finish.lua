-- Decide the outcome of a job we hold, deliver it (to the job and its followers), count it,
-- queue its webhooks and retire the job, in one script: no crash can leave an outcome decided
-- but undelivered. A second decision keeps the first (a cancel that came meanwhile, or a
-- redelivered step), and delivers that one again.
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
-- KEYS[12] followers        follower -> webhook URL
-- KEYS[13] result
-- KEYS[14] live
-- KEYS[15] dead
-- KEYS[16] stats
-- KEYS[17] generation
-- KEYS[18] latency          finished jobs' enqueue-to-outcome seconds
-- KEYS[19] webhooks_due
-- KEYS[20] inline           the job's inline image
-- KEYS[21] copies_due       jobs whose images are to be copied (worker.flow.copies)
-- ARGV[1] job_id
-- ARGV[2] owner
-- ARGV[3] now
-- ARGV[4] retention
-- ARGV[5] outcome           JSON
-- ARGV[6] status            succeeded | failed | revoked
-- ARGV[7] doc               the result document up to its task_id
-- ARGV[8] ttl               of result documents
-- ARGV[9] result_prefix     followers' result keys are result_prefix .. follower id
-- ARGV[10] counter          the stats field of the job's tenant and lane, without its last part
-- ARGV[11] state            SUCCESS | FAILURE | REVOKED
-- ARGV[12] error            the error's class name, '' for none
-- ARGV[13] seconds          Astria's generation time, '' when unknown
-- ARGV[14] cost             cost_mc, '' when unknown
-- ARGV[15] webhook_prefix   a webhook's hash is webhook_prefix .. message id
-- ARGV[16] webhook_url      the job's own, '' for none
-- ARGV[17] webhook_type     job.succeeded | job.failed | job.revoked
-- ARGV[18] token_prefix     a callback token's key is token_prefix .. token
-- ARGV[19] events           the pub/sub channel of job events (Keys.events_channel)
-- ARGV[20] batch_prefix     a batch's hash is batch_prefix .. batch id (lib/batch.lua)
-- ARGV[21] copy             1: a success's images are to be copied (STORAGE_URL is set)
-- ARGV[22...] fields        set on the job first
-- Returns {'lost'} | {outcome, new (1 or 0), follower, url, follower, url, ...}
--!include common
--!include job
--!include decide
local id, owner = ARG.job_id, ARG.owner
if not owns(KEY.leases, id, owner) then return {'lost'} end
hset_fields(KEY.job, ARG.fields)
local f = redis.call('HMGET', KEY.job, 'status', 'created_at', 'outcome')
local d = {status = ARG.status, state = ARG.state, error = ARG.error, seconds = ARG.seconds,
           cost = ARG.cost, webhook_type = ARG.webhook_type, created_at = f[2], existing = f[3]}
local outcome, new, followers = decide(d)
if new == 1 and ARG.status == 'succeeded' and ARG.copy == '1' then
  redis.call('ZADD', KEY.copies_due, ARG.now, id)  -- in the decision: no success loses its copy
end
if f[1] == 'revoked' then
  settle_revoked(id, tonumber(ARG.now))
elseif f[1] == 'waiting' then
  retire_waiting(id)
else
  retire(id)
end
local reply = {outcome, new}
for _, value in ipairs(followers) do reply[#reply + 1] = value end
return reply
