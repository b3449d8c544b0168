-- Revokes one session by id. KEYS[1] session hash, KEYS[2] user hash (holds the index).
-- ARGV[1] session id. Returns 1 if a live session was revoked.
local n = revoke(KEYS[1])
unindex(KEYS[2], ARGV[1])
return n
