-- Creates a session and indexes it under its user, pruning index members whose
-- session keys have expired. One user's keys share a hash tag, so this is single-slot.
-- KEYS[1] session hash, KEYS[2] user's session index (sorted set, score = created ms),
-- KEYS[3] user hash
-- ARGV: 1 session id, 2 token hash, 3 now ms, 4 expires-at ms (idle end),
--       5 absolute end ms, 6 device, 7 user agent, 8 ip, 9 session key prefix,
--       10 the password hash the login verified ('' to skip the check)
-- Returns 1, or 0 with nothing written when the password changed since it was verified.
if ARGV[10] ~= '' and redis.call('HGET', KEYS[3], 'p') ~= ARGV[10] then
  return 0
end
local ids = redis.call('ZRANGE', KEYS[2], 0, -1)
for _, id in ipairs(ids) do
  if redis.call('EXISTS', ARGV[9] .. id) == 0 then
    redis.call('ZREM', KEYS[2], id)
  end
end
redis.call('HSET', KEYS[1], 'h', ARGV[2], 'r', ARGV[3], 'c', ARGV[3], 'l', ARGV[3], 'x', ARGV[5])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'd', ARGV[6]) end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'a', ARGV[7]) end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'i', ARGV[8]) end
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
if redis.call('PEXPIRETIME', KEYS[2]) < tonumber(ARGV[5]) then
  redis.call('PEXPIREAT', KEYS[2], ARGV[5])
end
return 1
