#!/usr/bin/env bash
# The node end to end while its dedupe index grows (issue 25): a fresh durable `tally run` on
# 127.0.0.1 with the default `superbowl` poll, loaded with
#   tally load --count VOTES --batch-size 1000 --binary --connections 4
# (the issue's user scenario), alternating a poll without `expected_votes` ("grown": the index
# grows step by step through every doubling during the load) and one with
# `expected_votes = VOTES` ("reserved"), RUNS times each. Prints each load's own summary (its
# p50/p99 and slowest answer, and its exactly-once check); compare the two kinds within a run.
#
#   scripts/bench-index-growth-node.sh            # VOTES=20000000 RUNS=1
#   VOTES=2000000 RUNS=3 scripts/bench-index-growth-node.sh
#   TALLY_BIN=/tmp/other/tally scripts/bench-index-growth-node.sh
#
# Bounded: 2 × RUNS loads, each node given 120 s to become ready; every node is stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
VOTES="${VOTES:-20000000}"
RUNS="${RUNS:-1}"
PORT="${PORT:-18196}"
# shellcheck source=scripts/lib/local-server.sh
. scripts/lib/local-server.sh
tally_binary
require_tools curl
start_cleanup

one_run() {
  local kind="$1" dir="$WORK/$1-$2"
  mkdir -p "$dir"
  {
    echo "listen = \"127.0.0.1:$PORT\""
    echo "data_dir = \"$dir/data\""
    echo '[[polls]]'
    echo 'id = "superbowl"'
    echo 'options = ["green", "blue"]'
    echo 'open = true'
    if [ "$kind" = reserved ]; then echo "expected_votes = $VOTES"; fi
  } >"$dir/tally.toml"
  "$TALLY" run --config "$dir/tally.toml" >"$dir/node.log" 2>&1 &
  pid=$!
  wait_ready "$pid" "$PORT"
  echo "== $kind, run $2: $VOTES votes"
  "$TALLY" load --target "http://127.0.0.1:$PORT" --count "$VOTES" --batch-size 1000 \
    --binary --connections 4 --no-progress
  grep -E "dedupe index (reserved|growing|grown)" "$dir/node.log" | tail -n 4 || true
  # Where the slow answers come from: the engine's wake-ups, the fsyncs and the node's own
  # time per HTTP request (from its first byte read to its answer written), as histograms
  # (cumulative counts at 6.4, 12.8, 25.6, 51.2, 102.4 ms and in all), and the node's CPU time.
  curl -sf "http://127.0.0.1:$PORT/metrics" | awk '
    /^tally_(engine_busy|wal_fsync_duration|http_request_duration)_seconds_(bucket|count)/ {
      if ($0 ~ /http_request/ && $0 !~ /votes\/batch/) next
      if ($0 ~ /_count/ || $0 ~ /le="0\.(0064|0128|0256|0512|1024)"/) printf "  %s\n", $0 }'
  awk -v hz="$(getconf CLK_TCK)" '{ printf "  node CPU: %.1f s (user %.1f, system %.1f)\n",
    ($14 + $15) / hz, $14 / hz, $15 / hz }' "/proc/$pid/stat"
  echo "  load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  # A refused batch (503) is a hold, e.g. disk_low when other work fills the disk: say which.
  grep -E "WARN|ERROR" "$dir/node.log" | grep -v "huge pages\|slow wake-up" | head -n 3 || true
  # The engine's wake-ups of 25 ms or more (ENGINE_WAKE_SLOW), with its CPU time over each:
  # work, or waiting for a core or in the kernel.
  echo "  slow engine wake-ups: $(grep -c "slow wake-up" "$dir/node.log" || true)"
  grep "slow wake-up" "$dir/node.log" | sed 's/\x1b\[[0-9;]*m//g; s/^.*Z *WARN [^ ]* //' \
    | sort -t= -k2 -g -r | head -n 5 | sed 's/^/    /' || true
  kill "$pid"
  wait "$pid" || true
  pid=""
  rm -rf "$dir"
}

for run in $(seq 1 "$RUNS"); do
  one_run grown "$run"
  one_run reserved "$run"
done
