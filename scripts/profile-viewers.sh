#!/usr/bin/env bash
# Where a viewer's bytes go (issue 23): runs the release `tally` under heaptrack (Debian package
# `heaptrack`), as a memory-only node (TIER=node) or as an edge in front of one (TIER=edge),
# opens PROFILE_VIEWERS (2000) SSE viewers of `superbowl` on it with edge/examples/viewers.rs,
# holds them PROFILE_HOLD_SECONDS (10), stops the process (SIGTERM) and prints heaptrack's
# peak memory consumers (the call sites holding the most heap at the peak, which is while
# every viewer is connected), divided by the viewers. Only 127.0.0.1 is contacted (ports
# 18301-18302); bounded in time. Writes under target/profile-viewers/<time>/.
#   scripts/profile-viewers.sh [edge|node]
set -euo pipefail
cd "$(dirname "$0")/.."
TIER=${1:-edge}
VIEWERS=${PROFILE_VIEWERS:-2000}
HOLD=${PROFILE_HOLD_SECONDS:-10}
NODE=127.0.0.1:18301
EDGE=127.0.0.1:18302
command -v heaptrack >/dev/null || { echo "profile-viewers: apt-get install heaptrack" >&2; exit 1; }
# shellcheck source=scripts/lib/local-server.sh
. scripts/lib/local-server.sh
cargo build --release --locked -q -p tally --bin tally -p tally-edge --example viewers
T=target/release
OUT=target/profile-viewers/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

require_free_port profile-viewers $NODE
run_node=(run --listen $NODE --memory-only)
run_edge=(edge --listen $EDGE --upstream "http://$NODE")
# The tunable set here, as `tally` would set it by re-executing itself (node/src/huge_pages.rs):
# a re-executed process would leave heaptrack's preload behind.
export GLIBC_TUNABLES=glibc.malloc.hugetlb=1
if [ "$TIER" = node ]; then
  RUST_LOG=warn heaptrack -o "$OUT/heap" $T/tally "${run_node[@]}" >"$OUT/node.log" 2>&1 &
  profiled=$!; target=$NODE
else
  RUST_LOG=warn $T/tally "${run_node[@]}" >"$OUT/node.log" 2>&1 &
  pids+=("$!")
  wait_ready "$!" "${NODE##*:}"
  require_free_port profile-viewers $EDGE
  RUST_LOG=warn heaptrack -o "$OUT/heap" $T/tally "${run_edge[@]}" >"$OUT/edge.log" 2>&1 &
  profiled=$!; target=$EDGE
fi
pids+=("$profiled")
wait_ready "$profiled" "${target##*:}"
VIEWERS_SECONDS=120 $T/examples/viewers "$target" superbowl "$VIEWERS" 127.0.3.1 >"$OUT/client.out" 2>&1 &
client=$!; pids+=("$client")
for _ in $(seq 240); do grep -q '^open' "$OUT/client.out" && break; sleep 0.5; done
grep -q '^open' "$OUT/client.out" || { echo "profile-viewers: the viewers never opened" >&2; exit 1; }
sleep "$HOLD"
# heaptrack's wrapper is the process we started; its child is tally: stop that one.
kill -TERM "$(pgrep -P "$profiled" -x tally || echo "$profiled")"
wait "$profiled" || true
kill "$client" 2>/dev/null || true
data=$(find "$OUT" -name "heap.*" | head -1)
heaptrack_print --print-peaks 1 --print-allocators 0 --print-temporary 0 --print-leaks 0 \
  --peak-limit 25 --sub-peak-limit 4 "$data" >"$OUT/peaks.txt"
echo "profile-viewers: $TIER, $VIEWERS viewers; heaptrack's peak consumers in $OUT/peaks.txt"
# Each top-level entry: bytes at the peak, and per viewer.
awk -v viewers="$VIEWERS" '
  /^PEAK MEMORY CONSUMERS/ { on = 1; next }
  on && /^[0-9.]+[KMG]?B? peak memory consumed/ {
    v = $1; unit = 1
    if (v ~ /K$/ || v ~ /KB$/) unit = 1000; if (v ~ /M$/ || v ~ /MB$/) unit = 1e6; if (v ~ /G$/ || v ~ /GB$/) unit = 1e9
    gsub(/[KMGB]/, "", v); bytes = v * unit
    getline site; getline where
    printf "%10.0f B  %7.1f B/viewer  %s %s\n", bytes, bytes / viewers, site, where
  }' "$OUT/peaks.txt" | head -25
