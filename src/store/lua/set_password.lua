-- Replaces a user's password hash and revokes all their sessions.
-- KEYS[1] user hash (holds the index), KEYS[2] legacy index. ARGV: 1 new password hash, 2 session key prefix.
-- Returns -1 if the user does not exist, else how many sessions were live.
if redis.call('HEXISTS', KEYS[1], 'p') == 0 then
  return -1
end
redis.call('HSET', KEYS[1], 'p', ARGV[1])
return revoke_index(KEYS[1], KEYS[2], ARGV[2])
