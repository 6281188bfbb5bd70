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
# Settings (environment): QUICK_ROUNDS (3), QUICK_SECONDS, QUICK_CONNECTIONS, QUICK_CASES.
# Builds release first. Only 127.0.0.1:18191 is contacted; every run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${QUICK_ROUNDS:-3}
SECONDS_PER_RUN=${QUICK_SECONDS:-8}
CONNECTIONS=${QUICK_CONNECTIONS:-64}
CASES=${QUICK_CASES:-hello reference durable tally}
ADDRESS=127.0.0.1:18191
# shellcheck source=scripts/lib/local-server.sh
. scripts/lib/local-server.sh
cargo build --release --locked -q -p tally --bin tally -p tally-node --example hello_server \
  --example reference_server
T=target/release
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for round in $(seq "$ROUNDS"); do
  for case in $CASES; do
    d=$(mktemp -d)
    require_free_port quick-single-votes $ADDRESS
    case $case in
      hello) $T/examples/hello_server $ADDRESS >/dev/null 2>&1 & ;;
      reference) $T/examples/reference_server $ADDRESS >/dev/null 2>&1 & ;;
      durable) $T/examples/reference_server $ADDRESS "$d/reference.log" >/dev/null 2>&1 & ;;
      tally) RUST_LOG=warn $T/tally run --listen $ADDRESS --data-dir "$d/data" >/dev/null 2>&1 & ;;
      memory) RUST_LOG=warn $T/tally run --listen $ADDRESS --memory-only >/dev/null 2>&1 & ;;
      *) echo "quick-single-votes: unknown case $case" >&2; exit 2 ;;
    esac
    pid=$!
    wait_for_server "quick-single-votes ($case)" $pid $ADDRESS
    warm_up $T/tally $ADDRESS
    before=$(cpu_ticks $pid)
    $T/tally load --target http://$ADDRESS --no-progress --check off --options green,blue \
      --threads 1 --connections "$CONNECTIONS" --duration "${SECONDS_PER_RUN}s" \
      --json-report "$d/report.json" >/dev/null 2>&1
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
for case in cases:
    mine = [r for r in rows if r[1] == case]
    ratios = [float(r[2]) / float(h[2]) for r in mine for h in rows if h[1] == "hello" and h[0] == r[0]]
    paired = f"{statistics.median(ratios):.2f}" if ratios else "-"
    print(f"{case:10} median {statistics.median(float(r[2]) for r in mine):>9,.0f} votes/s, "
          f"{statistics.median(float(r[3]) for r in mine):6.2f} µs server CPU per vote, "
          f"p99 {statistics.median(float(r[4]) for r in mine):6.2f} ms, × hello (paired) {paired}")
PY
