-- Prepended to every script that revokes. revoke: replaces a live session hash with a tombstone
-- (a hash holding only `v`), so a later refresh can tell "revoked" from "expired".
-- The tombstone keeps the session's remaining TTL, at most one day.
local function revoke(key)
  if redis.call('HEXISTS', key, 'h') == 0 then
    return 0
  end
  local ttl = redis.call('PTTL', key)
  if ttl < 0 or ttl > 86400000 then
    ttl = 86400000
  end
  redis.call('DEL', key)
  redis.call('HSET', key, 'v', 1)
  redis.call('PEXPIRE', key, ttl)
  return 1
end

-- Revokes every session in a user's index and drops the index; returns how many
-- sessions were live.
local function revoke_index(index, prefix)
  local n = 0
  for _, id in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    n = n + revoke(prefix .. id)
  end
  redis.call('DEL', index)
  return n
end
