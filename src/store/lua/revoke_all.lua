-- Revokes every session of a user. KEYS[1] user hash (holds the index), KEYS[2]
-- legacy index. ARGV[1] session key prefix.
-- With KEYS[3] (a session hash) and ARGV[2], ARGV[3] (presented and successor token
-- hashes), first checks that the presented token is that session's current token or
-- its predecessor, and returns -1 without revoking anything if not.
-- Returns how many sessions were live.
if KEYS[3] then
  local current = redis.call('HGET', KEYS[3], 'h')
  if not current or (current ~= ARGV[2] and current ~= ARGV[3]) then
    return -1
  end
end
return revoke_index(KEYS[1], KEYS[2], ARGV[1])
