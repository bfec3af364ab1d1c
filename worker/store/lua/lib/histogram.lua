-- observe(stats, name, seconds): one observation in a histogram kept in the stats hash (the
-- caller's KEY.stats), fields `<name>|<bound>`
-- (not cumulative; +Inf past the last), `<name>|count` and `<name>|sum`; upper bounds in
-- seconds: worker.store.stats.JOB_BUCKETS. A counter that cannot be incremented is skipped
-- (redis.pcall): it never stops the script's transition half-way.
local JOB_BUCKETS = {1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600}

local function observe(stats, name, seconds)
  local bound = '+Inf'
  for _, b in ipairs(JOB_BUCKETS) do
    if seconds <= b then bound = tostring(b); break end
  end
  redis.pcall('HINCRBY', stats, name .. '|' .. bound, 1)
  redis.pcall('HINCRBY', stats, name .. '|count', 1)
  redis.pcall('HINCRBYFLOAT', stats, name .. '|sum', seconds)
end
