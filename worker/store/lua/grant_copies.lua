-- Which jobs' copies run now (worker.flow.copies), for every worker: due ones, oldest first,
-- within the caller's free copy threads (their own budget: a slow store never takes a thread
-- from Astria's requests or the webhooks). Each granted job is due again at its lease's end,
-- later than its copy may take: never copied twice at once, and taken up again if its worker
-- dies.
-- KEYS[1] copies_due
-- ARGV[1] room               free copy threads of the caller
-- ARGV[2] now                '' for the Redis server's clock
-- ARGV[3] lease_seconds
-- Returns {seconds until more may be due, job id, job id, ...}
--!include common
local due, room, now = KEY.copies_due, tonumber(ARG.room), clock(ARG.now)
local granted = {}
if room > 0 then
  granted = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, room)
  for _, id in ipairs(granted) do
    redis.call('ZADD', due, now + tonumber(ARG.lease_seconds), id)
  end
end
table.insert(granted, 1, tostring(next_due_in(due, now, room - #granted)))
return granted
