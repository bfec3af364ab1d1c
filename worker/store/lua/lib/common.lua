-- Shared helpers. A lease is `owner|until` in the leases hash; a ready member is
-- `tenant|seq|job id`; the queued hash maps a job to `lane|member`.
local function clock(given)
  if given ~= nil and given ~= '' then return tonumber(given) end
  if redis.replicate_commands then redis.replicate_commands() end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end

local function owns(leases, id, owner)
  local v = redis.call('HGET', leases, id)
  return v ~= false and string.sub(v, 1, #owner + 1) == owner .. '|'
end

local function leased(leases, id, now)
  local v = redis.call('HGET', leases, id)
  if not v then return false end
  return tonumber(string.sub(v, string.find(v, '|', 1, true) + 1)) > now
end

-- Seconds until the first member of the due set `due` is due (at most 3600), for a caller that
-- has threads to spare (`spare`); with none, 3600: it looks again when one is freed.
local function next_due_in(due, now, spare)
  local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
  if spare <= 0 or #first == 0 then return 3600 end
  return math.max(0, math.min(3600, tonumber(first[2]) - now))
end

-- HSET of a list of field names and values (a script's ARG.fields), when it has any.
local function hset_fields(key, fields)
  if #fields > 0 then redis.call('HSET', key, unpack(fields)) end
end

local function split2(value)
  local sep = string.find(value, '|', 1, true)
  return string.sub(value, 1, sep - 1), string.sub(value, sep + 1)
end

local function member_id(member)
  local a = string.find(member, '|', 1, true)
  local b = string.find(member, '|', a + 1, true)
  return string.sub(member, b + 1)
end

local function has_ready(ready, tenant)
  return #redis.call('ZRANGEBYLEX', ready, '[' .. tenant .. '|', '(' .. tenant .. '}',
                     'LIMIT', 0, 1) > 0
end

-- Put a job (back) in its lane's queue at its own place; its tenant takes turns from the
-- lane's clock if it had no turn yet. True when the tenant had none: the engines may be idle.
local function join_ready(ready, turns, dispatch, lane, member)
  redis.call('ZADD', ready, 0, member)
  local tenant = split2(member)
  local start = tonumber(redis.call('HGET', dispatch, 'clock:' .. lane) or '0')
  return redis.call('ZADD', turns, 'NX', start, tenant) == 1
end

-- Take a job out of its lane's queue (if it is there).
local function leave_ready(queued, ready, turns, id)
  local entry = redis.call('HGET', queued, id)
  if not entry then return end
  local _, member = split2(entry)
  if redis.call('ZREM', ready, member) == 1 then
    local tenant = split2(member)
    if not has_ready(ready, tenant) then redis.call('ZREM', turns, tenant) end
  end
end

local function release_inflight(inflight, inflight_jobs, id)
  local tenant = redis.call('HGET', inflight_jobs, id)
  if tenant then
    redis.call('HDEL', inflight_jobs, id)
    if redis.call('HINCRBY', inflight, tenant, -1) <= 0 then redis.call('HDEL', inflight, tenant) end
  end
end

-- add_event(channel, job_key, job_id, event): append `event` (JSON with its `type`) to the job's
-- event stream (its hash's key .. ':events', worker.constants.Keys.events), trimmed to about its
-- last 100, and PUBLISH the job id on `channel`, where the HTTP API's event streams listen.
-- '' adds nothing. The stream is kept as long as the job's record. Returns the entry's id (nil
-- for none).
local function add_event(channel, job_key, job_id, event)
  if event == '' then return nil end
  local stream = job_key .. ':events'
  local entry = redis.call('XADD', stream, 'MAXLEN', '~', 100, '*', 'event', event)
  local ttl = redis.call('TTL', job_key)
  if ttl > 0 then redis.call('EXPIRE', stream, ttl) else redis.call('PERSIST', stream) end
  redis.call('PUBLISH', channel, job_id)
  return entry
end

-- The final event of a job (`type` its final state, `outcome` as recorded, JSON): a string,
-- not cjson, so that the outcome's JSON is kept as it was written.
local function final_event(status, now, outcome)
  return '{"type":"' .. status .. '","at":' .. now .. ',"outcome":' .. outcome .. '}'
end

-- A result document as Celery's Redis backend writes it: SET with expiry, then PUBLISH on the
-- key (AsyncResult.get() listens there). `prefix` is the document up to its task_id value.
local function write_result(key, prefix, id, ttl)
  local doc = prefix .. cjson.encode(id) .. '}'
  if tonumber(ttl) > 0 then redis.call('SET', key, doc, 'EX', ttl) else redis.call('SET', key, doc) end
  redis.call('PUBLISH', key, doc)
end
