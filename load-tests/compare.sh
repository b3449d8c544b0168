#!/usr/bin/env bash
# Compares tokend builds side by side on the refresh path: runs the `refresh` scenario
# of run.sh (shortened) for each build in turn, interleaved, and prints each run and
# the median per build. This is how the before/after figures in README.md were taken.
#
#   load-tests/compare.sh OLD_BIN NEW_BIN [more binaries...]
#   load-tests/compare.sh BIN BIN           same binary twice, with settings per label:
#       LABEL_1='TOKEND_REDIS_POOL_SIZE=4' LABEL_2='TOKEND_REDIS_POOL_SIZE=2' ...
#
# Environment: ROUNDS (default 3), DURATION seconds per run (default 10), SESSIONS
# (1024), CONNECTIONS (64), RATE (requests/s the whole run offers, paced as in run.sh's
# half-rate scenario; default 0: closed loop), MODE=refresh (private Redis, default),
# ceiling (embedded store) or flood (refresh on Redis while 8 connections log in at
# the default argon2id cost, as run.sh's flood scenario; give a RATE), MODE_1, MODE_2,
# ... (one label's mode, so that runs alternate: `MODE_1=ceiling MODE_2=refresh
# compare.sh BIN BIN` gives the refresh/ceiling ratio from interleaved medians,
# `RATE=5000 MODE_1=refresh MODE_2=flood` the flood/quiet p99), SEED_BIN (default: the
# release build of examples/load_seed.rs, built or found up to date first). Everything
# listens on 127.0.0.1 and stops by itself.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
[ $# -ge 2 ] || { echo "usage: $0 BIN BIN [BIN...]" >&2; exit 2; }
ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-10}; SESSIONS=${SESSIONS:-1024}
CONNECTIONS=${CONNECTIONS:-64}; MODE=${MODE:-refresh}; RATE=${RATE:-0}
for tool in wrk redis-server redis-cli; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install -y wrk redis-server)" >&2; exit 1; }
done
if [ -z "${SEED_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release --quiet --example load_seed)
  SEED_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/load_seed
fi

WORK=$(mktemp -d)
PIDS=()
stop_all() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap 'stop_all; rm -rf "$WORK"' EXIT
# wrk answers Ctrl-C by printing its result and exiting 0, so bash would go on with the
# next run: stop here instead (the EXIT trap then stops what was started).
trap 'exit 130' INT
trap 'exit 143' TERM
free_port() {
  local port
  while :; do
    # Below Linux's default ephemeral range (32768-60999), so an outgoing connection
    # never holds the port picked.
    port=$((10000 + RANDOM % 22000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}
UA="Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"

# one_run BIN [VAR=value ...]: writes "rps p50_us p99_us vmhwm_kib" of one run to
# $WORK/row. Runs in this shell (not in a command substitution), so that what it starts
# is in PIDS when a signal arrives.
one_run() {
  local bin=$1 rport port mport env_args=() i
  shift
  rport=$(free_port); port=$(free_port); mport=$(free_port)
  "$bin" keys generate --out "$WORK/keys.json" --force >/dev/null
  if [ "$MODE" != ceiling ]; then
    redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
      --logfile "$WORK/redis.log" &
    PIDS+=($!)
    for i in $(seq 1 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
    env_args=(TOKEND_REDIS_URL="redis://127.0.0.1:$rport")
  else
    env_args=(TOKEND_ARGON2_MEMORY_KIB=256 TOKEND_ARGON2_ITERATIONS=1)
  fi
  env TOKEND_LISTEN="127.0.0.1:$port" TOKEND_METRICS_LISTEN="127.0.0.1:$mport" \
    TOKEND_KEYS="$WORK/keys.json" "${env_args[@]}" "$@" "$bin" 2>"$WORK/tokend.log" &
  local pid=$!
  PIDS+=("$pid")
  for i in $(seq 1 100); do "$bin" healthcheck --listen "127.0.0.1:$port" >/dev/null 2>&1 && break; sleep 0.1; done
  if [ "$MODE" != ceiling ]; then
    "$SEED_BIN" sessions-redis --redis-url "redis://127.0.0.1:$rport" --keys "$WORK/keys.json" \
      --count "$SESSIONS" --out "$WORK/tokens" --user-agent "$UA" 2>/dev/null
  else
    "$SEED_BIN" sessions-http --base "http://127.0.0.1:$port" --count "$SESSIONS" \
      --out "$WORK/tokens" 2>/dev/null
  fi
  if [ "$MODE" = flood ]; then
    # Default-cost logins from 8 connections keep the password-hashing pool saturated
    # from before the refresh run starts until after it ends.
    "$SEED_BIN" users --base "http://127.0.0.1:$port" --count 64 --out "$WORK/users" 2>/dev/null
    wrk -t1 -c8 -d"$((DURATION + 3))s" --timeout 10s -s "$HERE/lua/login.lua" \
      "http://127.0.0.1:$port" -- "$WORK/users" 1 >"$WORK/login.txt" 2>&1 &
    PIDS+=($!)
    sleep 1.5
  fi
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 5s -s "$HERE/lua/sessions.lua" \
    "http://127.0.0.1:$port" -- "$WORK/tokens" "$CONNECTIONS" 2 "$RATE" >"$WORK/wrk.txt" 2>&1 || true
  local hwm line
  hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
  stop_all
  line=$(grep '^RESULT ' "$WORK/wrk.txt" || true)
  [ -n "$line" ] || { echo "no result; wrk said:" >&2; cat "$WORK/wrk.txt" >&2; exit 1; }
  # A run with any socket error, timeout, error status or lost token is not a
  # measurement of the refresh path: stop.
  awk -v hwm="$hwm" '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); r[kv[1]] = kv[2] }
    bad = r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"] \
      + r["status_over_399"] + r["lost"]
    if (bad > 0 || hwm == "") exit 1
    printf "%.0f %s %s %s\n", r["rps"], r["p50_us"], r["p99_us"], hwm }' <<<"$line" \
    >"$WORK/row" || { echo "failed requests, lost tokens or tokend gone: $line" >&2; exit 1; }
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

modes=""
for n in $(seq 1 $#); do mode_var="MODE_$n"; modes="$modes $n:${!mode_var:-$MODE}"; done
echo "modes (label:mode)$modes; $SESSIONS sessions, $CONNECTIONS connections, rate $RATE/s (0: closed loop), ${DURATION}s per run, $ROUNDS rounds"
echo "label rps p50_us p99_us vmhwm_kib"
for round in $(seq 1 "$ROUNDS"); do
  n=0
  for bin in "$@"; do
    n=$((n + 1))
    var="LABEL_$n"
    mode_var="MODE_$n"
    # shellcheck disable=SC2206
    settings=(${!var:-})
    MODE=${!mode_var:-$MODE} one_run "$bin" "${settings[@]}"
    echo "$n $(cat "$WORK/row")" | tee -a "$WORK/all"
  done
done
echo "medians (rps, p99_us):"
n=0
for bin in "$@"; do
  n=$((n + 1))
  var="LABEL_$n"
  rps=$(awk -v n="$n" '$1 == n { print $2 }' "$WORK/all" | median)
  p99=$(awk -v n="$n" '$1 == n { print $4 }' "$WORK/all" | median)
  mode_var="MODE_$n"
  echo "$n $bin ${!mode_var:-$MODE} ${!var:-} rps=$rps p99_us=$p99"
done
