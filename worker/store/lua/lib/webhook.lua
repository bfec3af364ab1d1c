--!include destination
-- Queueing webhooks. The scripts that include this name KEY webhooks_due and ARG now, retention,
-- webhook_prefix (a webhook's hash is webhook_prefix .. message id).

-- put_webhook(message, url, fields): queue webhook `message` to `url` (none when ''), its hash
-- holding `fields` (name, value, ...) besides where it goes and how it has gone.
local function put_webhook(message, url, fields)
  if url == '' then return end
  local key = ARG.webhook_prefix .. message
  redis.call('HSET', key, 'url', url, 'dest', destination(url), 'created_at', ARG.now,
             'attempts', 0, 'status', 'pending', unpack(fields))
  redis.call('EXPIRE', key, ARG.retention)
  redis.call('ZADD', KEY.webhooks_due, ARG.now, message)
end

-- queue_webhook(webhook_type, source, job_id, url): a webhook to `url` for job `job_id`,
-- carrying the outcome of job `source` (a follower's webhook carries its leader's). The
-- script names KEY job (the source's hash, when job_id is the source). A redriven job's
-- webhook gets a message id of its own: its first one was delivered.
local function queue_webhook(webhook_type, source, job_id, url)
  if url == '' then return end  -- most jobs: no callback, nothing read
  local message = 'msg_' .. job_id
  if job_id == source then
    local redriven = redis.call('HGET', KEY.job, 'redriven')
    if redriven then message = message .. '_' .. redriven end
  end
  put_webhook(message, url, {'job_id', job_id, 'source', source, 'type', webhook_type})
end
