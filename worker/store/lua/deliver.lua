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
--!include decide
write_result(KEYS[2], ARGV[5], ARGV[1], ARGV[6])
queue_webhook({id = ARGV[2], job = KEYS[1], webhooks_due = KEYS[3], now = ARGV[3],
               retention = ARGV[4], webhook_prefix = ARGV[7], webhook_type = ARGV[9]},
              ARGV[1], ARGV[8])
return 1
