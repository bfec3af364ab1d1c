-- Send a dead webhook again, under the same webhook-id and body, with a new retry window (it
-- starts now: `created_at` is reset).
-- KEYS[1] webhook
-- KEYS[2] webhooks_due
-- KEYS[3] webhooks_dead
-- ARGV[1] message_id
-- ARGV[2] now
-- ARGV[3] retention
-- Returns 'redriven', or the webhook's status ('missing' when it is gone)
local status = redis.call('HGET', KEY.webhook, 'status')
if status ~= 'dead' then return status or 'missing' end
redis.call('HSET', KEY.webhook, 'status', 'pending', 'created_at', ARG.now)
redis.call('HDEL', KEY.webhook, 'first_attempt_at')
redis.call('EXPIRE', KEY.webhook, ARG.retention)
redis.call('ZREM', KEY.webhooks_dead, ARG.message_id)
redis.call('ZADD', KEY.webhooks_due, ARG.now, ARG.message_id)
return 'redriven'
