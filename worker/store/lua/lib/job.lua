-- Scripts that move one job declare the same first eleven KEYS, in this order:
--   job, leases, due_submit, due_poll, due_local, queued, expiry, inflight, inflight_jobs,
--   ready, turns  (ready and turns: the job's own lane)
local J = {job = KEYS[1], leases = KEYS[2], due_submit = KEYS[3], due_poll = KEYS[4],
           due_local = KEYS[5], queued = KEYS[6], expiry = KEYS[7], inflight = KEYS[8],
           inflight_jobs = KEYS[9], ready = KEYS[10], turns = KEYS[11]}

-- A job whose prompt exists only waits in due_poll or due_local, counted in flight.
local function retire_waiting(id)
  redis.call('HDEL', J.leases, id)
  redis.call('ZREM', J.due_poll, id)
  redis.call('ZREM', J.due_local, id)
  release_inflight(J.inflight, J.inflight_jobs, id)
end

-- The job needs no more attention: out of every dispatch structure, its lease let go.
local function retire(id)
  retire_waiting(id)
  redis.call('ZREM', J.due_submit, id)
  leave_ready(J.queued, J.ready, J.turns, id)
  redis.call('HDEL', J.queued, id)
  redis.call('ZREM', J.expiry, id)
end

-- A cancelled job lets go: it is due at once for its DELETE when the cancel asked for one and
-- the prompt is known (and not deleted yet); otherwise it retires.
local function settle_revoked(id, now)
  local f = redis.call('HMGET', J.job, 'delete_prompt', 'prompt_id', 'prompt_deleted')
  if f[1] == '1' and f[2] and f[3] ~= '1' then
    redis.call('HDEL', J.leases, id)
    redis.call('ZADD', J.due_poll, now, id)
    return 'delete'
  end
  retire(id)
  return 'revoked'
end
