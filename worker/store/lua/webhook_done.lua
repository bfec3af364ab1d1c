-- The result of one delivery attempt of a webhook. Delivered: done (kept for the record).
-- Failed: due again at `next_at`, or a dead letter when its retries ran out. The body sent first
-- is kept, so every retry sends the same bytes under the same webhook-id.
-- KEYS[1] webhook
-- KEYS[2] webhooks_due
-- KEYS[3] webhooks_dead
-- ARGV[1] message_id
-- ARGV[2] now
-- ARGV[3] result           delivered | retry | dead
-- ARGV[4] next_at          when to retry
-- ARGV[5] error            what the last attempt got, '' when delivered
-- ARGV[6] body             the bytes sent
-- Returns 1, or 0 when the webhook is gone
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
redis.call('HSETNX', KEYS[1], 'body', ARGV[6])
redis.call('HSETNX', KEYS[1], 'first_attempt_at', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'last_attempt_at', ARGV[2], 'last_error', ARGV[5])
if ARGV[3] == 'delivered' then
  redis.call('HSET', KEYS[1], 'status', 'delivered', 'delivered_at', ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[1])
elseif ARGV[3] == 'retry' then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
else
  redis.call('HSET', KEYS[1], 'status', 'dead')
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
end
return 1
