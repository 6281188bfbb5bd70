#!/usr/bin/env bash
# The edge benchmark of issue 22, in one command: builds release, then on 127.0.0.1 measures
# single votes with the SAME client (`tally load --threads 1`) and the same connection count,
# the cases interleaved round by round, each on fresh servers after a 5,000-vote warm-up:
#   hello    node/examples/hello_server.rs: the framework's ceiling (server CPU per request);
#   direct   single votes straight at `tally run` (fsync durability);
#   edge     single votes at one `tally edge` in front of that node: votes/s, the edge's CPU
#            per vote, the node's CPU per vote, p50/p99;
#   edges2   two `tally edge` processes in front of one node, the client's connections split
#            over them: votes/s and the node's CPU share (is the node what limits?);
#   half     open loop at half the median `direct` rate, direct and through the edge: the p99
#            the edge adds (from intended send time); and the hello route open loop at the
#            same rate, so the edge's CPU per vote is compared with hello's at EQUAL rates (a
#            request costs more at a lower rate: fewer share each wake-up and syscall; the
#            `hello` case runs flat out, ~4x the edge's rate);
#   curve    the edge with other batch sizes and lingers (BENCH_CURVE, "N:L ..."): votes/s,
#            p50/p99, mean votes per batch, node CPU per vote: the curve the defaults come from;
#   flood    one edge driven by several `tally load` processes at once (BENCH_FLOOD, "PxC ...":
#            P processes of C connections each, P x C votes outstanding), batches of up to
#            BENCH_FLOOD_BATCH (1000) votes with a BENCH_FLOOD_LINGER_MS (5) linger and a
#            BENCH_FLOOD_INTERVAL_MS (0) batch interval (`--batch-interval-ms`), into a node
#            whose poll is reserved for the event (expected_votes = BENCH_FLOOD_EXPECTED,
#            10,000,000, as an operator sets it): the node's CPU per vote against batch size,
#            at batches of hundreds, which a single client of 64 connections cannot make.
# Settings (environment): BENCH_ROUNDS (3), BENCH_SECONDS (8), BENCH_CONNECTIONS (64),
# BENCH_CURVE ("16:1 64:1 256:2 1000:2 256:0 256:5"), BENCH_FLOOD ("1x256 4x256 8x256"),
# BENCH_FLOOD_BATCH, BENCH_FLOOD_LINGER_MS, BENCH_FLOOD_INTERVAL_MS, BENCH_FLOOD_EXPECTED,
# BENCH_CASES (all of the
# above).
# Writes every run under target/bench-edge/<time>/ and prints a table (summary.md there).
# Only 127.0.0.1 is contacted (ports 18281-18284); every run is bounded in time or count.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${BENCH_ROUNDS:-3}
SECONDS_PER_RUN=${BENCH_SECONDS:-8}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
CURVE=${BENCH_CURVE:-"16:1 64:1 256:2 1000:2 256:0 256:5"}
CASES=${BENCH_CASES:-"hello direct edge edges2 half curve flood"}
FLOOD=${BENCH_FLOOD:-"1x256 4x256 8x256"}
FLOOD_BATCH=${BENCH_FLOOD_BATCH:-1000}
FLOOD_LINGER_MS=${BENCH_FLOOD_LINGER_MS:-5}
FLOOD_INTERVAL_MS=${BENCH_FLOOD_INTERVAL_MS:-0}
FLOOD_EXPECTED=${BENCH_FLOOD_EXPECTED:-10000000}
NODE=127.0.0.1:18281
HELLO=127.0.0.1:18282
EDGE=127.0.0.1:18283
EDGE2=127.0.0.1:18284
# shellcheck source=scripts/lib/local-server.sh
. scripts/lib/local-server.sh
cargo build --release --locked -q -p tally --bin tally -p tally-node --example hello_server
T=target/release
OUT=target/bench-edge/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
RUNS=$OUT/runs.tsv
printf 'round\tcase\tvotes_per_s\tp50_ms\tp99_ms\tedge_cpu_us\tnode_cpu_us\tnode_cpu_share\tbatch_votes\n' >"$RUNS"
echo "bench-edge: $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg); runs in $OUT"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

start_node() { # DIR [EXPECTED_VOTES]: a fresh fsync node on $NODE; sets NODE_PID
  require_free_port bench-edge $NODE
  local config=()
  if [ -n "${2:-}" ]; then
    printf 'listen = "%s"\ndata_dir = "%s"\n[[polls]]\nid = "superbowl"\noptions = ["green", "blue"]\nopen = true\nexpected_votes = %s\n' \
      "$NODE" "$1/data" "$2" >"$1/node.toml"
    config=(--config "$1/node.toml")
  fi
  RUST_LOG=warn $T/tally run --listen $NODE --data-dir "$1/data" "${config[@]}" >"$1/node.log" 2>&1 &
  NODE_PID=$!; pids+=("$NODE_PID")
  wait_ready $NODE_PID "${NODE##*:}"
}
start_edge() { # DIR ADDRESS N L [INTERVAL]: an edge on ADDRESS in front of $NODE; sets EDGE_PID
  require_free_port bench-edge "$2"
  RUST_LOG=warn $T/tally edge --listen "$2" --upstream "http://$NODE" --batch-votes-max "$3" \
    --linger-ms "$4" --batch-interval-ms "${5:-0}" >>"$1/edge.log" 2>&1 &
  EDGE_PID=$!; pids+=("$EDGE_PID")
  wait_ready $EDGE_PID "${2##*:}"
}
stop() { kill "$@" 2>/dev/null || true; for pid in "$@"; do wait "$pid" 2>/dev/null || true; done; }
# load REPORT TARGETS... [-- EXTRA FLAGS]: the measured run.
load() {
  local report=$1; shift
  local targets=() extra=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do targets+=(--target "http://$1"); shift; done
  [ $# -gt 0 ] && shift && extra=("$@")
  $T/tally load "${targets[@]}" --no-progress --check off --options green,blue --threads 1 \
    --connections "$CONNECTIONS" --duration "${SECONDS_PER_RUN}s" --json-report "$report" \
    "${extra[@]}" >/dev/null 2>&1
}
# record ROUND CASE REPORT EDGE_TICKS NODE_TICKS BATCH_VOTES: one row of runs.tsv.
record() {
  python3 - "$@" "$(getconf CLK_TCK)" <<'PY' | tee -a "$RUNS"
import json, sys
rnd, case, report, edge_ticks, node_ticks, batch, tick = sys.argv[1:8]
r = json.load(open(report))
votes, tick = max(1, r["votes_sent"]), int(tick)
per_vote = lambda ticks: f"{int(ticks) / tick * 1e6 / votes:.2f}" if ticks != "-" else "-"
share = f"{int(node_ticks) / tick / r['elapsed_s']:.2f}" if node_ticks != "-" else "-"
print("\t".join([rnd, case, str(round(r["votes_per_s"])), f"{r['latency']['p50_us'] / 1000:.2f}",
      f"{r['latency']['p99_us'] / 1000:.2f}", per_vote(edge_ticks), per_vote(node_ticks), share, batch]))
PY
}
ticks_since() { echo $(( $(cpu_ticks "$1") - $2 )); }
mean_batch() { # EDGE_ADDRESS [SUM COUNT]: mean votes per batch so far (since SUM COUNT)
  curl -sf "http://$1/metrics" | awk -v s0="${2:-0}" -v c0="${3:-0}" '/^tally_edge_batch_votes_sum /{s=$2} /^tally_edge_batch_votes_count /{c=$2} END {printf "%.1f", (c > c0 ? (s - s0) / (c - c0) : 0)}'
}
batch_totals() { # EDGE_ADDRESS: "SUM COUNT" of the batch-size histogram
  curl -sf "http://$1/metrics" | awk '/^tally_edge_batch_votes_sum /{s=$2} /^tally_edge_batch_votes_count /{c=$2} END {print s + 0, c + 0}'
}
# flood DIR PROCESSES CONNECTIONS: PROCESSES `tally load` runs at once against $EDGE; writes
# DIR/report.json with their votes summed, rates summed and the worst p50/p99.
flood() {
  local dir=$1 processes=$2 connections=$3 loads=()
  for i in $(seq "$processes"); do
    $T/tally load --target "http://$EDGE" --no-progress --check off --options green,blue \
      --threads 1 --connections "$connections" --duration "${SECONDS_PER_RUN}s" \
      --json-report "$dir/load-$i.json" >/dev/null 2>&1 &
    loads+=($!)
  done
  wait "${loads[@]}"
  python3 - "$dir" "$processes" <<'PY'
import json, sys
dir, n = sys.argv[1], int(sys.argv[2])
rs = [json.load(open(f"{dir}/load-{i}.json")) for i in range(1, n + 1)]
json.dump({"votes_sent": sum(r["votes_sent"] for r in rs),
           "votes_per_s": sum(r["votes_per_s"] for r in rs),
           "elapsed_s": max(r["elapsed_s"] for r in rs),
           "latency": {k: max(r["latency"][k] for r in rs) for k in ("p50_us", "p99_us")}},
          open(f"{dir}/report.json", "w"))
PY
}
direct_rates=()
for round in $(seq "$ROUNDS"); do
  for case in $CASES; do
    d=$(mktemp -d "$OUT/run-XXXX")
    case $case in
      hello)
        require_free_port bench-edge $HELLO
        $T/examples/hello_server $HELLO >/dev/null 2>&1 & pid=$!; pids+=("$pid")
        wait_for_server bench-edge $pid $HELLO
        warm_up $T/tally $HELLO
        before=$(cpu_ticks $pid)
        load "$d/report.json" $HELLO
        record "$round" hello "$d/report.json" "$(ticks_since $pid "$before")" - -
        stop $pid ;;
      direct)
        start_node "$d"; warm_up $T/tally $NODE
        before=$(cpu_ticks $NODE_PID)
        load "$d/report.json" $NODE
        record "$round" direct "$d/report.json" - "$(ticks_since $NODE_PID "$before")" - \
          | tee "$d/row"
        direct_rates+=("$(cut -f3 "$d/row")")
        stop $NODE_PID ;;
      edge)
        start_node "$d"; start_edge "$d" $EDGE 256 2; e=$EDGE_PID; warm_up $T/tally $EDGE
        eb=$(cpu_ticks "$e"); nb=$(cpu_ticks $NODE_PID)
        load "$d/report.json" $EDGE
        record "$round" edge "$d/report.json" "$(ticks_since "$e" "$eb")" \
          "$(ticks_since $NODE_PID "$nb")" "$(mean_batch $EDGE)"
        stop "$e" $NODE_PID ;;
      edges2)
        start_node "$d"; start_edge "$d" $EDGE 256 2; e1=$EDGE_PID
        start_edge "$d" $EDGE2 256 2; e2=$EDGE_PID
        warm_up $T/tally $EDGE
        eb=$(( $(cpu_ticks "$e1") + $(cpu_ticks "$e2") )); nb=$(cpu_ticks $NODE_PID)
        load "$d/report.json" $EDGE $EDGE2
        ea=$(( $(cpu_ticks "$e1") + $(cpu_ticks "$e2") ))
        record "$round" edges2 "$d/report.json" "$((ea - eb))" \
          "$(ticks_since $NODE_PID "$nb")" "$(mean_batch $EDGE)"
        stop "$e1" "$e2" $NODE_PID ;;
      half)
        [ ${#direct_rates[@]} -gt 0 ] || { echo "bench-edge: half needs direct first" >&2; exit 2; }
        rate=$(printf '%s\n' "${direct_rates[@]}" | sort -n | awk '{a[NR]=$1} END {print int(a[int((NR+1)/2)] / 2)}')
        start_node "$d"; start_edge "$d" $EDGE 256 2; e=$EDGE_PID; warm_up $T/tally $EDGE
        nb=$(cpu_ticks $NODE_PID)
        load "$d/direct.json" $NODE -- --rate "$rate"
        record "$round" "half-direct@$rate" "$d/direct.json" - "$(ticks_since $NODE_PID "$nb")" -
        eb=$(cpu_ticks "$e"); nb=$(cpu_ticks $NODE_PID); b0=$(batch_totals $EDGE)
        load "$d/edge.json" $EDGE -- --rate "$rate"
        # shellcheck disable=SC2086 # b0 is "SUM COUNT"
        record "$round" "half-edge@$rate" "$d/edge.json" "$(ticks_since "$e" "$eb")" \
          "$(ticks_since $NODE_PID "$nb")" "$(mean_batch $EDGE $b0)"
        stop "$e" $NODE_PID
        require_free_port bench-edge $HELLO
        $T/examples/hello_server $HELLO >/dev/null 2>&1 & pid=$!; pids+=("$pid")
        wait_for_server bench-edge $pid $HELLO
        warm_up $T/tally $HELLO
        before=$(cpu_ticks $pid)
        load "$d/hello.json" $HELLO -- --rate "$rate"
        record "$round" "half-hello@$rate" "$d/hello.json" "$(ticks_since $pid "$before")" - -
        stop $pid ;;
      curve)
        for point in $CURVE; do
          n=${point%:*}; l=${point#*:}
          mkdir -p "$d/$point"
          start_node "$d/$point"; start_edge "$d/$point" $EDGE "$n" "$l"; e=$EDGE_PID
          warm_up $T/tally $EDGE
          eb=$(cpu_ticks "$e"); nb=$(cpu_ticks $NODE_PID)
          load "$d/$point.json" $EDGE
          record "$round" "curve N=$n L=${l}ms" "$d/$point.json" "$(ticks_since "$e" "$eb")" \
            "$(ticks_since $NODE_PID "$nb")" "$(mean_batch $EDGE)"
          stop "$e" $NODE_PID
        done ;;
      flood)
        for point in $FLOOD; do
          p=${point%x*}; c=${point#*x}
          mkdir -p "$d/$point"
          start_node "$d/$point" "$FLOOD_EXPECTED"
          start_edge "$d/$point" $EDGE "$FLOOD_BATCH" "$FLOOD_LINGER_MS" "$FLOOD_INTERVAL_MS"
          e=$EDGE_PID
          warm_up $T/tally $EDGE
          eb=$(cpu_ticks "$e"); nb=$(cpu_ticks $NODE_PID); b0=$(batch_totals $EDGE)
          flood "$d/$point" "$p" "$c"
          # shellcheck disable=SC2086 # b0 is "SUM COUNT"
          record "$round" "flood ${p}x${c} N=$FLOOD_BATCH L=${FLOOD_LINGER_MS}ms I=${FLOOD_INTERVAL_MS}ms" \
            "$d/$point/report.json" \
            "$(ticks_since "$e" "$eb")" "$(ticks_since $NODE_PID "$nb")" "$(mean_batch $EDGE $b0)"
          stop "$e" $NODE_PID
        done ;;
      *) echo "bench-edge: unknown case $case" >&2; exit 2 ;;
    esac
  done
done
echo "bench-edge: load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$RUNS" <<'PY' | tee "$OUT/summary.md"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
def num(v):
    try: return float(v)
    except ValueError: return None
def med(case, col):
    vals = [num(r[col]) for r in rows if r["case"] == case and num(r[col]) is not None]
    return statistics.median(vals) if vals else None
def paired(a, b, col, fa=lambda r: r):
    out = []
    for rnd in {r["round"] for r in rows}:
        x = [num(r[col]) for r in rows if r["round"] == rnd and r["case"] == a]
        y = [num(r[col]) for r in rows if r["round"] == rnd and r["case"] == b]
        if x and y and x[0] and y[0]: out.append(x[0] / y[0])
    return statistics.median(out) if out else None
fmt = lambda v, f="{:,.0f}": "-" if v is None else f.format(v)
cases = list(dict.fromkeys(r["case"] for r in rows))
print("| case | votes/s (median) | p50 / p99 ms | edge CPU µs/vote (hello: server CPU µs/request) | node CPU µs/vote | node CPU share (cores) | votes per batch |")
print("|---|---|---|---|---|---|---|")
for c in cases:
    print(f"| {c} | {fmt(med(c, 'votes_per_s'))} | {fmt(med(c, 'p50_ms'), '{:.2f}')} / {fmt(med(c, 'p99_ms'), '{:.2f}')} | "
          f"{fmt(med(c, 'edge_cpu_us'), '{:.2f}')} | {fmt(med(c, 'node_cpu_us'), '{:.2f}')} | "
          f"{fmt(med(c, 'node_cpu_share'), '{:.2f}')} | {fmt(med(c, 'batch_votes'), '{:.1f}')} |")
hello_cpu = med("hello", "edge_cpu_us")
edge_cpu = med("edge", "edge_cpu_us")
print()
if hello_cpu and edge_cpu:
    print(f"- edge CPU per vote / hello CPU per request: {edge_cpu / hello_cpu:.2f}x "
          f"(paired {fmt(paired('edge', 'hello', 'edge_cpu_us'), '{:.2f}')}x; target <= 1.25x)")
half_edge = [c for c in cases if c.startswith("half-edge")]
half_hello = [c for c in cases if c.startswith("half-hello")]
if half_edge and half_hello:
    # Each round's half rate is its own (half that round's direct rate), so the cases' names
    # differ by round: pair the rows by round and by the name's prefix.
    def by_prefix(prefix, rnd=None):
        return [num(r["edge_cpu_us"]) for r in rows if r["case"].startswith(prefix)
                and (rnd is None or r["round"] == rnd) and num(r["edge_cpu_us"])]
    ratios = [by_prefix("half-edge", rnd)[0] / by_prefix("half-hello", rnd)[0]
              for rnd in sorted({r["round"] for r in rows})
              if by_prefix("half-edge", rnd) and by_prefix("half-hello", rnd)]
    print(f"- at equal rates (both open loop at {', '.join(c.split('@')[1] for c in half_edge)}/s, one a round): "
          f"edge CPU per vote {statistics.median(by_prefix('half-edge')):.2f} µs / hello CPU per request "
          f"{statistics.median(by_prefix('half-hello')):.2f} µs = "
          f"{statistics.median(ratios):.2f}x (paired; rounds {' / '.join(f'{x:.2f}' for x in ratios)}; target <= 1.25x)")
print(f"- node CPU per vote through the edge: {fmt(med('edge', 'node_cpu_us'), '{:.2f}')} µs "
      f"(direct single votes: {fmt(med('direct', 'node_cpu_us'), '{:.2f}')} µs; target <= 1 µs)")
for c in [c for c in cases if c.startswith("flood")]:
    print(f"- {c}: node CPU {fmt(med(c, 'node_cpu_us'), '{:.2f}')} µs per vote at "
          f"{fmt(med(c, 'batch_votes'), '{:.0f}')} votes per batch (target <= 1 µs), edge "
          f"{fmt(med(c, 'edge_cpu_us'), '{:.2f}')} µs per vote, {fmt(med(c, 'votes_per_s'))} votes/s")
print(f"- votes/s through one edge / direct: {fmt(paired('edge', 'direct', 'votes_per_s'), '{:.2f}')}x; "
      f"two edges / one edge: {fmt(paired('edges2', 'edge', 'votes_per_s'), '{:.2f}')}x, "
      f"node CPU share with two edges {fmt(med('edges2', 'node_cpu_share'), '{:.2f}')} cores")
half = [c for c in cases if c.startswith("half-")]
if half:
    d = [c for c in half if c.startswith("half-direct")]
    e = [c for c in half if c.startswith("half-edge")]
    if d and e:
        added = [num(x["p99_ms"]) - num(y["p99_ms"]) for x in rows for y in rows
                 if x["case"].startswith("half-edge") and y["case"].startswith("half-direct") and x["round"] == y["round"]]
        print(f"- p99 added by the edge at half the direct maximum rate: "
              f"{statistics.median(added):.2f} ms (paired median; target <= 5 ms)")
PY
