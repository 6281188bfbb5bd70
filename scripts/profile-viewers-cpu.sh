#!/usr/bin/env bash
# Where an edge's CPU goes per broadcast (issue 23): a memory-only node (SSE tick 100 ms) and one
# `tally edge` in front of it on 127.0.0.1, PROFILE_VIEWERS (15000) SSE viewers of `superbowl`
# on the edge (edge/examples/viewers.rs, one client process), then PROFILE_VOTES (20) votes
# straight to the node, one every 0.5 s (each one broadcast to every viewer), with the edge
# under `perf record -e cpu-clock` (this VM has no hardware PMU) for the whole burst. Prints
# the edge's CPU per broadcast (and the client process's, for comparison), and writes perf's
# flat profile (self time by symbol) and its caller graph under
# target/profile-viewers-cpu/<time>/. PROFILE_BINARY runs another build; PROFILE_CALL_GRAPH
# (dwarf) is perf's --call-graph mode, PROFILE_HZ (499) its rate. Only 127.0.0.1 is contacted
# (ports 18311-18312); bounded in time (the client exits after 300 s).
#   scripts/profile-viewers-cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VIEWERS=${PROFILE_VIEWERS:-15000}
VOTES=${PROFILE_VOTES:-20}
NODE=127.0.0.1:18311
EDGE=127.0.0.1:18312
command -v perf >/dev/null || { echo "profile-viewers-cpu: apt-get install linux-perf" >&2; exit 1; }
# shellcheck source=scripts/lib/local-server.sh
. scripts/lib/local-server.sh
cargo build --release --locked -q -p tally --bin tally -p tally-edge --example viewers
T=target/release
TALLY=${PROFILE_BINARY:-$T/tally}
OUT=target/profile-viewers-cpu/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
echo "profile-viewers-cpu: load before: $(cut -d' ' -f1-3 /proc/loadavg); binary $TALLY ($(sha256sum "$TALLY" | cut -c1-12)); in $OUT"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

printf 'viewer_memory_bytes = 1073741824\nheader_read_timeout_ms = 60000\nsse_tick_ms = 100\n' \
  >"$OUT/node.toml"
printf 'viewer_memory_bytes = 1073741824\nheader_read_timeout_ms = 60000\n' >"$OUT/edge.toml"
require_free_port profile-viewers-cpu $NODE
RUST_LOG=warn $TALLY run --listen $NODE --memory-only --config "$OUT/node.toml" \
  >"$OUT/node.log" 2>&1 &
pids+=("$!")
wait_ready "$!" "${NODE##*:}"
require_free_port profile-viewers-cpu $EDGE
RUST_LOG=warn $TALLY edge --listen $EDGE --upstream "http://$NODE" --config "$OUT/edge.toml" \
  >"$OUT/edge.log" 2>&1 &
edge=$!; pids+=("$edge")
wait_ready "$edge" "${EDGE##*:}"

vote=0
cast() {
  vote=$((vote + 1))
  curl -sf -o /dev/null -X POST -H 'content-type: application/json' \
    -d "{\"option\":\"green\",\"vote_id\":\"00000000-0000-4000-8000-$(printf '%012x' "$vote")\"}" \
    "http://$NODE/v1/polls/superbowl/votes"
}
cast
VIEWERS_SECONDS=300 $T/examples/viewers "$EDGE" superbowl "$VIEWERS" 127.0.4.1 \
  >"$OUT/client.out" 2>&1 &
client=$!; pids+=("$client")
for _ in $(seq 600); do grep -q '^open' "$OUT/client.out" && break; sleep 0.5; done
grep -q '^open' "$OUT/client.out" || { echo "profile-viewers-cpu: the viewers never opened" >&2; exit 1; }
sleep 3
cpu_before=$(cpu_ticks "$edge"); client_before=$(cpu_ticks "$client")
perf record -e cpu-clock -F "${PROFILE_HZ:-499}" --call-graph "${PROFILE_CALL_GRAPH:-dwarf}" -o "$OUT/perf.data" \
  -p "$edge" -- sleep $((VOTES / 2 + 2)) >"$OUT/perf.log" 2>&1 &
recorder=$!
sleep 0.5
for _ in $(seq "$VOTES"); do cast; sleep 0.5; done
wait "$recorder" || true
cpu=$(( $(cpu_ticks "$edge") - cpu_before )); client_cpu=$(( $(cpu_ticks "$client") - client_before ))
seen=$(awk '$1 == "seen" { t = $3 } END { print t + 0 }' "$OUT/client.out")
echo "profile-viewers-cpu: $VIEWERS viewers, $VOTES votes (the slowest viewer saw total $seen of $vote);" \
  "edge CPU over the recording $((cpu * 1000 / $(getconf CLK_TCK))) ms," \
  "$((cpu * 1000 / $(getconf CLK_TCK) / VOTES)) ms per broadcast; the client process's CPU" \
  "$((client_cpu * 1000 / $(getconf CLK_TCK) / VOTES)) ms per broadcast"
perf report -i "$OUT/perf.data" --no-children --sort dso,symbol --percent-limit 0.3 --stdio \
  2>/dev/null | grep -v '^$' >"$OUT/flat.txt" || true
perf report -i "$OUT/perf.data" --children --sort symbol --percent-limit 2 --stdio -G \
  2>/dev/null >"$OUT/callers.txt" || true
grep -E '^ +[0-9]' "$OUT/flat.txt" | head -40
echo "profile-viewers-cpu: flat profile $OUT/flat.txt, callers $OUT/callers.txt"
