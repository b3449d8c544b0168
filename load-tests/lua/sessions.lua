-- Stateful session load: users rotating their own refresh tokens.
--
-- wrk -s sessions.lua <url> -- <tokens file> <connections> <threads> [rate/s] [mix] [users file]
--
-- Each thread takes a disjoint slice of the seeded refresh tokens and splits it into
-- one pool per connection. wrk's Lua API does not say which connection a callback
-- belongs to, so a pool is a connection slot: request() takes an idle pool, sends its
-- next token and tags the request with an X-Request-Id naming the pool; tokend echoes
-- the id, and response() puts the successor token from the body in the used token's
-- place. A connection has one request in flight, so there is always an idle pool and a
-- token is never presented twice at once: a token is used once, its successor next.
--
-- A non-200 answer to a refresh breaks that session's chain: the token is dropped and
-- counted as lost. If every pool is busy (a request timed out and wrk reconnected, or
-- wrk's start-up probe call of request() that is never sent), the pool sent longest
-- ago is reused with the same token; within the grace window tokend answers it with
-- the same successor, so nothing forks.
--
-- rate > 0 paces every connection so the whole run offers about that many requests
-- per second (open-ish loop through wrk's delay()).
--
-- mix "mixed": 90% refresh, 4% session listing (bearer token from the pool's last
-- answer), 3% logout (ends that session on purpose: counted as ended, not lost),
-- 3% login of a seeded user (the new session joins the pool).

local common = dofile((debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./") .. "common.lua")

counts = {}
setup = common.setup
done = common.done

local pools = {}
local idle = {}
local sent = 0
local users = {}
local next_user = 1
local mixed = false

local function take_slice(all, index, of)
  local per = math.floor(#all / of)
  local slice = {}
  for i = index * per + 1, (index + 1) * per do
    slice[#slice + 1] = all[i]
  end
  return slice
end

function init(args)
  local all = common.lines(args[1])
  local connections = tonumber(args[2])
  local nthreads = tonumber(args[3])
  local rate = tonumber(args[4] or "0") or 0
  mixed = (args[5] == "mixed")
  if mixed and args[6] then
    users = take_slice(common.lines(args[6]), tid, nthreads)
  end

  local mine = take_slice(all, tid, nthreads)
  local npools = math.max(1, math.floor(connections / nthreads))
  for p = 1, npools do
    pools[p] = { tokens = {}, at = 1, seq = 0, sent = 0, busy = false, access = nil }
    idle[#idle + 1] = p
  end
  for i, token in ipairs(mine) do
    local pool = pools[(i - 1) % npools + 1]
    pool.tokens[#pool.tokens + 1] = token
  end
  math.randomseed(tid * 7919 + 17)

  if rate > 0 then
    delay = common.pacer(connections, rate)
  end
end

local json_headers = { ["Content-Type"] = "application/json" }

local function tagged(p, kind)
  local pool = pools[p]
  pool.seq = pool.seq + 1
  sent = sent + 1
  pool.sent = sent
  pool.busy = true
  pool.kind = kind
  json_headers["X-Request-Id"] = string.format("t%dp%ds%d", tid, p, pool.seq)
  return json_headers
end

local function take_pool()
  local p = table.remove(idle)
  if p then
    return p
  end
  local oldest
  for q, pool in ipairs(pools) do
    if pool.busy and (not oldest or pool.sent < pools[oldest].sent) then
      oldest = q
    end
  end
  common.count("reclaimed")
  return oldest
end

local function login(p)
  local user = users[next_user]
  next_user = next_user % #users + 1
  local email, password = user:match("^(%S+) (%S+)$")
  return wrk.format("POST", "/v1/auth/login", tagged(p, "login"),
    string.format('{"email":"%s","password":"%s"}', email, password))
end

function request()
  local p = take_pool()
  local pool = pools[p]
  local token = pool.tokens[pool.at]
  if not token then
    if mixed and #users > 0 then
      return login(p)
    end
    -- Every token of this pool was lost: keep the connection busy on something
    -- that is not counted as a refresh (common.done leaves `filler` answers out).
    return wrk.format("GET", "/healthz", tagged(p, "filler"))
  end
  if mixed then
    local r = math.random()
    if r >= 0.97 and #users > 0 then
      return login(p)
    elseif r >= 0.94 then
      return wrk.format("POST", "/v1/auth/logout", tagged(p, "logout"),
        '{"refresh_token":"' .. token .. '"}')
    elseif r >= 0.90 and pool.access then
      local headers = tagged(p, "list")
      local get_headers = {
        ["Authorization"] = "Bearer " .. pool.access,
        ["X-Request-Id"] = headers["X-Request-Id"],
      }
      return wrk.format("GET", "/v1/sessions", get_headers)
    end
  end
  return wrk.format("POST", "/v1/auth/refresh", tagged(p, "refresh"),
    '{"refresh_token":"' .. token .. '"}')
end

local function drop_current(pool)
  table.remove(pool.tokens, pool.at)
  if pool.at > #pool.tokens then
    pool.at = 1
  end
end

function response(status, headers, body)
  local id = headers["x-request-id"] or headers["X-Request-Id"] or ""
  local p, seq = id:match("p(%d+)s(%d+)$")
  p, seq = tonumber(p), tonumber(seq)
  local pool = p and pools[p]
  if not pool then
    common.count("untagged_" .. status)
    return
  end
  local kind = pool.kind
  common.count(kind .. "_" .. status)
  if seq ~= pool.seq then
    -- An answer to a request whose pool was already reused: same successor, ignore.
    common.count("stale")
    return
  end

  if kind == "refresh" then
    local next_token = status == 200 and body:match('"refresh_token":"([^"]+)"')
    if next_token then
      pool.tokens[pool.at] = next_token
      pool.access = body:match('"access_token":"([^"]+)"')
      pool.at = pool.at % #pool.tokens + 1
    else
      common.count("lost")
      drop_current(pool)
    end
  elseif kind == "logout" then
    if status == 204 then
      common.count("ended")
    else
      common.count("lost")
    end
    drop_current(pool)
  elseif kind == "login" then
    local next_token = status == 200 and body:match('"refresh_token":"([^"]+)"')
    if next_token then
      table.insert(pool.tokens, pool.at, next_token)
      pool.access = body:match('"access_token":"([^"]+)"')
    end
  end

  pool.busy = false
  idle[#idle + 1] = p
end
