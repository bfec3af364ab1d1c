-- A webhook's destination: the scheme, host and port of its URL, lower case. Webhooks to one
-- destination share its in-flight cap and its hold-back (grant_webhooks.lua, webhook_done.lua).
local function destination(url)
  local origin = string.match(url, '^(%a[%w+.-]*://[^/?#]*)')
  return origin and string.lower(origin) or url
end
