-- Gives back one counted login attempt, or forgets them all.
-- KEYS[1] counter. ARGV[1] 1 to reset, 0 to give back one.
if ARGV[1] == '1' then
  return redis.call('DEL', KEYS[1])
end
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then
  redis.call('DECR', KEYS[1])
end
return 0
