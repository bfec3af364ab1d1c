-- A job that joined an idempotency key after the leader's outcome was decided: deliver that
-- outcome to it (its result document, and its webhook when its spec has a callback).
-- KEYS[1] job              the late follower's hash
-- KEYS[2] result
-- KEYS[3] webhooks_due
-- ARGV[1] job_id
-- ARGV[2] leader           whose record holds the outcome
-- ARGV[3] now
-- ARGV[4] retention
-- ARGV[5] doc
-- ARGV[6] ttl
-- ARGV[7] webhook_prefix
-- ARGV[8] webhook_url
-- ARGV[9] webhook_type
-- Returns 1
--!include common
--!include webhook
write_result(KEY.result, ARG.doc, ARG.job_id, ARG.ttl)
queue_webhook(ARG.webhook_type, ARG.leader, ARG.job_id, ARG.webhook_url)
return 1
