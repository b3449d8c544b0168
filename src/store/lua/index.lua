-- Prepended to every script that touches the session index or revokes.
--
-- The session index lives in the user hash, one field per session: 's:<session id>'
-- holding the session's creation ms. A separate index key would cost every user a
-- keyspace entry of its own; a field costs a few dozen bytes.

-- The index's entries as {{id, created ms}, ...}. `legacy` names the sorted set that
-- held the index before it moved into the user hash (`tokend:{u:<uid>}:sessions`,
-- member session id, score created ms); its members are moved over and the set is
-- deleted, so sessions opened by an earlier build stay listed and revocable.
local function index_entries(user, legacy)
  local old = redis.call('ZRANGE', legacy, 0, -1, 'WITHSCORES')
  for i = 1, #old, 2 do
    redis.call('HSETNX', user, 's:' .. old[i], old[i + 1])
  end
  if #old > 0 then
    redis.call('DEL', legacy)
  end
  local out = {}
  local all = redis.call('HGETALL', user)
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == 's:' then
      out[#out + 1] = {string.sub(all[i], 3), all[i + 1]}
    end
  end
  return out
end

local function unindex(user, id)
  redis.call('HDEL', user, 's:' .. id)
end

-- revoke: replaces a live session hash with a tombstone (a hash holding only `v`), so a
-- later refresh can tell "revoked" from "expired". The tombstone keeps the session's
-- remaining TTL, at most one day.
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

-- Revokes every session in a user's index and empties the index; returns how many
-- sessions were live.
local function revoke_index(user, legacy, prefix)
  local n = 0
  for _, entry in ipairs(index_entries(user, legacy)) do
    n = n + revoke(prefix .. entry[1])
    unindex(user, entry[1])
  end
  return n
end
