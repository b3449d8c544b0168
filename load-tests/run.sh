#!/usr/bin/env bash
# Runs the tokend load-test suite on loopback and writes a Markdown report.
#
#   load-tests/run.sh            full run (about 5 minutes), release build
#   load-tests/run.sh --smoke    CI-sized run of a few seconds per scenario; exits 1 if
#                                any request failed or any session chain broke
#   QUICK=1 load-tests/run.sh    same as --smoke
#
# Environment (all optional):
#   TOKEND_BIN, SEED_BIN  use these binaries instead of building release ones
#                         (SEED_BIN is the `load_seed` example)
#   RESULTS_DIR           where report.md and raw wrk output go (default load-tests/results)
#   PROFILE=1             profile tokend with `perf` during an extra Redis refresh run
#                         after the quoted one (results/profile.txt)
#   SESSIONS, CONNECTIONS, THREADS, DURATION  override the refresh scenario's shape
#
# Everything it starts (a private redis-server on a free port, tokend instances, wrk)
# listens on 127.0.0.1 only, stops by itself (wrk -d) and is killed on exit.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
LUA="$HERE/lua"

QUICK=${QUICK:-0}
for arg in "$@"; do
  case "$arg" in
    --smoke | --quick) QUICK=1 ;;
    *) echo "usage: $0 [--smoke]" >&2; exit 2 ;;
  esac
done

if [ "$QUICK" = 1 ]; then
  SESSIONS=${SESSIONS:-64}; CONNECTIONS=${CONNECTIONS:-8}; THREADS=${THREADS:-2}
  DURATION=${DURATION:-2}; SHORT=2; LOGIN_USERS=8; LOGIN_CONNECTIONS=2
  MEMORY_SESSIONS=1000; MODE="smoke"
else
  SESSIONS=${SESSIONS:-1024}; CONNECTIONS=${CONNECTIONS:-64}; THREADS=${THREADS:-2}
  DURATION=${DURATION:-30}; SHORT=15; LOGIN_USERS=64; LOGIN_CONNECTIONS=8
  MEMORY_SESSIONS=100000; MODE="full"
fi
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
RAW="$RESULTS_DIR/raw"
mkdir -p "$RAW"
REPORT="$RESULTS_DIR/report.md"
WORK=$(mktemp -d)

for tool in wrk redis-server redis-cli; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install -y wrk redis-server)" >&2; exit 1; }
done

# Stops what is still running of what this script started: `jobs -p` lists only
# background jobs this shell has not yet reaped, so a process stopped earlier (whose
# PID the system may have handed out again) is never signalled.
cleanup() {
  local pid
  for pid in $(jobs -p); do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

free_port() {
  local port
  while :; do
    # Below Linux's default ephemeral range (32768-60999), so an outgoing connection
    # never holds the port picked.
    port=$((10000 + RANDOM % 22000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
}

# wait_ready ADDR: polls tokend's own container health check until /healthz answers.
wait_ready() {
  local i
  for i in $(seq 1 200); do
    "$TOKEND_BIN" healthcheck --listen "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "tokend does not answer at $1" >&2
  return 1
}

# --- binaries -------------------------------------------------------------------------
if [ -z "${TOKEND_BIN:-}" ] || [ -z "${SEED_BIN:-}" ]; then
  log "building release binaries"
  (cd "$ROOT" && cargo build --release --quiet --bin tokend --example load_seed)
  TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
  TOKEND_BIN=${TOKEND_BIN:-$TARGET/release/tokend}
  SEED_BIN=${SEED_BIN:-$TARGET/release/examples/load_seed}
fi

# --- processes ------------------------------------------------------------------------
REDIS_PORT=$(free_port)
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }

start_redis() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --logfile "$RAW/redis.log" &
  REDIS_PID=$!
  local i
  for i in $(seq 1 100); do
    rcli ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "redis-server did not start" >&2
  return 1
}

# start_tokend NAME [VAR=value ...]: starts tokend with the given settings; sets
# TOKEND_PID and BASE.
start_tokend() {
  local name=$1
  shift
  local port metrics
  port=$(free_port)
  metrics=$(free_port)
  METRICS_PORT=$metrics
  env TOKEND_LISTEN="127.0.0.1:$port" TOKEND_METRICS_LISTEN="127.0.0.1:$metrics" \
    TOKEND_KEYS="$WORK/keys.json" "$@" "$TOKEND_BIN" 2>"$RAW/tokend-$name.log" &
  TOKEND_PID=$!
  BASE="http://127.0.0.1:$port"
  wait_ready "127.0.0.1:$port"
}

stop_tokend() {
  kill -TERM "$TOKEND_PID" 2>/dev/null || true
  wait "$TOKEND_PID" 2>/dev/null || true
}

# Removes every session key (users stay), so a scenario starts with exactly its seed.
drop_sessions() {
  rcli --scan --pattern 'tokend:{u:*}:s*' | xargs -r -n 500 redis-cli -p "$REDIS_PORT" unlink >/dev/null
}

seed_redis_sessions() {
  "$SEED_BIN" sessions-redis --redis-url "$REDIS_URL" --keys "$WORK/keys.json" \
    --count "$SESSIONS" --out "$1" --user-agent "$UA" 2>>"$RAW/seed.log"
}

# --- results --------------------------------------------------------------------------
declare -A R
SCENARIOS=()
FAILED=0

# run_wrk NAME CONNECTIONS THREADS SECONDS SCRIPT URL [script args...]
run_wrk() {
  local name=$1 conns=$2 threads=$3 secs=$4 script=$5 url=$6
  shift 6
  local out="$RAW/$name.txt"
  local load_before
  load_before=$(cut -d' ' -f1 /proc/loadavg)
  log "scenario $name: $conns connections, $threads threads, ${secs}s"
  local tokend_before redis_before wrk_cpu
  tokend_before=$(cpu_ticks "$TOKEND_PID")
  redis_before=$(cpu_ticks "${REDIS_PID:-}")
  # bash's `time` keyword gives wrk's own user and system seconds without a tool.
  # wrk exits 1 when it cannot connect (tokend gone): the missing RESULT below says so.
  wrk_cpu=$( { TIMEFORMAT='%U %S'; time wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout 5s \
    --latency -s "$LUA/$script" "$url" -- "$@" >"$out" 2>&1; } 2>&1) || true
  R[$name.cpu_tokend]=$(ticks_since "$TOKEND_PID" "$tokend_before")
  R[$name.cpu_redis]=$(ticks_since "${REDIS_PID:-}" "$redis_before")
  R[$name.cpu_wrk]=$(awk -v t="$CLK_TCK" '{ printf "%d", ($1 + $2) * t }' <<<"$wrk_cpu")
  local line kv
  line=$(grep '^RESULT ' "$out" | tail -1 || true)
  if [ -z "$line" ]; then
    echo "wrk printed no result for $name; see $out" >&2
    FAILED=1
    return
  fi
  SCENARIOS+=("$name")
  R[$name.conns]=$conns
  R[$name.secs]=$secs
  R[$name.load]="$load_before → $(cut -d' ' -f1 /proc/loadavg)"
  for kv in ${line#RESULT }; do
    R[$name.${kv%%=*}]=${kv#*=}
  done
}

# read_result NAME CONNECTIONS SECONDS: reads the RESULT of a wrk run started by hand.
read_result() {
  local name=$1 line kv
  line=$(grep '^RESULT ' "$RAW/$name.txt" | tail -1 || true)
  [ -n "$line" ] || { echo "wrk printed no result for $name" >&2; FAILED=1; return; }
  SCENARIOS+=("$name")
  R[$name.conns]=$2
  R[$name.secs]=$3
  for kv in ${line#RESULT }; do
    R[$name.${kv%%=*}]=${kv#*=}
  done
}

get() { echo "${R[$1]:-0}"; }

CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
# cpu_ticks PID: user plus system CPU time the process has used, in clock ticks (0 when
# there is no such process).
cpu_ticks() {
  [ -n "$1" ] && awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
# ticks_since PID BEFORE: CPU ticks PID used since BEFORE was read; 0 if it has exited.
ticks_since() {
  local now
  now=$(cpu_ticks "$1")
  echo $((now >= $2 ? now - $2 : 0))
}
# per_request NAME PROCESS: CPU µs that PROCESS (tokend, redis or wrk) spent per answered
# request of scenario NAME.
per_request() {
  awk -v t="$(get "$1.cpu_$2")" -v n="$(get "$1.requests")" -v hz="$CLK_TCK" \
    'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "n/a" }'
}

# refresh_histogram FILE: tokend's own latency histogram for answered refreshes (status
# 200), cumulative "le count" lines, read from /metrics over bash's /dev/tcp.
refresh_histogram() {
  local line
  : >"$1"
  { exec 5<>"/dev/tcp/127.0.0.1/$METRICS_PORT"; } 2>/dev/null || return 0
  printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&5
  while IFS= read -r line <&5; do
    case "$line" in
      tokend_http_request_duration_seconds_bucket*'route="/v1/auth/refresh"'*'status="200"'*)
        line=${line#*le=\"}
        echo "${line%%\"*} ${line##* }" ;;
    esac
  done >"$1"
  exec 5<&-
}

# server_share NAME BEFORE AFTER: the share of NAME's refreshes tokend itself answered
# within 1 ms and within 2.5 ms (histogram buckets), from two refresh_histogram files.
server_share() {
  local le
  for le in 0.001 0.0025; do
    R[$1.within_$le]=$(awk -v le="$le" 'FILENAME == ARGV[1] { b[$1] = $2; next }
      { d[$1] = $2 - b[$1] }
      END { if (d["+Inf"] > 0) printf "%.1f", 100 * d[le] / d["+Inf"]; else print "n/a" }' "$2" "$3")
  done
}
# The refresh/ceiling ratio a refresh would reach if its store call cost no more than
# a bare Redis round trip through tokend: each ceiling request takes 1/ceiling seconds
# of the machine, and a /readyz request costs 1/roundtrip - 1/static more than a
# /healthz one, so ceiling time / (ceiling time + round trip time).
attainable() {
  awk -v c="$(get ceiling.rps)" -v r="$(get roundtrip.rps)" -v s="$(get static.rps)" \
    'BEGIN { if (c > 0 && r > 0 && s > 0) { t = 1 / r - 1 / s; if (t < 0) t = 0
      printf "%.2f (round trip %.1f µs of machine time)", (1 / c) / (1 / c + t), t * 1e6 }
      else print "n/a" }'
}
ms() { awk -v us="$(get "$1")" 'BEGIN { printf "%.2f", us / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# Sums every counter of a scenario whose name matches a pattern (e.g. statuses).
statuses() {
  local name=$1 key out=""
  for key in "${!R[@]}"; do
    case "$key" in
      "$name".status_over_*) ;;
      "$name".*_[0-9][0-9][0-9]) out+="${key#"$name".} ${R[$key]}, " ;;
    esac
  done
  echo "${out%, }" | tr ',' '\n' | sed 's/^ //' | sort | paste -sd, - | sed 's/,/, /g'
}

# Requests that did not get an answer, or got a status over 399: socket errors,
# timeouts and error statuses. A refresh answered with an error also breaks its session
# chain and is counted once more under lost.
failures() {
  local n=$1
  echo $(($(get "$n.err_connect") + $(get "$n.err_read") + $(get "$n.err_write") \
    + $(get "$n.err_timeout") + $(get "$n.status_over_399")))
}

sample_rss() { # sample_rss PID FILE: VmRSS in KiB every 0.5 s until killed
  while kill -0 "$1" 2>/dev/null; do
    awk '/^VmRSS/ { print $2 }' "/proc/$1/status" >>"$2" 2>/dev/null || true
    sleep 0.5
  done
}

UA="Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
# One core's speed, independent of tokend: the same machine type has run these
# scenarios at less than half its usual speed when its host was busy, and this figure
# tells such a run apart from a slower tokend.
signs_per_s() {
  local rate=""
  if command -v openssl >/dev/null; then
    rate=$(openssl speed -seconds 1 ed25519 2>/dev/null |
      awk '/Ed25519/ { printf "%.0f", $(NF - 1) }' || true)
  fi
  echo "${rate:-n/a}"
}
START_SPEED=$(signs_per_s)
START_LOAD=$(cat /proc/loadavg)
START_TIME=$(date -u +%Y-%m-%dT%H:%M:%SZ)
"$TOKEND_BIN" keys generate --out "$WORK/keys.json" >/dev/null

# --- 1. ceiling: the same refresh load against the embedded store ---------------------
log "ceiling: tokend on the embedded store, seeding $SESSIONS sessions over HTTP"
start_tokend ceiling TOKEND_ARGON2_MEMORY_KIB=256 TOKEND_ARGON2_ITERATIONS=1
"$SEED_BIN" sessions-http --base "$BASE" --count "$SESSIONS" --out "$WORK/ceiling.tokens" \
  2>>"$RAW/seed.log" || { log "seeding over HTTP failed (see $RAW/seed.log)"; FAILED=1; }
: >"$WORK/rss-ceiling"
sample_rss "$TOKEND_PID" "$WORK/rss-ceiling" &
SAMPLER=$!
run_wrk ceiling "$CONNECTIONS" "$THREADS" "$DURATION" sessions.lua "$BASE" \
  "$WORK/ceiling.tokens" "$CONNECTIONS" "$THREADS"
kill "$SAMPLER" 2>/dev/null || true
stop_tokend

# --- 2. Redis: memory per session -------------------------------------------------------
start_redis
measure_memory() { # measure_memory NAME [seed flags...]
  # The seed writes the users first (a real deployment has them before any session),
  # then reports used_memory after the users and after the sessions.
  local name=$1 report before after
  shift
  rcli flushall >/dev/null
  report=$("$SEED_BIN" sessions-redis --redis-url "$REDIS_URL" --keys "$WORK/keys.json" \
    --count "$MEMORY_SESSIONS" --memory-report "$@" 2>>"$RAW/seed.log")
  before=$(awk -F= '/^used_memory_users=/ { print $2 }' <<<"$report")
  after=$(awk -F= '/^used_memory_sessions=/ { print $2 }' <<<"$report")
  R[mem.$name.before]=$before
  R[mem.$name.after]=$after
  R[mem.$name.keys]=$(rcli dbsize)
  R[mem.$name.per]=$(awk -v a="$after" -v b="$before" -v n="$MEMORY_SESSIONS" \
    'BEGIN { printf "%.0f", (a - b) / n }')
  rcli flushall >/dev/null
}
log "Redis memory: $MEMORY_SESSIONS sessions, bare and with a browser User-Agent"
measure_memory bare
measure_memory browser --user-agent "$UA" --device laptop
measure_memory four_per_user --per-user 4

# --- 3. Redis: refresh, paced refresh, logins, flood, JWKS, mixed ---------------------
start_tokend redis TOKEND_REDIS_URL="$REDIS_URL"
REDIS_TOKEND_PID=$TOKEND_PID

drop_sessions
seed_redis_sessions "$WORK/redis.tokens"
: >"$WORK/rss-redis"
sample_rss "$TOKEND_PID" "$WORK/rss-redis" &
SAMPLER=$!
rcli config resetstat >/dev/null
run_wrk refresh "$CONNECTIONS" "$THREADS" "$DURATION" sessions.lua "$BASE" \
  "$WORK/redis.tokens" "$CONNECTIONS" "$THREADS"
# Redis's own execution time per call (no I/O) of the rotation script and of the
# commands it runs, from INFO commandstats over the refresh run.
rcli info commandstats | tr -d '\r' >"$RAW/commandstats-refresh.txt"
for cmd in evalsha hmget hset pexpireat time; do
  R[cmd.$cmd]=$(awk -F'[=,:]' -v c="cmdstat_$cmd" '$1 == c {
    for (i = 2; i < NF; i += 2) if ($i == "usec_per_call") print $(i + 1) }' \
    "$RAW/commandstats-refresh.txt")
done
kill "$SAMPLER" 2>/dev/null || true
R[rss.refresh.hwm]=$(awk '/^VmHWM/ { print $2 }' "/proc/$TOKEND_PID/status" 2>/dev/null || echo 0)
# The profile comes from a run of its own after the quoted one: sampling call stacks
# costs tokend enough CPU to lower the throughput it measures by a third.
if [ "${PROFILE:-0}" = 1 ] && ! command -v perf >/dev/null; then
  log "PROFILE=1 needs perf (apt-get install -y linux-perf); no profile taken"
elif [ "${PROFILE:-0}" = 1 ]; then
  drop_sessions
  seed_redis_sessions "$WORK/profiled.tokens"
  perf record -e cpu-clock -F 999 -g -o "$RAW/perf.data" -p "$TOKEND_PID" -- \
    sleep "$SHORT" 2>"$RAW/perf-record.log" &
  PERF=$!
  log "profiling: refresh on Redis again, ${SHORT}s under perf (not in the report's table)"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SHORT}s" --timeout 5s -s "$LUA/sessions.lua" \
    "$BASE" -- "$WORK/profiled.tokens" "$CONNECTIONS" "$THREADS" >"$RAW/refresh-profiled.txt" 2>&1
  wait "$PERF" || true
  {
    echo "# tokend CPU samples during the Redis refresh run, by shared object"
    perf report -i "$RAW/perf.data" --stdio --no-children -g none --sort dso \
      --percent-limit 0.5 2>/dev/null | grep -v '^#' | grep -v '^$'
    echo "# by function, self time"
    perf report -i "$RAW/perf.data" --stdio --no-children -g none --sort symbol \
      --percent-limit 0.3 2>/dev/null | grep -v '^#' | grep -v '^$' | cut -c1-160
    echo "# by function, including callees"
    perf report -i "$RAW/perf.data" --stdio --children -g none --sort symbol \
      --percent-limit 2 2>/dev/null | grep -v '^#' | grep -v '^$' | cut -c1-160
  } >"$RESULTS_DIR/profile.txt" || true
fi
R[rss.refresh.max]=$(sort -n "$WORK/rss-redis" | tail -1)
R[rss.ceiling.max]=$(sort -n "$WORK/rss-ceiling" | tail -1)

HALF_RATE=$(awk -v r="$(get refresh.rps)" 'BEGIN { printf "%d", r / 2 }')
[ "$HALF_RATE" -gt 0 ] || HALF_RATE=100
SLOW_RATE=$((HALF_RATE / 8 > 0 ? HALF_RATE / 8 : 1))
drop_sessions
seed_redis_sessions "$WORK/half.tokens"
refresh_histogram "$WORK/hist.before"
run_wrk refresh_half "$CONNECTIONS" "$THREADS" "$SHORT" sessions.lua "$BASE" \
  "$WORK/half.tokens" "$CONNECTIONS" "$THREADS" "$HALF_RATE"
refresh_histogram "$WORK/hist.after"
server_share refresh_half "$WORK/hist.before" "$WORK/hist.after"

# With PROFILE=1, the paced load once more under `perf sched`: how long each woken
# thread waited for a CPU. A refresh takes four such wake-ups (tokend on the request,
# Redis on the script, tokend on the reply, wrk on the answer), so their tail is the
# paced p99's. A run of its own, as recording every context switch has a cost.
if [ "${PROFILE:-0}" = 1 ] && command -v perf >/dev/null; then
  drop_sessions
  seed_redis_sessions "$WORK/sched.tokens"
  log "profiling: paced refresh again, ${SHORT}s under perf sched (not in the report's table)"
  perf sched record -a -o "$RAW/sched.data" -- sleep "$SHORT" 2>"$RAW/sched-record.log" &
  PERF=$!
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SHORT}s" --timeout 5s -s "$LUA/sessions.lua" \
    "$BASE" -- "$WORK/sched.tokens" "$CONNECTIONS" "$THREADS" "$HALF_RATE" \
    >"$RAW/refresh_half-sched.txt" 2>&1
  wait "$PERF" || true
  R[sched.p99_us]=$(grep '^RESULT ' "$RAW/refresh_half-sched.txt" | tr ' ' '\n' |
    awk -F= '$1 == "p99_us" { print $2 }' || true)
  # One line per wake-up of tokend's, Redis's or wrk's threads: the thread's name
  # without its number (worker-0 -> worker) and its scheduling delay in ms. perf
  # records the whole machine; the process id (after the `/` of `[tid/pid]`, or the
  # sole id of a single-threaded process) keeps other processes' threads out.
  perf sched timehist -i "$RAW/sched.data" 2>/dev/null | awk -v tokend="$TOKEND_PID" \
    -v redis="$REDIS_PID" '$1 ~ /^[0-9]+\.[0-9]+$/ && NF >= 6 {
    name = $3; for (i = 4; i <= NF - 3; i++) name = name " " $i
    id = name; sub(/^.*\[/, "", id); sub(/\]$/, "", id); sub(/^.*\//, "", id)
    sub(/\[[0-9\/]+\]$/, "", name); sub(/-[0-9]+$/, "", name)
    if (id == tokend || id == redis || name == "wrk") print name "\t" $(NF - 1) }' \
    >"$WORK/delays" || true
  for task in worker acceptor redis-server wrk; do
    awk -F'\t' -v t="$task" '$1 == t { print $2 }' "$WORK/delays" | sort -n |
      awk -v t="$task" '{ v[NR] = $1; if ($1 > 0.5) slow++ }
        END { if (NR >= 20) printf "| %s | %d | %.3f | %.3f | %.3f | %.3f | %.1f%% |\n", t, NR,
          v[int(NR * 0.5) + 1], v[int(NR * 0.9) + 1], v[int(NR * 0.99) + 1], v[NR], 100 * slow / NR }'
  done >"$WORK/sched-rows"
fi

# The same paced load at an eighth of that rate (a sixteenth of saturation): where idle
# threads are slow to wake, latency grows as the load falls, which this row shows.
drop_sessions
seed_redis_sessions "$WORK/slow.tokens"
refresh_histogram "$WORK/hist.before"
run_wrk refresh_slow "$CONNECTIONS" "$THREADS" "$SHORT" sessions.lua "$BASE" \
  "$WORK/slow.tokens" "$CONNECTIONS" "$THREADS" "$SLOW_RATE"
refresh_histogram "$WORK/hist.after"
server_share refresh_slow "$WORK/hist.before" "$WORK/hist.after"

log "registering $LOGIN_USERS users (default argon2 cost)"
# Over HTTP: if tokend has gone, the scenarios that follow report no result.
"$SEED_BIN" users --base "$BASE" --count "$LOGIN_USERS" --out "$WORK/users" 2>>"$RAW/seed.log" ||
  { log "registering users failed (see $RAW/seed.log)"; FAILED=1; touch "$WORK/users"; }
run_wrk login "$LOGIN_CONNECTIONS" 1 "$SHORT" login.lua "$BASE" "$WORK/users" 1

drop_sessions
seed_redis_sessions "$WORK/flood.tokens"
log "login flood in the background, paced refresh in front"
wrk -t1 -c"$LOGIN_CONNECTIONS" -d"$((SHORT + 3))s" --timeout 10s -s "$LUA/login.lua" "$BASE" \
  -- "$WORK/users" 1 >"$RAW/login_flood.txt" 2>&1 &
FLOOD=$!
sleep 1
run_wrk refresh_flood "$CONNECTIONS" "$THREADS" "$SHORT" sessions.lua "$BASE" \
  "$WORK/flood.tokens" "$CONNECTIONS" "$THREADS" "$HALF_RATE"
wait "$FLOOD" || true
read_result login_flood "$LOGIN_CONNECTIONS" "$((SHORT + 3))"

run_wrk jwks "$CONNECTIONS" "$THREADS" "$SHORT" static.lua "$BASE/.well-known/jwks.json"
run_wrk static "$CONNECTIONS" "$THREADS" "$SHORT" static.lua "$BASE/healthz"

# Floors for the refresh figures: /readyz answers after one PING to Redis through the
# same client pool, with no signing, hashing or script, so it is what a bare Redis round
# trip costs through tokend; both routes are then paced at the refresh half rate.
run_wrk roundtrip "$CONNECTIONS" "$THREADS" "$SHORT" static.lua "$BASE/readyz"
run_wrk static_half "$CONNECTIONS" "$THREADS" "$SHORT" static.lua "$BASE/healthz" \
  "$CONNECTIONS" "$HALF_RATE"
run_wrk roundtrip_half "$CONNECTIONS" "$THREADS" "$SHORT" static.lua "$BASE/readyz" \
  "$CONNECTIONS" "$HALF_RATE"

drop_sessions
seed_redis_sessions "$WORK/mixed.tokens"
run_wrk mixed "$CONNECTIONS" "$THREADS" "$SHORT" sessions.lua "$BASE" \
  "$WORK/mixed.tokens" "$CONNECTIONS" "$THREADS" 0 mixed "$WORK/users"
# Live sessions only: a revoked session's key stays as a tombstone without `h`.
R[redis.live_sessions]=$(rcli eval "local n = 0
  for _, k in ipairs(redis.call('KEYS', ARGV[1])) do
    n = n + redis.call('HEXISTS', k, 'h')
  end
  return n" 0 'tokend:{u:*}:s:*')
stop_tokend

# --- report -----------------------------------------------------------------------------
END_LOAD=$(cat /proc/loadavg)
END_SPEED=$(signs_per_s)
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
memtotal=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
rustc_v=$(rustc -V 2>/dev/null || echo "unknown")
redis_v=$(redis-server --version | awk '{ print $3 }' | tr -d 'v=')
wrk_v=$( (wrk -v 2>&1 || true) | head -1 | awk '{ print $2 }')

cpu_row() { # cpu_row NAME: a row of the CPU-per-request table
  local n=$1 t r w
  t=$(per_request "$n" tokend); r=$(per_request "$n" redis); w=$(per_request "$n" wrk)
  awk -v n="$n" -v t="$t" -v r="$r" -v w="$w" -v c="$(nproc)" \
    'BEGIN { printf "| %s | %s | %s | %s | %.1f | %.1f |\n", n, t, r, w, t + r + w, (t + r + w) / c }'
}

row() { # row NAME WHAT
  local n=$1
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$n" "$2" \
    "$(get "$n.conns")" "$(printf '%.0f' "$(get "$n.rps")")" "$(ms "$n.p50_us")" \
    "$(ms "$n.p90_us")" "$(ms "$n.p99_us")" "$(ms "$n.max_us")" "$(failures "$n")" \
    "$(get "$n.lost")"
}

{
  echo "# tokend load test report ($MODE run)"
  echo
  echo "Command: \`load-tests/run.sh$([ "$QUICK" = 1 ] && echo ' --smoke')\`, started $START_TIME."
  echo
  echo "## Machine"
  echo
  echo "| | |"
  echo "| --- | --- |"
  echo "| CPUs (nproc) | $(nproc) |"
  echo "| CPU | $cpu |"
  echo "| memory | $memtotal |"
  echo "| kernel | $(uname -r) |"
  echo "| rustc | $rustc_v |"
  echo "| redis-server | $redis_v |"
  echo "| wrk | $wrk_v |"
  echo "| load average at start | $START_LOAD |"
  echo "| load average at end | $END_LOAD |"
  echo "| Ed25519 signatures/s on one core (\`openssl speed -seconds 1 ed25519\`), at start / end | $START_SPEED / $END_SPEED |"
  echo
  echo "tokend, Redis and wrk share the machine. A load average well above the CPU count"
  echo "before a scenario means other work was running: such figures are not quotable."
  echo "The signature rate measures the core itself: compare runs on different machines,"
  echo "or at different times, only where it is about the same."
  echo
  echo "## Scenarios"
  echo
  echo "Latencies in ms (wrk, closed loop unless paced). *failed* counts socket errors,"
  echo "timeouts and statuses over 399; *lost* counts refresh chains broken by a non-200"
  echo "answer (a refresh answered with an error is in both). $SESSIONS live sessions per"
  echo "refresh scenario, one user each, tokens rotated in place (each used once, its"
  echo "successor next)."
  echo
  echo "| scenario | what | conns | req/s | p50 | p90 | p99 | max | failed | lost |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  row ceiling "refresh, embedded store (ceiling)"
  row refresh "refresh, Redis"
  row refresh_half "refresh, Redis, paced at $HALF_RATE/s"
  row refresh_slow "refresh, Redis, paced at $SLOW_RATE/s"
  row refresh_flood "refresh, Redis, paced at $HALF_RATE/s, during login flood"
  row login "login, default argon2id"
  row login_flood "the login flood itself"
  row jwks "GET /.well-known/jwks.json"
  row static "GET /healthz (static baseline)"
  row roundtrip "GET /readyz: one Redis PING, nothing else"
  row static_half "GET /healthz, paced at $HALF_RATE/s"
  row roundtrip_half "GET /readyz, paced at $HALF_RATE/s"
  row mixed "mixed: 90% refresh, 4% list, 3% logout, 3% login"
  echo
  echo "CPU time per answered request, in µs, of each process on the machine (from"
  echo "\`/proc/PID/stat\` for tokend and Redis, bash's \`time\` for wrk). Their sum over"
  echo "the $(nproc) CPUs is what bounds throughput once the cores are saturated."
  echo
  echo "| scenario | tokend | redis-server | wrk | sum | sum / CPUs |"
  echo "| --- | --- | --- | --- | --- | --- |"
  for n in ceiling refresh roundtrip static jwks; do
    cpu_row "$n"
  done
  echo
  echo "Answers by status, and the 1-minute load average before and after each scenario:"
  echo
  for n in "${SCENARIOS[@]}"; do
    s=$(statuses "$n")
    echo "- $n: ${s:-only 2xx (not broken down)}$( [ "$(get "$n.reclaimed")" != 0 ] && echo "; reclaimed slots $(get "$n.reclaimed")")$( [ "$(get "$n.filler")" != 0 ] && echo "; $(get "$n.filler") filler requests left out of req/s (their pools had lost every token; latencies include them)"); load ${R[$n.load]:-n/a}"
  done
  echo
  echo "## Ratios and resources"
  echo
  echo "| figure | value |"
  echo "| --- | --- |"
  echo "| refresh on Redis / ceiling (embedded store) throughput | $(ratio "$(get refresh.rps)" "$(get ceiling.rps)") |"
  echo "| refresh / ceiling attainable with one bare round trip added (see below) | $(attainable) |"
  echo "| Redis's time per rotation script call (\`INFO commandstats\`, refresh run) | $(get cmd.evalsha) µs, of which the commands it calls: HMGET $(get cmd.hmget), HSET $(get cmd.hset), PEXPIREAT $(get cmd.pexpireat), TIME $(get cmd.time) µs |"
  echo "| JWKS / static bytes throughput | $(ratio "$(get jwks.rps)" "$(get static.rps)") |"
  echo "| refresh p99 during login flood / quiet (both paced at $HALF_RATE/s) | $(ratio "$(get refresh_flood.p99_us)" "$(get refresh_half.p99_us)") ($(ms refresh_flood.p99_us) ms / $(ms refresh_half.p99_us) ms) |"
  echo "| refreshes tokend itself answered within 1 ms / 2.5 ms, paced at $HALF_RATE/s | $(get refresh_half.within_0.001)% / $(get refresh_half.within_0.0025)% |"
  echo "| the same, paced at $SLOW_RATE/s | $(get refresh_slow.within_0.001)% / $(get refresh_slow.within_0.0025)% |"
  echo "| Redis bytes per live session, bare (ip only), $MEMORY_SESSIONS sessions | $(get mem.bare.per) (used_memory $(get mem.bare.before) → $(get mem.bare.after), $(get mem.bare.keys) keys) |"
  echo "| Redis bytes per live session, with User-Agent and device | $(get mem.browser.per) (used_memory $(get mem.browser.before) → $(get mem.browser.after)) |"
  echo "| Redis bytes per live session, bare, four sessions per user | $(get mem.four_per_user.per) (used_memory $(get mem.four_per_user.before) → $(get mem.four_per_user.after), $(get mem.four_per_user.keys) keys) |"
  echo "| tokend RSS during refresh on Redis, max sampled / peak (VmHWM) | $(( $(get rss.refresh.max) / 1024 )) MiB / $(( $(get rss.refresh.hwm) / 1024 )) MiB |"
  echo "| tokend RSS during the ceiling run, max sampled | $(( $(get rss.ceiling.max) / 1024 )) MiB |"
  echo "| live sessions in Redis after the mixed run | $(get redis.live_sessions) |"
  echo
  if [ -s "$WORK/sched-rows" ]; then
    echo "## Wake-up delays at the half rate (PROFILE=1)"
    echo
    echo "From \`perf sched\` over a ${SHORT}s repeat of the paced run at $HALF_RATE/s"
    echo "(wrk p99 $(ms sched.p99_us) ms in that run):"
    echo "each time a thread was woken, how long it waited for a CPU, in ms. A refresh"
    echo "needs four wake-ups in turn: tokend's worker on the request, Redis on the script,"
    echo "the worker on the reply, wrk on the answer."
    echo
    echo "| thread | wake-ups | p50 | p90 | p99 | max | over 0.5 ms |"
    echo "| --- | --- | --- | --- | --- | --- | --- |"
    cat "$WORK/sched-rows"
    echo
  fi
  echo "## How each scenario runs"
  echo
  echo "- **ceiling**: tokend on the embedded store (\`TOKEND_REDIS_URL\` unset), so the"
  echo "  store call is an in-process map update under a mutex: everything of a refresh but"
  echo "  the Redis round trip. Seeded over HTTP (cheap argon2 on this instance only)."
  echo "- **refresh**: tokend on a private redis-server, sessions written by the crate's"
  echo "  \`RedisStore::create_session\` (\`examples/load_seed.rs\`), wrk with"
  echo "  \`lua/sessions.lua\`: one token pool per connection, successors taken from the body."
  echo "- **paced** runs add a per-connection delay so the offered rate is half the"
  echo "  measured refresh throughput; the flood run has a concurrent"
  echo "  $LOGIN_CONNECTIONS-connection login run (default argon2id, 19 MiB, 2 passes)"
  echo "  saturating the password-hashing pool. The slow run offers an eighth of the half"
  echo "  rate. For the paced runs tokend's own request-duration histogram (\`/metrics\`) is"
  echo "  read before and after, giving the share of refreshes it answered within 1 and"
  echo "  2.5 ms, without the generator's side of the loopback."
  echo "- **static**: \`GET /healthz\`, a constant one-field JSON through the same router"
  echo "  and middleware; the cheapest route tokend has, used as the static-bytes baseline."
  echo "- **roundtrip**: \`GET /readyz\`, which answers after one \`PING\` to Redis over the"
  echo "  same client pool the refresh uses: the cost of a bare round trip through tokend,"
  echo "  with no signing, hashing or script. Closed loop it gives the attainable ratio"
  echo "  above; paced at the refresh half rate (next to \`/healthz\` paced alike) it is"
  echo "  the p99 floor a refresh at that rate cannot go below on this machine."
  echo "- **memory**: \`INFO memory\` used_memory before and after $MEMORY_SESSIONS sessions,"
  echo "  measured after their users' records (email, argon2id hash) were written, as users"
  echo "  exist before they log in: each session of its own user (its index entry then"
  echo "  lands in a user hash of its own: the worst case), then four sessions per user."
  echo
  echo "Raw wrk output, tokend and Redis logs: \`$RAW\`."
} >"$REPORT"

log "report written to $REPORT"
for n in "${SCENARIOS[@]}"; do
  f=$(failures "$n")
  l=$(get "$n.lost")
  if [ "$f" != 0 ] || [ "$l" != 0 ]; then
    log "scenario $n: $f failed requests, $l lost tokens"
    FAILED=1
  fi
done
if [ "$QUICK" = 1 ] && [ "$FAILED" != 0 ]; then
  cat "$REPORT" >&2
  exit 1
fi
cat "$REPORT"
