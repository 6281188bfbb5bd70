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
# BENCH_TIERS ("edge node"), BENCH_EDGES (1: edge processes in front of the node, each on its
# own port; the edge tier's viewers are spread over them and its RSS and CPU are their sums,
# as a process may hold at most 20,000 open files), BENCH_BINARY (target/release/tally: the
# binary of node and edges, e.g. an older build to compare; one from before the node's memory
# budget needs BENCH_NODE_CAP='sse_subscribers_max = 200000'), BENCH_SSE_TICK_MS (500: the
# node's tick, up to which each delay includes a wait for it). Writes under
# target/bench-viewers/<time>/ and prints a table. Only 127.0.0.1/8 is contacted (ports
# 18291-18291+BENCH_EDGES); every run is bounded in time (clients exit after 900 s, each vote
# must reach every viewer within 6 s).
set -euo pipefail
cd "$(dirname "$0")/.."
VIEWERS=${BENCH_VIEWERS:-20000}
PER_PROCESS=${BENCH_PER_PROCESS:-10000}
VOTES=${BENCH_VOTES:-10}
TIERS=${BENCH_TIERS:-"edge node"}
EDGES=${BENCH_EDGES:-1}
NODE=127.0.0.1:18291
# shellcheck source=scripts/lib/local-server.sh
. scripts/lib/local-server.sh
cargo build --release --locked -q -p tally --bin tally -p tally-edge --example viewers
T=target/release
TALLY=${BENCH_BINARY:-$T/tally}
OUT=target/bench-viewers/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
echo "bench-viewers: $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg); binary $TALLY ($(sha256sum "$TALLY" | cut -c1-12)); $EDGES edge(s); runs in $OUT"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
stop() { kill "$@" 2>/dev/null || true; for p in "$@"; do wait "$p" 2>/dev/null || true; done; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# Budgets past what the run holds; a header-read deadline of a minute, as on a host this busy
# (other builders, the clients) a client may connect and only get to send its request head
# seconds later, and the default 10 s would close it as a slowloris would be.
cat >"$OUT/node.toml" <<TOML
${BENCH_NODE_CAP:-viewer_memory_bytes = 1073741824}
header_read_timeout_ms = 60000
sse_tick_ms = ${BENCH_SSE_TICK_MS:-500}
TOML
require_free_port bench-viewers $NODE
RUST_LOG=warn $TALLY run --listen $NODE --memory-only --config "$OUT/node.toml" \
  >"$OUT/node.log" 2>&1 &
NODE_PID=$!; pids+=("$NODE_PID")
wait_ready $NODE_PID "${NODE##*:}"
cat >"$OUT/edge.toml" <<TOML
viewer_memory_bytes = 1073741824
header_read_timeout_ms = 60000
TOML
edge_addrs=(); edge_pids=()
for i in $(seq "$EDGES"); do
  EDGE=127.0.0.1:$((18291 + i))
  require_free_port bench-viewers "$EDGE"
  RUST_LOG=warn $TALLY edge --listen "$EDGE" --upstream "http://$NODE" --config "$OUT/edge.toml" \
    >"$OUT/edge-$i.log" 2>&1 &
  edge_pids+=("$!"); pids+=("$!"); edge_addrs+=("$EDGE")
  wait_ready "$!" "${EDGE##*:}"
done
# sum_of FUNCTION PIDS...: FUNCTION's figure summed over the processes.
sum_of() { local f=$1 s=0 p; shift; for p in "$@"; do s=$((s + $($f "$p"))); done; echo "$s"; }

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
  case $tier in
    edge) targets=("${edge_addrs[@]}"); serving=("${edge_pids[@]}") ;;
    node) targets=("$NODE"); serving=("$NODE_PID") ;;
  esac
  cast; total=$vote
  # One viewer per serving process first, so the edge's subscription (and its first
  # allocations) exist before.
  clients=()
  for target in "${targets[@]}"; do
    VIEWERS_SECONDS=900 $T/examples/viewers "$target" superbowl 1 127.0.0.250 \
      >>"$OUT/$tier-warm.out" 2>&1 &
    clients+=("$!"); pids+=("$!")
  done
  sleep 3
  before=$(sum_of rss_kb "${serving[@]}")
  processes=$(( (VIEWERS + PER_PROCESS - 1) / PER_PROCESS ))
  files=()
  for i in $(seq "$processes"); do
    count=$(( i < processes ? PER_PROCESS : VIEWERS - PER_PROCESS * (processes - 1) ))
    target=${targets[$(( (i - 1) % ${#targets[@]} ))]}
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
  after=$(sum_of rss_kb "${serving[@]}")
  cpu_before=$(sum_of cpu_ticks "${serving[@]}")
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
  cpu=$(( $(sum_of cpu_ticks "${serving[@]}") - cpu_before ))
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
