-- Plain GETs (JWKS, /healthz, /readyz): no response() hook, so wrk neither parses headers
-- nor keeps bodies and stays as cheap as it can be; statuses above 399 are counted by wrk.
--
-- wrk -s static.lua <url> [-- <connections> <rate/s>]
--
-- With a rate, every connection is paced as in sessions.lua, so that the whole run
-- offers about that many requests per second.
local common = dofile((debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./") .. "common.lua")

counts = {}
setup = common.setup
done = common.done

function init(args)
  local connections = tonumber(args[1] or "0") or 0
  local rate = tonumber(args[2] or "0") or 0
  if connections > 0 and rate > 0 then
    math.randomseed(tid * 7919 + 17)
    delay = common.pacer(connections, rate)
  end
end
