-- Send a dead webhook again, under the same webhook-id and body, with a new retry window (it
-- starts now: `created_at` is reset).
-- KEYS[1] webhook
-- KEYS[2] webhooks_due
-- KEYS[3] webhooks_dead
-- ARGV[1] message_id
-- ARGV[2] now
-- ARGV[3] retention
-- Returns 'redriven', or the webhook's status ('missing' when it is gone)
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'dead' then return status or 'missing' end
redis.call('HSET', KEYS[1], 'status', 'pending', 'created_at', ARGV[2])
redis.call('HDEL', KEYS[1], 'first_attempt_at')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 'redriven'
