--!include common
--!include webhook
--!include batch_member
-- Batches (worker.store.batches). A batch's hash (ARG.batch_prefix .. id) holds its tenant,
-- size, callback and counts: `waiting` (members whose prompt exists), `succeeded`, `failed`,
-- `revoked`, `decided` (their sum), `cost_mc`, `stored` (members whose images are copied,
-- copied.lua); `completed_at` once its last member is decided.
-- Its members (job ids, a set) are at .. ':members', its events (a stream) at .. ':events'.
-- A member's decision is counted by the script that decides it (lib/decide.lua), so no crash
-- can count one without the other; the decision that makes `decided` reach `size` sets
-- `completed_at` (HSETNX: once) and queues the one `batch.completed` webhook. A redrive after
-- that changes the counts, never completes the batch again. The scripts that include this name
-- ARG batch_prefix, now, retention, events, webhook_prefix and KEY webhooks_due.

-- Make a new job a member of `batch` ('' for none): only a job the batch was created with, of
-- the batch's own tenant. False when it is not one (a spec cannot join another's batch).
local function join_batch(job_key, job_id, tenant, batch)
  if batch == '' then return true end
  local key = ARG.batch_prefix .. batch
  if redis.call('HGET', key, 'tenant') ~= tenant
      or redis.call('SISMEMBER', key .. ':members', job_id) == 0 then
    return false
  end
  redis.call('HSET', job_key, 'batch', batch)
  return true
end

-- The counts as a table (what GET /v1/batches/{id} and the webhook carry, besides `queued`,
-- which is size - waiting - decided).
local function batch_counts(key)
  local v = redis.call('HMGET', key, 'size', 'waiting', 'succeeded', 'failed', 'revoked',
                       'decided', 'cost_mc', 'stored')
  local n = {}
  for i = 1, 8 do n[i] = tonumber(v[i] or '0') or 0 end
  return {size = n[1], queued = n[1] - n[2] - n[6], waiting = n[2], succeeded = n[3],
          failed = n[4], revoked = n[5], cost_mc = n[7], stored = n[8]}
end

-- Count a member's decision (`status`: succeeded, failed or revoked; `was_waiting`: its prompt
-- existed; `cost`: cost_mc, '' when unknown) and complete the batch when it was the last.
local function batch_decided(job_key, job_id, status, was_waiting, cost)
  local key, batch = batch_of(job_key)
  if not key then return end
  local now = tonumber(ARG.now)
  if was_waiting then redis.call('HINCRBY', key, 'waiting', -1) end
  redis.call('HINCRBY', key, status, 1)
  if cost ~= '' then redis.call('HINCRBY', key, 'cost_mc', cost) end
  local decided = redis.call('HINCRBY', key, 'decided', 1)
  redis.call('EXPIRE', key, ARG.retention)
  redis.call('EXPIRE', key .. ':members', ARG.retention)
  local channel_id = 'batch:' .. batch
  add_event(ARG.events, key, channel_id,
            cjson.encode({type = 'member', at = now, job_id = job_id, status = status}))
  if decided < tonumber(redis.call('HGET', key, 'size')) then return end
  if redis.call('HSETNX', key, 'completed_at', now) == 0 then return end
  local counts = batch_counts(key)
  local data = cjson.encode({batch_id = batch, counts = counts})
  put_webhook('msg_batch_' .. batch, redis.call('HGET', key, 'callback') or '', {
    'batch', batch, 'tenant', redis.call('HGET', key, 'tenant'), 'type', 'batch.completed',
    'data', data, 'finished_at', now})
  add_event(ARG.events, key, channel_id,
            cjson.encode({type = 'completed', at = now, batch_id = batch, counts = counts}))
end
