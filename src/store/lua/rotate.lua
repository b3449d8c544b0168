-- Rotates a session's refresh token. Returns {code, ...}:
--   {1, expires_at, absolute}  rotated: presented was current, successor is now current
--   {2, expires_at, absolute}  replayed within the grace window: successor stays current
--   {3}              reuse after the grace window: session revoked
--   {4, current}     presented is neither current nor its predecessor
--   {5}              the session was revoked
--   {0}              no such session (never existed or expired)
-- KEYS[1] session hash, KEYS[2] user hash (holds the session index)
-- ARGV: 1 presented hash, 2 successor hash, 3 now ms, 4 idle ms, 5 grace ms, 6 session id
local s = redis.call('HMGET', KEYS[1], 'h', 'l', 'x', 'v')
local current = s[1]
if not current then
  if s[4] then
    return {5}
  end
  return {0}
end
-- A rotation is stamped with the later of the caller's clock and Redis's own: a command
-- that waited in a stalled Redis after its caller gave up (503) must not look older
-- than the caller's retry, or that retry would fall outside the grace window.
if redis.replicate_commands then
  redis.replicate_commands()
end
local t = redis.call('TIME')
local now = math.max(tonumber(ARGV[3]), tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local idle = tonumber(ARGV[4])
local absolute = tonumber(s[3])
if current == ARGV[1] then
  local expires = math.min(now + idle, absolute)
  if expires <= now then
    redis.call('DEL', KEYS[1])
    unindex(KEYS[2], ARGV[6])
    return {0}
  end
  local stamp = string.format('%.0f', now)
  redis.call('HSET', KEYS[1], 'h', ARGV[2], 'l', stamp)
  redis.call('PEXPIREAT', KEYS[1], expires)
  return {1, expires, absolute}
end
if current == ARGV[2] then
  if now - tonumber(s[2]) < tonumber(ARGV[5]) then
    return {2, math.min(tonumber(s[2]) + idle, absolute), absolute}
  end
  revoke(KEYS[1])
  unindex(KEYS[2], ARGV[6])
  return {3}
end
return {4, current}
