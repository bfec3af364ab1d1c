-- A job whose spec breaks a rule: keep it as a dead letter and deliver its failure, once,
-- however often its message is delivered. Nothing was sent to Astria.
-- KEYS[1] job
-- KEYS[2] followers
-- KEYS[3] result
-- KEYS[4] live
-- KEYS[5] dead
-- KEYS[6] stats
-- KEYS[7] generation
-- KEYS[8] latency
-- KEYS[9] webhooks_due
-- KEYS[10] inline
-- ARGV[1] job_id
-- ARGV[2] now
-- ARGV[3] retention
-- ARGV[4] outcome
-- ARGV[5] doc
-- ARGV[6] ttl
-- ARGV[7] result_prefix
-- ARGV[8] counter
-- ARGV[9] webhook_prefix
-- ARGV[10] webhook_url
-- ARGV[11] token_prefix
-- ARGV[12] events           the pub/sub channel of job events (Keys.events_channel)
-- ARGV[13] batch_prefix     a batch's hash is batch_prefix .. batch id (lib/batch.lua)
-- ARGV[14] batch            the batch it was sent for ('' for none; counted if it is a member)
-- ARGV[15...] fields       spec, tenant, lane, ...
-- Returns 1, or 0 when the job was recorded before
--!include common
--!include decide
if redis.call('EXISTS', KEY.job) == 1 then return 0 end
redis.call('HSET', KEY.job, 'created_at', ARG.now, 'post_attempts', 0)
hset_fields(KEY.job, ARG.fields)
join_batch(KEY.job, ARG.job_id, redis.call('HGET', KEY.job, 'tenant') or '', ARG.batch)
decide({status = 'failed', state = 'FAILURE', error = 'InvalidSpec', seconds = '',
        cost = '', webhook_type = 'job.failed', created_at = ARG.now})
return 1
