-- Revokes a session if the presented token is current or the current token's
-- predecessor. KEYS[1] session hash, KEYS[2] user hash (holds the index).
-- ARGV: 1 presented hash, 2 successor hash, 3 session id. Returns 1 if revoked.
local current = redis.call('HGET', KEYS[1], 'h')
if current and (current == ARGV[1] or current == ARGV[2]) then
  revoke(KEYS[1])
  unindex(KEYS[2], ARGV[3])
  return 1
end
return 0
