-- Revokes one session by id. KEYS[1] session hash, KEYS[2] index. ARGV[1] session id.
-- Returns 1 if a live session was revoked.
local n = revoke(KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return n
