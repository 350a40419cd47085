-- wrk script for scripts/bench_ingest.py.
-- args: <pool.bin> <pool.idx> <path> <id-nonce(8 hex)> <threads> <header>...
--   (header = "Name: value"; Host included by the caller)
-- Bodies come from a pool written by scripts/bench/pool.py. A body stored in
-- several parts gets a fresh event id spliced between its parts per request
-- (uuid4-shaped: nonce, thread, counter), so ids never repeat within a run;
-- a body whose index line ends in "ts=N" gets the current UTC time (ISO 8601,
-- as sentry-sdk writes it) at its N-th splice point instead, so events carry the
-- time they were sent.
-- Threads take interleaved pool slots (t, t+T, ...), so a pool of pre-built
-- single-part bodies repeats nothing until the run has used all of it.
-- done() prints one line "BENCH_JSON {...}" with counts and latency percentiles.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

local bodies = {}
local nbodies = 0
local prefix = ""
local nonce = "00000000"
local counter = -1
local nthreads = 1
local stamp_second = -1
local stamp_prefix = ""
statuses = {}

local function load_pool(bin_path, idx_path)
  -- Sequential reads keep one copy of the pool in memory (LuaJIT's heap is small).
  local f = assert(io.open(bin_path, "rb"))
  for line in io.lines(idx_path) do
    local parts = {}
    local lens, ts = line:match("^([%d ]*) ts=(%d+)$")
    if lens == nil then
      lens = line
    end
    for len in lens:gmatch("%d+") do
      local n = tonumber(len)
      local part = f:read(n) or ""
      assert(#part == n, "pool data shorter than its index")
      parts[#parts + 1] = part
    end
    parts.ts = tonumber(ts)
    nbodies = nbodies + 1
    bodies[nbodies] = parts
  end
  assert(f:read(1) == nil, "pool data longer than its index")
  f:close()
  assert(nbodies > 0, "empty pool")
end

function init(args)
  load_pool(args[1], args[2])
  nonce = args[4]
  nthreads = tonumber(args[5])
  local head = { "POST " .. args[3] .. " HTTP/1.1" }
  for i = 6, #args do
    head[#head + 1] = args[i]
  end
  prefix = table.concat(head, "\r\n") .. "\r\n"
  statuses = {}
end

function request()
  counter = counter + 1
  local parts = bodies[(counter * nthreads + tid - 1) % nbodies + 1]
  local body
  if #parts == 1 then
    body = parts[1]
  else
    local id = string.format("%s%04x4000%s%015x", nonce, tid, "8", counter)
    if parts.ts == nil then
      body = table.concat(parts, id)
    else
      local second = os.time()
      if second ~= stamp_second then -- format the date once a second, not per request
        stamp_second, stamp_prefix = second, os.date("!%Y-%m-%dT%H:%M:%S", second)
      end
      local now = stamp_prefix .. string.format(".%06dZ", counter % 1000000)
      local ts = parts.ts
      body = table.concat(parts, id, 1, ts) .. now .. table.concat(parts, id, ts + 1)
    end
  end
  return prefix .. "Content-Length: " .. #body .. "\r\n\r\n" .. body
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local codes = {}
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses")
    for code, n in pairs(s) do
      codes[code] = (codes[code] or 0) + n
    end
  end
  local code_items = {}
  for code, n in pairs(codes) do
    code_items[#code_items + 1] = string.format('"%d": %d', code, n)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"duration_us": %d, "requests": %d, "bytes": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"status_codes": {%s}, '
      .. '"latency_us": {"min": %d, "mean": %.1f, "max": %d, "stdev": %.1f, '
      .. '"p50": %d, "p90": %d, "p99": %d, "p999": %d}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    table.concat(code_items, ", "),
    latency.min, latency.mean, latency.max, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)
  ))
end
