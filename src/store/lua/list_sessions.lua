-- Lists a user's live sessions, newest first, pruning members whose keys expired.
-- KEYS[1] index. ARGV[1] session key prefix.
-- Returns {{id, created, last_used, device, user_agent, ip, expires_at}, ...}.
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1, 'REV')) do
  local key = ARGV[1] .. id
  local v = redis.call('HMGET', key, 'c', 'l', 'd', 'a', 'i')
  if v[1] then
    out[#out + 1] = {id, v[1], v[2], v[3] or '', v[4] or '', v[5] or '', redis.call('PEXPIRETIME', key)}
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
