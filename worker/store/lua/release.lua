-- Let go of a job. With retire, it needs no more attention (its outcome is delivered, or it is
-- gone); otherwise it stays due at its lease's end, when any worker takes it up again.
-- KEYS[1] job
-- KEYS[2] leases
-- KEYS[3] due_submit
-- KEYS[4] due_poll
-- KEYS[5] due_local
-- KEYS[6] queued
-- KEYS[7] expiry
-- KEYS[8] inflight
-- KEYS[9] inflight_jobs
-- KEYS[10] ready
-- KEYS[11] turns
-- ARGV[1] job_id
-- ARGV[2] owner
-- ARGV[3] retire           1 or 0
-- ARGV[4...] fields
-- Returns 1, or 0 when the job was not ours
--!include common
--!include job
local id, owner = ARG.job_id, ARG.owner
if not owns(KEY.leases, id, owner) then return 0 end
hset_fields(KEY.job, ARG.fields)
if ARG.retire == '1' then retire(id) else redis.call('HDEL', KEY.leases, id) end
return 1
