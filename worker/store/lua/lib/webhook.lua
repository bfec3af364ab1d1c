--!include destination
-- queue_webhook(webhook_type, source, job_id, url): a webhook to `url` (none when '') for job
-- `job_id`, carrying the outcome of job `source` (a follower's webhook carries its leader's).
-- The script names KEYS job (the source's hash, when job_id is the source), webhooks_due and
-- ARGV now, retention, webhook_prefix (a webhook's hash is webhook_prefix .. message id).
-- A redriven job's webhook gets a message id of its own: its first one was delivered.
local function queue_webhook(webhook_type, source, job_id, url)
  if url == '' then return end
  local message = 'msg_' .. job_id
  if job_id == source then
    local redriven = redis.call('HGET', KEY.job, 'redriven')
    if redriven then message = message .. '_' .. redriven end
  end
  local key = ARG.webhook_prefix .. message
  redis.call('HSET', key, 'url', url, 'dest', destination(url), 'job_id', job_id, 'source',
             source, 'type', webhook_type, 'created_at', ARG.now, 'attempts', 0,
             'status', 'pending')
  redis.call('EXPIRE', key, ARG.retention)
  redis.call('ZADD', KEY.webhooks_due, ARG.now, message)
end
