-- A broker message that cannot be read leaves the consumer's processing list for the dead
-- messages, in one step (it is in exactly one of the two at every instant), with its reason.
-- When its task id could be read and names no job and no result yet, that id ends in FAILURE
-- (InvalidMessage), so that a producer waiting on it gets an answer; an id that names a job is
-- left alone (a stranger's message cannot touch another's job).
-- KEYS[1] processing        the consumer's processing list holding the message
-- KEYS[2] dead_messages     a stream, at most max_entries long
-- KEYS[3] job               the hash of the job the task id names (any key when none)
-- KEYS[4] result            that id's result document
-- ARGV[1] raw               the message as it is in the processing list
-- ARGV[2] kept              what is kept of it (its first bytes, when it is long)
-- ARGV[3] reason
-- ARGV[4] queue             the list it came from
-- ARGV[5] task_id           '' when none could be read
-- ARGV[6] size              its length in bytes
-- ARGV[7] max_entries
-- ARGV[8] doc               the FAILURE result document up to its task_id
-- ARGV[9] ttl
-- Returns the dead message's id
--!include common
local processing, stream, job, result = KEY.processing, KEY.dead_messages, KEY.job, KEY.result
local raw, kept, reason, queue, task_id = ARG.raw, ARG.kept, ARG.reason, ARG.queue, ARG.task_id
local size, max_entries, doc, ttl = ARG.size, ARG.max_entries, ARG.doc, ARG.ttl
redis.call('LREM', processing, 1, raw)
local id = redis.call('XADD', stream, 'MAXLEN', '~', max_entries, '*', 'reason', reason,
                      'queue', queue, 'task_id', task_id, 'bytes', size,
                      'truncated', #kept < #raw and 1 or 0, 'raw', kept)
if task_id ~= '' and redis.call('EXISTS', job) == 0 and redis.call('EXISTS', result) == 0 then
  write_result(result, doc, task_id, ttl)
end
return id
