#!/usr/bin/env bash
# A quick interleaved comparison of single-vote servers, with the client bench-node.sh uses
# (`tally load --threads 1`). Each round runs every case on a fresh server: a 5,000-vote
# warm-up, then QUICK_SECONDS (8) s at QUICK_CONNECTIONS (64) connections. Prints votes/s,
# the server's CPU µs per vote (utime + stime from /proc/PID/stat) and p99 per run, then per
# case the medians and the median of its ratios to the hello route within a round.
# Cases (QUICK_CASES, default "hello reference durable tally"):
#   hello      node/examples/hello_server.rs, the framework's ceiling
#   reference  node/examples/reference_server.rs, NOT durable
#   durable    the same reference with a log file: group-commit fdatasync before each answer
#   tally      `tally run` on a temporary data directory (fsync durability)
#   memory     `tally run --memory-only` (NOT durable)
#   redis      redis-server with `appendfsync always` (durable), driven by redis-benchmark with
#              scripts/bench-node.sh's SADD+INCR script, non-pipelined, the same connections
#              (QUICK_SECONDS × 80,000 calls: it takes a count, not a duration)
#   other, other-memory   as tally and memory, served by the build QUICK_OTHER_TALLY (an A/B
#              of two builds in one run, beside the references)
# Settings (environment): QUICK_ROUNDS (3), QUICK_SECONDS, QUICK_CONNECTIONS, QUICK_CASES,
# QUICK_PORT (18191), QUICK_TALLY (the `tally` binary serving the tally/memory cases; default
# the release build, which is also the client), QUICK_OTHER_TALLY. Ratios are also printed
# against the reference (memory/reference) and Redis (tally/redis) when those cases ran.
# Builds release first. Only 127.0.0.1:QUICK_PORT is contacted; every run is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${QUICK_ROUNDS:-3}
SECONDS_PER_RUN=${QUICK_SECONDS:-8}
CONNECTIONS=${QUICK_CONNECTIONS:-64}
CASES=${QUICK_CASES:-hello reference durable tally}
ADDRESS=127.0.0.1:${QUICK_PORT:-18191}
# shellcheck source=scripts/lib/local-server.sh
. scripts/lib/local-server.sh
cargo build --release --locked -q -p tally --bin tally -p tally-node --example hello_server \
  --example reference_server
T=target/release
SERVER=${QUICK_TALLY:-$T/tally}
REDIS_LUA="if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then return redis.call('INCR', KEYS[2]) else return 0 end"
results=$(mktemp)
trap 'rm -f "$results"' EXIT

# redis_bench PID REPORT: loads the script, warms up (5,000 calls), then runs redis-benchmark
# non-pipelined (scripts/bench-node.sh's command) and writes REPORT with the fields the table
# reads; sets `before` to the server's CPU ticks at the start of the measured run.
redis_bench() {
  local port=${ADDRESS##*:} sha calls=$((SECONDS_PER_RUN * 80000))
  for _ in $(seq 50); do redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
  sha=$(redis-cli -p "$port" script load "$REDIS_LUA")
  local script=(evalsha "$sha" 2 tally:ids tally:green __rand_int____rand_int____rand_int__)
  local bench=(redis-benchmark -h 127.0.0.1 -p "$port" -c "$CONNECTIONS" -r 100000000000 -P 1 --csv)
  "${bench[@]}" -n 5000 "${script[@]}" >/dev/null 2>&1
  before=$(cpu_ticks "$1")
  "${bench[@]}" -n "$calls" "${script[@]}" >"$2.csv" 2>/dev/null
  python3 -c 'import csv, json, sys
row = [r for r in csv.reader(open(sys.argv[1])) if r and r[0] != "test"][-1]
json.dump({"votes_per_s": float(row[1]), "votes_sent": int(sys.argv[3]),
           "latency": {"p99_us": float(row[6]) * 1000}}, open(sys.argv[2], "w"))' "$2.csv" "$2" "$calls"
}
for round in $(seq "$ROUNDS"); do
  for case in $CASES; do
    d=$(mktemp -d)
    require_free_port quick-single-votes $ADDRESS
    case $case in
      hello) $T/examples/hello_server $ADDRESS >/dev/null 2>&1 & ;;
      reference) $T/examples/reference_server $ADDRESS >/dev/null 2>&1 & ;;
      durable) $T/examples/reference_server $ADDRESS "$d/reference.log" >/dev/null 2>&1 & ;;
      tally) RUST_LOG=warn $SERVER run --listen $ADDRESS --data-dir "$d/data" >/dev/null 2>&1 & ;;
      memory) RUST_LOG=warn $SERVER run --listen $ADDRESS --memory-only >/dev/null 2>&1 & ;;
      other) RUST_LOG=warn $QUICK_OTHER_TALLY run --listen $ADDRESS --data-dir "$d/data" >/dev/null 2>&1 & ;;
      other-memory) RUST_LOG=warn $QUICK_OTHER_TALLY run --listen $ADDRESS --memory-only >/dev/null 2>&1 & ;;
      redis) redis-server --bind 127.0.0.1 --port "${ADDRESS##*:}" --dir "$d" --save '' \
        --appendonly yes --appendfsync always >/dev/null 2>&1 & ;;
      *) echo "quick-single-votes: unknown case $case" >&2; exit 2 ;;
    esac
    pid=$!
    wait_for_server "quick-single-votes ($case)" $pid $ADDRESS
    if [ "$case" = redis ]; then
      redis_bench $pid "$d/report.json"
    else
      warm_up $T/tally $ADDRESS
      before=$(cpu_ticks $pid)
      $T/tally load --target http://$ADDRESS --no-progress --check off --options green,blue \
        --threads 1 --connections "$CONNECTIONS" --duration "${SECONDS_PER_RUN}s" \
        --json-report "$d/report.json" >/dev/null 2>&1
    fi
    after=$(cpu_ticks $pid)
    python3 - "$d/report.json" "$round" "$case" "$before" "$after" "$(getconf CLK_TCK)" <<'PY' | tee -a "$results"
import json, sys
path, rnd, case, before, after, tick = sys.argv[1:7]
r = json.load(open(path))
cpu_us = (int(after) - int(before)) / int(tick) * 1e6 / r["votes_sent"]
print(rnd, case, round(r["votes_per_s"]), f"{cpu_us:.2f}", f"{r['latency']['p99_us'] / 1000:.2f}")
PY
    kill $pid
    wait $pid 2>/dev/null || true
    rm -rf "$d"
  done
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
cases = list(dict.fromkeys(r[1] for r in rows))
def paired(case, base):
    ratios = [float(r[2]) / float(b[2]) for r in rows if r[1] == case
              for b in rows if b[1] == base and b[0] == r[0]]
    return f"{statistics.median(ratios):.2f}" if ratios else "-"
for case in cases:
    mine = [r for r in rows if r[1] == case]
    print(f"{case:10} median {statistics.median(float(r[2]) for r in mine):>9,.0f} votes/s, "
          f"{statistics.median(float(r[3]) for r in mine):6.2f} µs server CPU per vote, "
          f"p99 {statistics.median(float(r[4]) for r in mine):6.2f} ms, × hello (paired) "
          f"{paired(case, 'hello')}")
for case, base in [("memory", "reference"), ("tally", "redis"), ("tally", "durable"),
                   ("other-memory", "reference"), ("other", "redis"), ("other", "tally"),
                   ("other-memory", "memory")]:
    if case in cases and base in cases:
        print(f"{case} / {base} (median of paired ratios): {paired(case, base)}")
PY
