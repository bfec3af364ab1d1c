--!include common
--!include webhook
--!include batch
--!include histogram
-- decide(d): record a job's outcome once and deliver it. The script names these KEYS and ARGV
-- (tests/unit/test_structure.py checks it):
--   KEY: job, followers, result, live, dead, stats, generation, latency, webhooks_due, inline
--   ARG: job_id, now, retention, outcome, doc, ttl, result_prefix, counter, webhook_prefix,
--        webhook_url, token_prefix, events, batch_prefix
-- and `d` holds what differs by decision: status, state, error, seconds, cost, webhook_type,
-- created_at, and existing: the outcome already recorded (false for none) when the caller read
-- it, else nil.
-- Writes the result document for the job and each follower (their keys are made from
-- result_prefix: followers are only known here), the terminal event of each (`type` the final
-- state, `outcome` as recorded; lib/common.lua add_event), queues the webhooks, ends the job's callback
-- token (token_prefix .. token), drops its inline image (kept a day more for a failed job, which
-- a redrive may POST again), keeps the record for `retention`, and only then counts it: a
-- counter that cannot be incremented is skipped (redis.pcall), it never stops a decision
-- half-way. The job and each follower that belongs to a batch is counted in it (lib/batch.lua).
-- Returns the outcome as recorded (an earlier decision wins), whether it is new, the followers.
local FAILED_INLINE_IMAGE_SECONDS = 86400

local function count(d)
  redis.pcall('HINCRBY', KEY.stats, 'outcome:' .. d.state, 1)
  redis.pcall('HINCRBY', KEY.stats, ARG.counter .. '|' .. d.state, 1)
  if d.error ~= '' then redis.pcall('HINCRBY', KEY.stats, 'error:' .. d.error, 1) end
  if d.cost ~= '' then redis.pcall('HINCRBY', KEY.stats, ARG.counter .. '|cost_mc', d.cost) end
  local seconds = tonumber(d.seconds)
  if seconds then
    local old = tonumber(redis.call('GET', KEY.generation))
    if old then seconds = old * 0.8 + seconds * 0.2 end
    redis.call('SET', KEY.generation, tostring(seconds))
  end
  local created = tonumber(d.created_at)
  if created and created > 0 then
    local seconds_since = tonumber(ARG.now) - created
    local _, _, lane = string.match(ARG.counter, '^(t)|(.*)|([^|]*)$')
    if lane then  -- the enqueue-to-outcome histogram of its lane and outcome
      observe(KEY.stats, 'job_seconds|' .. lane .. '|' .. d.state, math.max(0, seconds_since))
    end
    local kept = redis.call('LPUSH', KEY.latency, ARG.counter .. '|' .. seconds_since)
    if kept > 5100 then redis.call('LTRIM', KEY.latency, 0, 4999) end
  end
end

local function decide(d)
  local outcome = d.existing
  if outcome == nil then outcome = redis.call('HGET', KEY.job, 'outcome') end
  local followers = redis.call('HGETALL', KEY.followers)
  if outcome then return outcome, 0, followers end
  local was_waiting = redis.call('HGET', KEY.job, 'status') == 'waiting'
  redis.call('HSET', KEY.job, 'outcome', ARG.outcome, 'status', d.status, 'finished_at', ARG.now)
  redis.call('SREM', KEY.live, ARG.job_id)
  if d.status == 'failed' then redis.call('ZADD', KEY.dead, ARG.now, ARG.job_id) end
  write_result(KEY.result, ARG.doc, ARG.job_id, ARG.ttl)
  queue_webhook(d.webhook_type, ARG.job_id, ARG.job_id, ARG.webhook_url)
  for i = 1, #followers, 2 do
    write_result(ARG.result_prefix .. followers[i], ARG.doc, followers[i], ARG.ttl)
    queue_webhook(d.webhook_type, ARG.job_id, followers[i], followers[i + 1])
  end
  local token = redis.call('HGET', KEY.job, 'token')
  if token then redis.call('DEL', ARG.token_prefix .. token) end
  if d.status == 'failed' then
    redis.call('EXPIRE', KEY.inline, FAILED_INLINE_IMAGE_SECONDS)
  else
    redis.call('DEL', KEY.inline)
  end
  redis.call('EXPIRE', KEY.job, ARG.retention)
  local ended = final_event(d.status, ARG.now, ARG.outcome)
  add_event(ARG.events, KEY.job, ARG.job_id, ended)
  local job_key_prefix = string.sub(KEY.job, 1, #KEY.job - #ARG.job_id)
  batch_decided(KEY.job, ARG.job_id, d.status, was_waiting, d.cost)
  for i = 1, #followers, 2 do
    add_event(ARG.events, job_key_prefix .. followers[i], followers[i], ended)
    batch_decided(job_key_prefix .. followers[i], followers[i], d.status, false, '')
  end
  count(d)
  return ARG.outcome, 1, followers
end
