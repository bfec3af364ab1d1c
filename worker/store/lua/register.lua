-- Register a job once, in its lane's queue. A redelivered message finds the job and changes
-- nothing; a job with the idempotency_key of a live job becomes its follower (it shares that
-- job's prompt and outcome), unless max_followers already wait on it; a job cancelled before it
-- arrived ends REVOKED at once. A new job's inline image is kept apart from its record (deleted
-- once its prompt exists); a follower's or a refused job's is never stored.
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
-- KEYS[16] inline           the job's inline image
-- KEYS[17] tenants          tenant -> when it last registered a job
-- KEYS[18] followers        the job's own followers (lib/decide.lua; none yet)
-- KEYS[19] dead
-- KEYS[20] generation
-- KEYS[21] latency
-- ARGV[1] job_id
-- ARGV[2] now
-- ARGV[3] retention         seconds a record is kept
-- ARGV[4] lane
-- ARGV[5] member            tenant|seq|job id
-- ARGV[6] post_by           0: no expires_in
-- ARGV[7] leader_id         the leader read before the call ('' when none)
-- ARGV[8] webhook_url       the spec's callback, '' when none
-- ARGV[9] outcome           the outcome JSON of a job cancelled beforehand (lib/decide.lua)
-- ARGV[10] doc              its result document up to the task_id
-- ARGV[11] ttl              the result document's time to live
-- ARGV[12] counter          the stats field of this tenant and lane, without its last part
-- ARGV[13] webhook_prefix   a webhook's hash is webhook_prefix .. message id
-- ARGV[14] wake             the pub/sub channel that wakes the engines
-- ARGV[15] inline_image     the spec's input_image_base64, '' when none
-- ARGV[16] max_followers
-- ARGV[17] result_prefix
-- ARGV[18] token_prefix
-- ARGV[19] events           the pub/sub channel of job events (Keys.events_channel)
-- ARGV[20] batch_prefix     a batch's hash is batch_prefix .. batch id (lib/batch.lua)
-- ARGV[21] batch            the batch the job joins ('' for none): one it was created with
-- ARGV[22...] fields        the record: name, value, ...
-- Returns {'new'} | {'exists'} | {'revoked'} | {'retry'} | {'too_many'} | {'not_member'}
--       | {'follower', leader, outcome or ''}.
--!include common
--!include decide
--!include job_event
local job, idem, leader_job, leader_followers = KEY.job, KEY.idem, KEY.leader, KEY.leader_followers
local token, live, ready, turns, queued = KEY.token, KEY.live, KEY.ready, KEY.turns, KEY.queued
local expiry, revoked, dispatch, stats = KEY.expiry, KEY.revoked, KEY.dispatch, KEY.stats
local inline, tenants = KEY.inline, KEY.tenants
local id, now, retention, lane, member = ARG.job_id, ARG.now, ARG.retention, ARG.lane, ARG.member
local post_by, leader_id, webhook_url = tonumber(ARG.post_by), ARG.leader_id, ARG.webhook_url
local counter, wake = ARG.counter, ARG.wake
local inline_image, max_followers = ARG.inline_image, tonumber(ARG.max_followers)

if redis.call('HSETNX', job, 'status', 'queued') == 0 then return {'exists'} end
local tenant = split2(member)
if not join_batch(job, id, tenant, ARG.batch) then
  redis.call('DEL', job)
  return {'not_member'}
end
redis.call('ZADD', tenants, now, tenant)

if redis.call('ZSCORE', revoked, id) then
  hset_fields(job, ARG.fields)
  decide({status = 'revoked', state = 'REVOKED', error = '', seconds = '', cost = '',
          webhook_type = 'job.revoked'})
  return {'revoked'}
end

if idem ~= job then
  local leader = redis.call('GET', idem) or ''
  if leader ~= leader_id then
    redis.call('DEL', job)
    return {'retry'}
  end
  if leader ~= '' and leader ~= id and redis.call('EXISTS', leader_job) == 1 then
    local outcome = redis.call('HGET', leader_job, 'outcome')
    if not outcome and redis.call('HLEN', leader_followers) >= max_followers then
      redis.call('DEL', job)
      return {'too_many'}
    end
    redis.call('HSET', job, 'status', 'follower', 'leader', leader, unpack(ARG.fields))
    redis.call('EXPIRE', job, retention)
    job_event(job, id, cjson.encode({type = 'following', at = tonumber(now), leader = leader}))
    if outcome then
      local leader_status = redis.call('HGET', leader_job, 'status')
      add_event(ARG.events, job, id, final_event(leader_status, now, outcome))
      batch_decided(job, id, leader_status, false, '')
      return {'follower', leader, outcome}
    end
    redis.call('HSET', leader_followers, id, webhook_url)
    redis.call('EXPIRE', leader_followers, retention)
    return {'follower', leader, ''}
  end
  redis.call('SET', idem, id, 'EX', retention)
end

redis.call('HSET', job, unpack(ARG.fields))
if inline_image ~= '' then
  redis.call('SET', inline, inline_image, 'EX', retention)
  redis.call('HSET', job, 'inline_image', 1)
end
redis.call('SET', token, id, 'EX', retention)
redis.call('SADD', live, id)
redis.call('HSET', queued, id, lane .. '|' .. member)
if post_by > 0 then redis.call('ZADD', expiry, post_by, id) end
if join_ready(ready, turns, dispatch, lane, member) then
  redis.call('PUBLISH', wake, 'job')  -- a tenant with a backlog keeps the engines busy
end
redis.call('HINCRBY', stats, counter .. '|enqueued', 1)
job_event(job, id, cjson.encode({type = 'queued', at = tonumber(now), lane = lane}))
return {'new'}
