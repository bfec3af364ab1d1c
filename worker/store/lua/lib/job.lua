-- Scripts that move one job name these KEYS (checked by tests/unit/test_structure.py):
--   job, leases, due_submit, due_poll, due_local, queued, expiry, inflight, inflight_jobs,
--   ready, turns  (ready and turns: the job's own lane)

-- A job whose prompt exists only waits in due_poll or due_local, counted in flight.
local function retire_waiting(id)
  redis.call('HDEL', KEY.leases, id)
  redis.call('ZREM', KEY.due_poll, id)
  redis.call('ZREM', KEY.due_local, id)
  release_inflight(KEY.inflight, KEY.inflight_jobs, id)
end

-- The job needs no more attention: out of every dispatch structure, its lease let go.
local function retire(id)
  retire_waiting(id)
  redis.call('ZREM', KEY.due_submit, id)
  leave_ready(KEY.queued, KEY.ready, KEY.turns, id)
  redis.call('HDEL', KEY.queued, id)
  redis.call('ZREM', KEY.expiry, id)
end

-- A cancelled job lets go: it is due at once for its DELETE when the cancel asked for one and
-- the prompt is known (and not deleted yet); otherwise it retires.
local function settle_revoked(id, now)
  local f = redis.call('HMGET', KEY.job, 'delete_prompt', 'prompt_id', 'prompt_deleted')
  if f[1] == '1' and f[2] and f[3] ~= '1' then
    redis.call('HDEL', KEY.leases, id)
    redis.call('ZADD', KEY.due_poll, now, id)
    return 'delete'
  end
  retire(id)
  return 'revoked'
end
