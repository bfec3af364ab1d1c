-- Renew the leases of jobs whose requests are still running, so that no other worker takes a
-- job over while its POST or poll may still be answered. A lease that is no longer the caller's
-- is left alone; a renewed job stays due at its new lease's end (in whichever due set holds it).
-- KEYS[1] leases
-- KEYS[2] due_poll
-- KEYS[3] due_local
-- ARGV[1] lease_end         the new end of each lease
-- ARGV[2...] held           job id, owner, job id, owner, ...
-- Returns how many leases were renewed
--!include common
local leases, due_poll, due_local = KEY.leases, KEY.due_poll, KEY.due_local
local lease_end = ARG.lease_end
local renewed = 0
local held = ARG.held
for i = 1, #held, 2 do
  local id, owner = held[i], held[i + 1]
  if owns(leases, id, owner) then
    redis.call('HSET', leases, id, owner .. '|' .. lease_end)
    redis.call('ZADD', due_poll, 'XX', lease_end, id)
    redis.call('ZADD', due_local, 'XX', lease_end, id)
    renewed = renewed + 1
  end
end
return renewed
