-- Lists a user's live sessions, newest first, pruning index entries whose keys expired.
-- KEYS[1] user hash (holds the index), KEYS[2] legacy index. ARGV[1] session key prefix.
-- Returns {{id, created, last_used, device, user_agent, ip, expires_at}, ...}.
local entries = index_entries(KEYS[1], KEYS[2])
table.sort(entries, function(a, b)
  local x, y = tonumber(a[2]), tonumber(b[2])
  if x ~= y then
    return x > y
  end
  return a[1] > b[1]
end)
local out = {}
for _, entry in ipairs(entries) do
  local key = ARGV[1] .. entry[1]
  local v = redis.call('HMGET', key, 'h', 'l', 'd', 'a', 'i')
  if v[1] then
    out[#out + 1] = {entry[1], entry[2], v[2], v[3] or '', v[4] or '', v[5] or '', redis.call('PEXPIRETIME', key)}
  else
    unindex(KEYS[1], entry[1])
  end
end
return out
