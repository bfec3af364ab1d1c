-- Register a job once, in its lane's queue. A redelivered message finds the job and changes
-- nothing; a job with the idempotency_key of a live job becomes its follower (it shares that
-- job's prompt and outcome); a job cancelled before it arrived ends REVOKED at once.
-- KEYS[1] job               the new job's hash
-- KEYS[2] idem              the idempotency key's leader id (the job's own hash key: no key)
-- KEYS[3] leader            the hash of the leader read before the call (or the job's own)
-- KEYS[4] leader_followers  that leader's followers: follower id -> its webhook URL
-- KEYS[5] token             callback token -> job id
-- KEYS[6] live              the tenant's jobs without an outcome
-- KEYS[7] ready             the lane's queue
-- KEYS[8] turns             the lane's tenant turns
-- KEYS[9] queued
-- KEYS[10] expiry
-- KEYS[11] revoked
-- KEYS[12] dispatch
-- KEYS[13] result           the job's result document
-- KEYS[14] stats
-- KEYS[15] webhooks_due
-- ARGV[1] job_id
-- ARGV[2] now
-- ARGV[3] retention         seconds a record is kept
-- ARGV[4] lane
-- ARGV[5] member            tenant|seq|job id
-- ARGV[6] post_by           0: no expires_in
-- ARGV[7] leader_id         the leader read before the call ('' when none)
-- ARGV[8] webhook_url       the spec's callback, '' when none
-- ARGV[9] revoked_outcome   the outcome JSON of a job cancelled beforehand
-- ARGV[10] revoked_doc      its result document up to the task_id
-- ARGV[11] result_ttl
-- ARGV[12] counter          the stats field of this tenant and lane, without its last part
-- ARGV[13] webhook_prefix   a webhook's hash is webhook_prefix .. message id
-- ARGV[14] wake             the pub/sub channel that wakes the engines
-- ARGV[15...] fields        the record: name, value, ...
-- Returns {'new'} | {'exists'} | {'revoked'} | {'retry'} | {'follower', leader, outcome or ''}.
--!include common
--!include decide
local job, id, now, retention = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
if redis.call('HSETNX', job, 'status', 'queued') == 0 then return {'exists'} end

if redis.call('ZSCORE', KEYS[11], id) then
  redis.call('HSET', job, 'status', 'revoked', 'outcome', ARGV[9], 'finished_at', now,
             unpack(ARGV, 15))
  redis.call('EXPIRE', job, retention)
  write_result(KEYS[13], ARGV[10], id, ARGV[11])
  redis.call('HINCRBY', KEYS[14], 'outcome:REVOKED', 1)
  redis.call('HINCRBY', KEYS[14], ARGV[12] .. '|REVOKED', 1)
  queue_webhook({id = id, job = job, webhooks_due = KEYS[15], now = now, retention = retention,
                 webhook_prefix = ARGV[13], webhook_type = 'job.revoked'}, id, ARGV[8])
  return {'revoked'}
end

if KEYS[2] ~= job then
  local leader = redis.call('GET', KEYS[2]) or ''
  if leader ~= ARGV[7] then
    redis.call('DEL', job)
    return {'retry'}
  end
  if leader ~= '' and leader ~= id and redis.call('EXISTS', KEYS[3]) == 1 then
    redis.call('HSET', job, 'status', 'follower', 'leader', leader, unpack(ARGV, 15))
    redis.call('EXPIRE', job, retention)
    local outcome = redis.call('HGET', KEYS[3], 'outcome')
    if outcome then return {'follower', leader, outcome} end
    redis.call('HSET', KEYS[4], id, ARGV[8])
    redis.call('EXPIRE', KEYS[4], retention)
    return {'follower', leader, ''}
  end
  redis.call('SET', KEYS[2], id, 'EX', retention)
end

redis.call('HSET', job, unpack(ARGV, 15))
redis.call('SET', KEYS[5], id, 'EX', retention)
redis.call('SADD', KEYS[6], id)
redis.call('HSET', KEYS[9], id, ARGV[4] .. '|' .. ARGV[5])
if tonumber(ARGV[6]) > 0 then redis.call('ZADD', KEYS[10], ARGV[6], id) end
if join_ready(KEYS[7], KEYS[8], KEYS[12], ARGV[4], ARGV[5]) then
  redis.call('PUBLISH', ARGV[14], 'job')  -- a tenant with a backlog keeps the engines busy
end
redis.call('HINCRBY', KEYS[14], ARGV[12] .. '|enqueued', 1)
return {'new'}
