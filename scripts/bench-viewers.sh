#!/usr/bin/env bash
# Viewers per process (issue 23 part 2 and 6), in one command: builds release, starts a node
# (memory-only) and an edge in front of it on 127.0.0.1, and for each TIER (edge, node) opens
# BENCH_VIEWERS SSE viewers of `superbowl` from several client processes, each from its own
# source address in 127.0.0.0/8 (edge/examples/viewers.rs; at most BENCH_PER_PROCESS sockets
# each, under the 20,000 open files a process may hold), then reports:
#   rss_kb_per_viewer   the serving process's resident growth over the viewers (VmRSS after
#                       minus before, after a settle), divided by the viewers;
#   cpu_ms_per_broadcast  the serving process's CPU (utime+stime) over BENCH_VOTES votes sent
#                       one per second straight to the node, divided by the votes (each vote
#                       is one broadcast to every viewer);
#   delay_ms            per vote, from sending it to the moment the LAST viewer (of every
#                       client process) had seen its total; median and maximum.
# Settings (environment): BENCH_VIEWERS (20000), BENCH_PER_PROCESS (10000), BENCH_VOTES (10),
# BENCH_TIERS ("edge node"). Writes under target/bench-viewers/<time>/ and prints a table.
# Only 127.0.0.1/8 is contacted (ports 18291-18292); every run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
VIEWERS=${BENCH_VIEWERS:-20000}
PER_PROCESS=${BENCH_PER_PROCESS:-10000}
VOTES=${BENCH_VOTES:-10}
TIERS=${BENCH_TIERS:-"edge node"}
NODE=127.0.0.1:18291
EDGE=127.0.0.1:18292
# shellcheck source=scripts/lib/local-server.sh
. scripts/lib/local-server.sh
cargo build --release --locked -q -p tally --bin tally -p tally-edge --example viewers
T=target/release
OUT=target/bench-viewers/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
echo "bench-viewers: $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg); runs in $OUT"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
stop() { kill "$@" 2>/dev/null || true; for p in "$@"; do wait "$p" 2>/dev/null || true; done; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

cat >"$OUT/node.toml" <<TOML
sse_subscribers_max = 200000
TOML
require_free_port bench-viewers $NODE
RUST_LOG=warn $T/tally run --listen $NODE --memory-only --config "$OUT/node.toml" \
  >"$OUT/node.log" 2>&1 &
NODE_PID=$!; pids+=("$NODE_PID")
wait_ready $NODE_PID "${NODE##*:}"
cat >"$OUT/edge.toml" <<TOML
viewer_memory_bytes = 1073741824
TOML
require_free_port bench-viewers $EDGE
RUST_LOG=warn $T/tally edge --listen $EDGE --upstream "http://$NODE" --config "$OUT/edge.toml" \
  >"$OUT/edge.log" 2>&1 &
EDGE_PID=$!; pids+=("$EDGE_PID")
wait_ready $EDGE_PID "${EDGE##*:}"

vote=0
cast() { # one vote straight at the node
  vote=$((vote + 1))
  curl -sf -o /dev/null -X POST -H 'content-type: application/json' \
    -d "{\"option\":\"green\",\"vote_id\":\"00000000-0000-4000-8000-$(printf '%012x' "$vote")\"}" \
    "http://$NODE/v1/polls/superbowl/votes"
}
# seen_by_all FILES... TOTAL: the latest time every client process reported TOTAL, or "".
seen_by_all() {
  local total=${*: -1} latest=0 t
  for f in "${@:1:$#-1}"; do
    t=$(awk -v want="$total" '$1 == "seen" && $3 >= want { print $2; exit }' "$f")
    [ -n "$t" ] || { echo ""; return; }
    [ "$t" -gt "$latest" ] && latest=$t
  done
  echo "$latest"
}

printf 'tier\tviewers\trss_before_kb\trss_after_kb\trss_kb_per_viewer\tcpu_ms_per_broadcast\tdelay_ms_median\tdelay_ms_max\tload\n' >"$OUT/summary.tsv"
for tier in $TIERS; do
  case $tier in edge) target=$EDGE; pid=$EDGE_PID ;; node) target=$NODE; pid=$NODE_PID ;; esac
  cast; total=$vote
  # One viewer first, so the edge's subscription (and its first allocations) exist before.
  VIEWERS_SECONDS=900 $T/examples/viewers "$target" superbowl 1 127.0.0.250 \
    >"$OUT/$tier-warm.out" 2>&1 &
  clients=("$!"); pids+=("$!")
  sleep 3
  before=$(rss_kb "$pid")
  processes=$(( (VIEWERS + PER_PROCESS - 1) / PER_PROCESS ))
  files=()
  for i in $(seq "$processes"); do
    count=$(( i < processes ? PER_PROCESS : VIEWERS - PER_PROCESS * (processes - 1) ))
    f="$OUT/$tier-client-$i.out"; files+=("$f")
    VIEWERS_SECONDS=900 $T/examples/viewers "$target" superbowl "$count" "127.0.$((i + 1)).1" \
      >"$f" 2>&1 &
    clients+=("$!"); pids+=("$!")
  done
  for f in "${files[@]}"; do
    for _ in $(seq 600); do grep -q '^open' "$f" && break; sleep 0.5; done
    grep -q '^open' "$f" || { echo "bench-viewers: $f never opened all its viewers" >&2; exit 1; }
  done
  open=$(awk '$1 == "open" { s += $2 } END { print s }' "${files[@]}")
  sleep 5
  after=$(rss_kb "$pid")
  cpu_before=$(cpu_ticks "$pid")
  delays=()
  for _ in $(seq "$VOTES"); do
    sent=$(date +%s%3N); cast; total=$vote
    for _ in $(seq 300); do
      t=$(seen_by_all "${files[@]}" "$total"); [ -n "$t" ] && break; sleep 0.02
    done
    [ -n "$t" ] || { echo "bench-viewers: vote $total not seen by every viewer in 6 s" >&2; exit 1; }
    delays+=("$((t - sent))")
    sleep 1
  done
  cpu=$(( $(cpu_ticks "$pid") - cpu_before ))
  lost=$(awk '$1 == "lost" { s = $2 } END { print s + 0 }' "${files[@]}")
  python3 - "$tier" "$open" "$before" "$after" "$cpu" "$(getconf CLK_TCK)" "$VOTES" \
    "$(cut -d' ' -f1 /proc/loadavg)" "$lost" "${delays[@]}" <<'PY' | tee -a "$OUT/summary.tsv"
import statistics, sys
tier, open_, before, after, cpu, tick, votes, load, lost, *delays = sys.argv[1:]
open_, before, after = int(open_), int(before), int(after)
delays = [int(d) for d in delays]
per = (after - before) / max(1, open_)
cpu_ms = int(cpu) / int(tick) * 1000 / int(votes)
print("\t".join([tier, str(open_), str(before), str(after), f"{per:.2f}", f"{cpu_ms:.1f}",
      str(int(statistics.median(delays))), str(max(delays)), load]) + (f"\tlost={lost}" if lost != "0" else ""))
PY
  stop "${clients[@]}"
  sleep 2
done
echo
column -t -s$'\t' "$OUT/summary.tsv" | tee "$OUT/summary.md"
