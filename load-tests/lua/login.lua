-- Password logins of seeded users, round robin over this thread's slice of them.
--
-- wrk -s login.lua <url> -- <users file> <threads>
--
-- Every successful login opens a new session, as a real one does.

local common = dofile((debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./") .. "common.lua")

counts = {}
setup = common.setup
done = common.done

local bodies = {}
local at = 0

function init(args)
  local all = common.lines(args[1])
  local nthreads = tonumber(args[2])
  for i = 1, #all do
    if (i - 1) % nthreads == tid then
      local email, password = all[i]:match("^(%S+) (%S+)$")
      bodies[#bodies + 1] = string.format('{"email":"%s","password":"%s"}', email, password)
    end
  end
end

local headers = { ["Content-Type"] = "application/json" }

function request()
  at = at % #bodies + 1
  return wrk.format("POST", "/v1/auth/login", headers, bodies[at])
end

function response(status)
  common.count("login_" .. status)
end
