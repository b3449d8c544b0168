-- Plain GETs (JWKS, /healthz): no response() hook, so wrk neither parses headers nor
-- keeps bodies and stays as cheap as it can be; statuses above 399 are counted by wrk.
local common = dofile(debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "common.lua")

counts = {}
setup = common.setup
done = common.done
