-- Creates a session and indexes it in its user's hash, pruning index entries whose
-- session keys have expired. One user's keys share a hash tag, so this is single-slot.
-- KEYS[1] session hash, KEYS[2] user hash (holds the index), KEYS[3] legacy index
-- ARGV: 1 session id, 2 token hash, 3 now ms, 4 expires-at ms (idle end),
--       5 absolute end ms, 6 device, 7 user agent, 8 ip, 9 session key prefix,
--       10 the password hash the login verified ('' to skip the check)
-- Returns 1, or 0 with nothing written when the password changed since it was verified.
if ARGV[10] ~= '' and redis.call('HGET', KEYS[2], 'p') ~= ARGV[10] then
  return 0
end
for _, entry in ipairs(index_entries(KEYS[2], KEYS[3])) do
  if redis.call('EXISTS', ARGV[9] .. entry[1]) == 0 then
    unindex(KEYS[2], entry[1])
  end
end
redis.call('HSET', KEYS[1], 'h', ARGV[2], 'l', ARGV[3], 'x', ARGV[5])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'd', ARGV[6]) end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'a', ARGV[7]) end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'i', ARGV[8]) end
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
redis.call('HSET', KEYS[2], 's:' .. ARGV[1], ARGV[3])
return 1
