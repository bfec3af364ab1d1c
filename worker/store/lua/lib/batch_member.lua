-- A job's batch, for scripts that move a member between counts without deciding it (the rest
-- is lib/batch.lua). The scripts that include this name ARG batch_prefix (a batch's hash is
-- batch_prefix .. batch id).

-- The batch hash of the job in `job_key` (its `batch` field), nil when it has none or its
-- batch is gone.
local function batch_of(job_key)
  local batch = redis.call('HGET', job_key, 'batch')
  if not batch then return nil end
  local key = ARG.batch_prefix .. batch
  if redis.call('EXISTS', key) == 0 then return nil end
  return key, batch
end

-- Add to counts of the job's batch (when it has one): `counts` is {name, n, name, n, ...}.
local function batch_count(job_key, counts)
  local key = batch_of(job_key)
  if not key then return end
  for i = 1, #counts, 2 do
    if counts[i + 1] ~= 0 then redis.call('HINCRBY', key, counts[i], counts[i + 1]) end
  end
end

-- A member's prompt exists (created.lua) or it is redriven: `waiting` and `failed`/`decided`
-- move by the given steps.
local function batch_moved(job_key, waiting, failed)
  batch_count(job_key, {'waiting', waiting, 'failed', failed, 'decided', failed})
end
