--!include common
--!include webhook
-- job_event(job_key, job_id, event, always): append a job's event (JSON with its `type` and `at`) to its
-- stream and publish it (lib/common.lua add_event); and, when its spec's `webhook_events` asked
-- for this type (the job's `webhook_events` field, ',queued,waiting,'), queue it as a webhook
-- `job.<type>` to the spec's callback, its `data` the event with the job's id, its id
-- `msg_<job id>_<stream entry id>`: each event once, in the same script as its transition.
-- `always`: sent to every job with a callback whatever it asked for (`stored`: copied.lua), as
-- its end is (which is not sent here: lib/decide.lua queues it). The
-- scripts that include this name ARG events, now, retention, webhook_prefix and KEY
-- webhooks_due.
local function job_event(job_key, job_id, event, always)
  local entry = add_event(ARG.events, job_key, job_id, event)
  if not entry then return end
  local wanted = not always and redis.call('HGET', job_key, 'webhook_events')  -- most: none
  if not always and not wanted then return end
  local data = cjson.decode(event)
  if wanted and not string.find(wanted, ',' .. data.type .. ',', 1, true) then return end
  local f = redis.call('HMGET', job_key, 'spec', 'tenant')
  if not f[1] then return end
  local url = cjson.decode(f[1]).callback
  if type(url) ~= 'string' then return end
  data.job_id = job_id
  put_webhook('msg_' .. job_id .. '_' .. entry, url, {
    'job_id', job_id, 'tenant', f[2] or 'default', 'type', 'job.' .. data.type,
    'data', cjson.encode(data), 'finished_at', data.at})
end
