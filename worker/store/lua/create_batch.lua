-- Create a batch before its members' messages are sent (worker.store.batches): its hash and its
-- members. Sending the same batch again (same tenant, same members) changes nothing, so an
-- interrupted `enqueue_batch` is resumed by calling it again; another tenant's batch of the same
-- id, or one with other members, is a conflict.
-- KEYS[1] batch            its hash (lib/batch.lua)
-- KEYS[2] members          its job ids
-- ARGV[1] tenant
-- ARGV[2] now
-- ARGV[3] retention        seconds the batch is kept (from its last decided member)
-- ARGV[4] callback         its batch.completed webhook's URL, '' for none
-- ARGV[5...] job_ids
-- Returns 'new' | 'exists' | 'conflict'
local batch, members = KEY.batch, KEY.members
local size = #ARG.job_ids
local f = redis.call('HMGET', batch, 'tenant', 'size', 'callback')
if f[1] then
  if f[1] ~= ARG.tenant or tonumber(f[2]) ~= size or f[3] ~= ARG.callback then
    return 'conflict'
  end
  for _, id in ipairs(ARG.job_ids) do
    if redis.call('SISMEMBER', members, id) == 0 then return 'conflict' end
  end
  return 'exists'
end
redis.call('HSET', batch, 'tenant', ARG.tenant, 'size', size, 'callback', ARG.callback,
           'created_at', ARG.now, 'waiting', 0, 'succeeded', 0, 'failed', 0, 'revoked', 0,
           'decided', 0, 'cost_mc', 0, 'stored', 0)
for i = 1, size, 1000 do
  redis.call('SADD', members, unpack(ARG.job_ids, i, math.min(size, i + 999)))
end
redis.call('EXPIRE', batch, ARG.retention)
redis.call('EXPIRE', members, ARG.retention)
return 'new'
