-- Counts one login attempt in a fixed window that starts with its first attempt;
-- attempts while limited do not extend it, so a lockout always ends.
-- KEYS[1] counter. ARGV: 1 limit, 2 window ms.
-- Returns -1 if the attempt may proceed, else the ms left in the window.
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
if n > tonumber(ARGV[1]) then
  return ttl
end
return -1
