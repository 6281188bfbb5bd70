#!/usr/bin/env bash
# Where a node's CPU and context switches go, per thread, under one `tally load` run: starts
# `tally run` (fsync, a temporary data directory) from BIN, warms it up with 5,000 single
# votes, runs `tally load` (from BIN) for SECONDS with LOAD_ARGS, and prints each thread's CPU
# ticks and voluntary / involuntary context switches over the run, and per 1,000 votes.
# Usage: scripts/node-thread-costs.sh BIN [SECONDS (4)] [LOAD_ARGS ("--batch-size 300 --binary
# --connections 1 --threads 1")]. NODE_WORKERS=N runs the node with TOKIO_WORKER_THREADS=N.
# Only 127.0.0.1:18285 is contacted; the run is bounded in time.
set -u
BIN=$1; SECS=${2:-4}; LOAD_ARGS=${3:---batch-size 300 --binary --connections 1 --threads 1}
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/local-server.sh
. scripts/lib/local-server.sh
ADDRESS=127.0.0.1:18285
d=$(mktemp -d)
require_free_port node-thread-costs $ADDRESS
env RUST_LOG=warn ${NODE_WORKERS:+TOKIO_WORKER_THREADS=$NODE_WORKERS} "$BIN" run --listen $ADDRESS \
  --data-dir "$d/data" >/dev/null 2>&1 &
pid=$!
wait_for_server node-thread-costs $pid $ADDRESS
warm_up "$BIN" $ADDRESS
snapshot() {
  for t in /proc/$pid/task/*; do
    echo "$(tr ' ' _ <"$t/comm")_$(basename "$t") $(awk '{print $14 + $15}' "$t/stat")" \
      "$(awk '/^voluntary_ctxt/ {v=$2} /^nonvoluntary_ctxt/ {n=$2} END {print v, n}' "$t/status")"
  done | sort
}
snapshot >"$d/before"
read -r -a load_args <<<"$LOAD_ARGS"
"$BIN" load --target http://$ADDRESS --no-progress --check off --options green,blue "${load_args[@]}" \
  --duration "${SECS}s" --json-report "$d/report.json" >/dev/null 2>&1
snapshot >"$d/after"
read -r votes rate < <(python3 -c "import json; r = json.load(open('$d/report.json')); print(r['votes_sent'], round(r['votes_per_s']))")
ticks=$(join "$d/before" "$d/after" | awk '{t += $5 - $2} END {print t}')
echo "$votes votes, $rate votes/s, node CPU $(python3 -c "print(f'{$ticks / $(getconf CLK_TCK) * 1e6 / $votes:.2f}')") µs/vote; load average $(cut -d' ' -f1-3 /proc/loadavg)"
join "$d/before" "$d/after" | awk -v v="$votes" '$5 - $2 > 0 || $6 - $3 > 0 {
  printf "%-28s cpu_ticks=%d voluntary=%d involuntary=%d  per 1,000 votes: %.2f / %.2f\n",
    $1, $5 - $2, $6 - $3, $7 - $4, ($6 - $3) * 1000 / v, ($7 - $4) * 1000 / v }'
kill $pid; wait $pid 2>/dev/null; rm -rf "$d"
