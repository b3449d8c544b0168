-- Shared by the wrk scripts: thread bookkeeping, per-thread counters and the one-line
-- summary that run.sh parses. Each wrk thread runs its own Lua state; setup() and
-- done() run in a separate one and reach the threads through thread:get/set.

local common = {}

local threads = {}

-- Registers every thread and gives it its index (0-based) before its init() runs.
function common.setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

-- Reads non-empty lines of a file into a table.
function common.lines(path)
  local out = {}
  for line in io.lines(path) do
    if #line > 0 then
      out[#out + 1] = line
    end
  end
  return out
end

-- A wrk delay() that paces each of `connections` connections so that together they
-- offer about `rate` requests per second: each waits connections/rate seconds after an
-- answer. wrk takes whole milliseconds, so the gap is rounded at random to keep the
-- mean exact.
function common.pacer(connections, rate)
  local gap = connections * 1000 / rate
  return function()
    local whole = math.floor(gap)
    if math.random() < gap - whole then
      return whole + 1
    end
    return whole
  end
end

-- Per-thread counters live in the global `counts` (name -> number), so that done()
-- can collect them.
function common.count(name, by)
  counts[name] = (counts[name] or 0) + (by or 1)
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do
    keys[#keys + 1] = k
  end
  table.sort(keys)
  return keys
end

-- Prints `RESULT key=value ...` with throughput, latency percentiles (microseconds),
-- wrk's socket errors and every counter summed over threads.
function common.done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    local c = thread:get("counts") or {}
    for k, v in pairs(c) do
      total[k] = (total[k] or 0) + v
    end
  end
  -- Answers a script counts as `filler_<status>` (requests sent only to keep a
  -- connection busy) are not what the scenario measures: leave them out of the
  -- request count and the throughput, and say how many there were.
  local filler = 0
  for k, v in pairs(total) do
    if k:match("^filler_") then
      filler = filler + v
    end
  end
  local answered = summary.requests - filler
  local seconds = summary.duration / 1e6
  local parts = {
    string.format("requests=%d", answered),
    string.format("filler=%d", filler),
    string.format("seconds=%.2f", seconds),
    string.format("rps=%.1f", answered / seconds),
    string.format("p50_us=%d", latency:percentile(50)),
    string.format("p90_us=%d", latency:percentile(90)),
    string.format("p99_us=%d", latency:percentile(99)),
    string.format("max_us=%d", latency.max),
    string.format("mean_us=%d", latency.mean),
    string.format("err_connect=%d", summary.errors.connect),
    string.format("err_read=%d", summary.errors.read),
    string.format("err_write=%d", summary.errors.write),
    string.format("err_timeout=%d", summary.errors.timeout),
    string.format("status_over_399=%d", summary.errors.status),
  }
  for _, k in ipairs(sorted_keys(total)) do
    parts[#parts + 1] = string.format("%s=%d", k, total[k])
  end
  io.write("RESULT " .. table.concat(parts, " ") .. "\n")
end

return common
