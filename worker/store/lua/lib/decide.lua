--!include common
--!include destination
-- decide(e): record a job's outcome once and deliver it. `e` holds the job's keys and values:
--   id, job, followers, result, live, dead, stats, generation, latency, webhooks_due, inline,
--   now, retention, outcome, status, doc, ttl, result_prefix, counter, state, error, seconds,
--   cost, webhook_prefix, webhook_url, webhook_type, token_prefix, created_at, and existing: the
--   outcome already recorded (false for none) when the caller read it, else nil
-- Writes the result document for the job and each follower (their keys are made from
-- result_prefix: followers are only known here), queues the webhooks (their hashes are
-- webhook_prefix .. message id, likewise), ends the job's callback token (token_prefix .. token),
-- drops its inline image (kept a day more for a failed job, which a redrive may POST again),
-- keeps the record for `retention`, and only then counts it: a counter that cannot be
-- incremented is skipped (redis.pcall), it never stops a decision half-way.
-- Returns the outcome as recorded (an earlier decision wins), whether it is new, the followers.
local FAILED_INLINE_IMAGE_SECONDS = 86400

local function queue_webhook(e, job_id, url)
  if url == '' then return end
  local message = 'msg_' .. job_id
  local redriven = redis.call('HGET', e.job, 'redriven')
  if redriven and job_id == e.id then message = message .. '_' .. redriven end
  local key = e.webhook_prefix .. message
  redis.call('HSET', key, 'url', url, 'dest', destination(url), 'job_id', job_id, 'source', e.id,
             'type', e.webhook_type, 'created_at', e.now, 'attempts', 0, 'status', 'pending')
  redis.call('EXPIRE', key, e.retention)
  redis.call('ZADD', e.webhooks_due, e.now, message)
end

local function count(e)
  redis.pcall('HINCRBY', e.stats, 'outcome:' .. e.state, 1)
  redis.pcall('HINCRBY', e.stats, e.counter .. '|' .. e.state, 1)
  if e.error ~= '' then redis.pcall('HINCRBY', e.stats, 'error:' .. e.error, 1) end
  if e.cost ~= '' then redis.pcall('HINCRBY', e.stats, e.counter .. '|cost_mc', e.cost) end
  local seconds = tonumber(e.seconds)
  if seconds then
    local old = tonumber(redis.call('GET', e.generation))
    if old then seconds = old * 0.8 + seconds * 0.2 end
    redis.call('SET', e.generation, tostring(seconds))
  end
  local created = tonumber(e.created_at)
  if created and created > 0 then
    local kept = redis.call('LPUSH', e.latency, e.counter .. '|' .. (tonumber(e.now) - created))
    if kept > 5100 then redis.call('LTRIM', e.latency, 0, 4999) end
  end
end

local function decide(e)
  local outcome = e.existing
  if outcome == nil then outcome = redis.call('HGET', e.job, 'outcome') end
  local followers = redis.call('HGETALL', e.followers)
  if outcome then return outcome, 0, followers end
  redis.call('HSET', e.job, 'outcome', e.outcome, 'status', e.status, 'finished_at', e.now)
  redis.call('SREM', e.live, e.id)
  if e.status == 'failed' then redis.call('ZADD', e.dead, e.now, e.id) end
  write_result(e.result, e.doc, e.id, e.ttl)
  queue_webhook(e, e.id, e.webhook_url)
  for i = 1, #followers, 2 do
    write_result(e.result_prefix .. followers[i], e.doc, followers[i], e.ttl)
    queue_webhook(e, followers[i], followers[i + 1])
  end
  local token = redis.call('HGET', e.job, 'token')
  if token then redis.call('DEL', e.token_prefix .. token) end
  if e.status == 'failed' then
    redis.call('EXPIRE', e.inline, FAILED_INLINE_IMAGE_SECONDS)
  else
    redis.call('DEL', e.inline)
  end
  redis.call('EXPIRE', e.job, e.retention)
  count(e)
  return e.outcome, 1, followers
end
