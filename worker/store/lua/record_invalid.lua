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
-- ARGV[12...] fields       spec, tenant, lane, ...
-- Returns 1, or 0 when the job was recorded before
--!include common
--!include decide
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'created_at', ARGV[2], 'post_attempts', 0)
hset_from(KEYS[1], 12)
decide({id = ARGV[1], job = KEYS[1], followers = KEYS[2], result = KEYS[3], live = KEYS[4],
        dead = KEYS[5], stats = KEYS[6], generation = KEYS[7], latency = KEYS[8],
        webhooks_due = KEYS[9], now = ARGV[2], retention = ARGV[3], outcome = ARGV[4],
        status = 'failed', doc = ARGV[5], ttl = ARGV[6], result_prefix = ARGV[7],
        counter = ARGV[8], state = 'FAILURE', error = 'InvalidSpec', seconds = '', cost = '',
        webhook_prefix = ARGV[9], webhook_url = ARGV[10], webhook_type = 'job.failed',
        token_prefix = ARGV[11], inline = KEYS[10], created_at = ARGV[2]})
return 1
