#!/usr/bin/env bash
# The node benchmark of issue 3, in one command: builds release, then on 127.0.0.1 measures with
# the SAME client (`tally load`) and the same connection count:
#   (a) a minimal axum route (node/examples/hello_server.rs): the framework's ceiling; also wrk
#       against it, as a cross-check of the client;
#   (b) Tally single votes with fsync durability (`tally run` on a temporary data directory);
#   (c) Tally batches of 1,000 votes, postcard and JSON, with durability;
#   (d) latency at half the maximum single-vote rate of (b), open loop (from intended send time);
#   (e) resident memory per held vote ID: the node's VmRSS before and after loading N votes;
# plus two supplementary rows that tell what limits (b): 4x the connections, and memory-only
# (NOT durable). Each measurement runs RUNS times (default 3) for SECONDS seconds (default 8),
# each on a fresh, warmed-up server, the cases interleaved round by round (so a change in the
# machine's other load hits every case alike); the medians, and the median of the ratios
# within a round, are reported. Client (`tally load --threads 1`, like `wrk -t1`) and server share this
# machine's cores (`nproc`), so every figure is for both together. Writes every run and the exact
# commands under target/bench-node/<time>/ and prints a table (also in summary.md there).
#
# Settings (environment): BENCH_RUNS, BENCH_SECONDS, BENCH_CONNECTIONS, BENCH_MEMORY_VOTES,
# BENCH_NODE_PORT, BENCH_HELLO_PORT. Only 127.0.0.1 is contacted; every run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${BENCH_RUNS:-3}
SECONDS_PER_RUN=${BENCH_SECONDS:-8}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
MEMORY_VOTES=${BENCH_MEMORY_VOTES:-5000000}
NODE_ADDRESS=127.0.0.1:${BENCH_NODE_PORT:-18180}
HELLO_ADDRESS=127.0.0.1:${BENCH_HELLO_PORT:-18181}
BATCH=1000
WARM_UP_VOTES=5000

# The table from $OUT's files: medians, ratios, CPU ceilings and targets.
summarize() {
python3 - "$OUT/runs.tsv" "$OUT/memory.tsv" "$HALF_RATE" "$CONNECTIONS" "$SECONDS_PER_RUN" "$RUNS" \
  "$(nproc)" "$LOAD_BEFORE" "$LOAD_AFTER" "$MEMORY_VOTES" <<'PY'
import csv, statistics, sys
runs, memory, half, conns, secs, n, cores, load_before, load_after, mem_votes = sys.argv[1:11]
rows = list(csv.DictReader(open(runs), delimiter="\t"))
def med(case, col):
    vals = [float(r.get(col) or 0) for r in rows if r["case"] == case]
    return statistics.median(vals) if vals else 0.0
def per_vote_us(case, col):
    vals = [float(r[col]) * 1e6 / max(1, int(r["votes"])) for r in rows if r["case"] == case]
    return statistics.median(vals) if vals else 0.0
def spread(case):
    vals = sorted(round(float(r["votes_per_s"])) for r in rows if r["case"] == case)
    return " / ".join(f"{v:,}" for v in vals)
def ceiling(case):
    # The rate the machine's cores could carry if node and client had them to themselves.
    cpu = per_vote_us(case, "server_cpu_s") + per_vote_us(case, "client_cpu_s")
    return int(cores) * 1e6 / cpu if cpu else 0.0
checks = {c: {r["check"] for r in rows if r["case"] == c} for c in {r["case"] for r in rows}}
hello = med("hello", "votes_per_s")
print(f"Node benchmark: medians of {n} runs of {secs} s, {conns} connections, on 127.0.0.1; client and "
      f"server share {cores} cores (load average {load_before} before, {load_after} after; 'other "
      f"load' is the cores kept busy by everything else during a run, median over runs; 'CPU "
      f"ceiling' is cores × 10⁶ / (node + client CPU µs per vote), the rate if the two had the "
      f"cores to themselves).\n")
print("| case | votes/s (median) | × hello | runs (votes/s) | p50 ms | p99 ms | node CPU µs/vote | client CPU µs/vote | CPU ceiling, votes/s | other load, cores | check |")
print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|")
names = {
    "hello": "(a) hello route, tally load",
    "wrk-hello": "(a) hello route, wrk -t1",
    "single": "(b) Tally single votes, fsync",
    "batch-binary": "(c) Tally batches ×1000 postcard, fsync",
    "batch-json": "(c) Tally batches ×1000 JSON, fsync",
    "half-rate": f"(d) Tally single votes at {half}/s, fsync (latency from intended send)",
    "single-c4x": f"(supplement) Tally single votes, fsync, {int(conns) * 4} connections",
    "single-memory": "(supplement) Tally single votes, memory-only: NOT durable",
}
for case, label in names.items():
    v = med(case, "votes_per_s")
    print(f"| {label} | {v:,.0f} | {v / hello if hello else 0:.2f} | {spread(case)} | "
          f"{med(case, 'p50_us') / 1000:.3f} | {med(case, 'p99_us') / 1000:.3f} | "
          f"{per_vote_us(case, 'server_cpu_s'):.2f} | {per_vote_us(case, 'client_cpu_s'):.2f} | "
          f"{ceiling(case):,.0f} | {med(case, 'other_cores'):.2f} | "
          f"{'/'.join(sorted(checks.get(case, set())))} |")
try:
    fsyncs = list(csv.DictReader(open(runs.replace("runs.tsv", "fsync.tsv")), delimiter="\t"))
except OSError:
    fsyncs = []
if fsyncs:
    print("\nThe node's write-ahead log during each case (from its /metrics; medians over runs):\n")
    print("| case | fsyncs/s | mean fsync ms | votes per fsync |")
    print("|---|---:|---:|---:|")
    for case, label in names.items():
        rs = [r for r in fsyncs if r["case"] == case and int(r["fsyncs"]) > 0]
        if not rs:
            continue
        per_s = statistics.median(int(r["fsyncs"]) / float(secs) for r in rs)
        mean_ms = statistics.median(float(r["fsync_seconds"]) * 1e3 / int(r["fsyncs"]) for r in rs)
        group = statistics.median(int(r["votes"]) / int(r["fsyncs"]) for r in rs)
        print(f"| {label} | {per_s:,.0f} | {mean_ms:.2f} | {group:,.0f} |")
mem = list(csv.DictReader(open(memory), delimiter="\t"))
bpv = statistics.median(float(r["bytes_per_vote"]) for r in mem) if mem else 0.0
runs_bpv = " / ".join(r["bytes_per_vote"] for r in mem)
print(f"\n(e) resident memory per held vote ID after {int(mem_votes):,} votes: {bpv:.1f} bytes "
      f"(median VmRSS growth / votes; runs {runs_bpv})")
single = med("single", "votes_per_s")
batch = max(med("batch-binary", "votes_per_s"), med("batch-json", "votes_per_s"))
p99 = med("half-rate", "p99_us") / 1000
wrk = med("wrk-hello", "votes_per_s")
def paired(case, base):
    # Per run: case / base measured in the same round, then the median of those ratios.
    by_run = {r["run"]: float(r["votes_per_s"]) for r in rows if r["case"] == base}
    ratios = [float(r["votes_per_s"]) / by_run[r["run"]] for r in rows
              if r["case"] == case and by_run.get(r["run"])]
    return statistics.median(ratios) if ratios else 0.0
print(f"\nPaired ratios (median over runs of the ratio within a round): single/hello "
      f"{paired('single', 'hello'):.2f}, single/wrk-hello {paired('single', 'wrk-hello'):.2f}, "
      f"hello/wrk-hello {paired('hello', 'wrk-hello'):.2f}, memory-only single/hello "
      f"{paired('single-memory', 'hello'):.2f}")
print("\nTargets:")
print(f"- single votes with fsync ≥ 0.8× hello: {single / hello if hello else 0:.2f}× — "
      f"{'MET' if hello and single >= 0.8 * hello else 'NOT MET'}")
print(f"- batch ingestion ≥ 1M votes/s with durability: {batch:,.0f}/s — {'MET' if batch >= 1e6 else 'NOT MET'}")
print(f"- p99 ≤ 10 ms at half max rate ({half} votes/s): {p99:.3f} ms from the intended send time "
      f"(service time p99 {med('half-rate', 'service_p99_us') / 1000:.3f} ms) — {'MET' if p99 <= 10 else 'NOT MET'}")
print(f"- CPU ceilings: single/hello {ceiling('single') / ceiling('hello') if ceiling('hello') else 0:.2f}, "
      f"single/wrk-hello {ceiling('single') / ceiling('wrk-hello') if ceiling('wrk-hello') else 0:.2f}")
print(f"- client cross-check: tally load reaches {hello / wrk if wrk else 0:.2f}× wrk's rate on the hello route")
PY
}

# `bench-node.sh --summary target/bench-node/TIME` prints an earlier run's table again.
if [ "${1:-}" = "--summary" ]; then
  OUT=${2:?usage: scripts/bench-node.sh --summary target/bench-node/TIME}
  # shellcheck source=/dev/null
  . "$OUT/settings.env"
  summarize
  exit 0
fi

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
[ -x /usr/bin/time ] || need+=(time)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bench-node: installing ${need[*]} (Debian packages)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "bench-node: please install: ${need[*]}" >&2
    exit 1
  fi
fi

echo "bench-node: building release"
cargo build --release --locked -p tally-node --bin tally --example hello_server
TALLY=target/release/tally
HELLO=target/release/examples/hello_server

OUT=target/bench-node/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
SCRATCH=$(mktemp -d)
RUNS_TSV=$OUT/runs.tsv
COMMANDS=$OUT/commands.txt
printf 'case\trun\tvotes_per_s\tp50_us\tp99_us\tp999_us\tmax_us\terrors\tcheck\tserver_cpu_s\tclient_cpu_s\tvotes\tservice_p99_us\tother_cores\n' >"$RUNS_TSV"
: >"$COMMANDS"
printf 'case\trun\tfsyncs\tfsync_seconds\tvotes\n' >"$OUT/fsync.tsv"

SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
cleanup() {
  stop_server
  rm -rf "$SCRATCH"
}
trap cleanup EXIT

# Waits until something accepts connections on $1 (HOST:PORT), at most 10 s.
wait_listening() {
  local host=${1%:*} port=${1##*:}
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "bench-node: the server exited at start-up (log: $OUT/server.log)" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "bench-node: nothing listens on $1 after 10 s" >&2
  exit 1
}

start_hello() {
  "$HELLO" "$HELLO_ADDRESS" >>"$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  wait_listening "$HELLO_ADDRESS"
}

# A fresh node with fsync durability on its own temporary data directory.
start_node() {
  local data
  data=$(mktemp -d -p "$SCRATCH")
  RUST_LOG=warn "$TALLY" run --listen "$NODE_ADDRESS" --data-dir "$data/data" >>"$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  wait_listening "$NODE_ADDRESS"
}

# A fresh memory-only node: NOT durable; only for the supplementary row.
start_memory_node() {
  RUST_LOG=warn "$TALLY" run --listen "$NODE_ADDRESS" --memory-only >>"$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  wait_listening "$NODE_ADDRESS"
}

# Not measured: opens connections, faults the binary in, creates the log file.
warm_up() {
  "$TALLY" load --target "http://$1" --connections "$CONNECTIONS" --no-progress --check off \
    --options green,blue --count "$WARM_UP_VOTES" >/dev/null
}

# CPU seconds (user + system) the server has used so far.
server_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / hz }' "/proc/$SERVER_PID/stat"
}

# CPU seconds the whole machine has been busy (all cores; idle and I/O wait excluded).
machine_busy() {
  awk -v hz="$(getconf CLK_TCK)" '/^cpu / { printf "%.3f", ($2 + $3 + $4 + $7 + $8 + $9) / hz }' /proc/stat
}

# VmRSS of the server in kB.
server_rss_kb() {
  awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status"
}

# Runs `tally load` with the given arguments as run $2 of case $1; appends a row to runs.tsv.
# RUN_CONNECTIONS overrides the connection count.
load_run() {
  local name=$1 run=$2
  shift 2
  local report=$OUT/$name-$run.json
  local cmd=("$TALLY" load --connections "${RUN_CONNECTIONS:-$CONNECTIONS}" --no-progress
    --json-report "$report" "$@")
  echo "$name run $run: ${cmd[*]}" >>"$COMMANDS"
  local cpu_before cpu_after busy_before busy_after status=0
  cpu_before=$(server_cpu)
  busy_before=$(machine_busy)
  /usr/bin/time -f '%U %S' -o "$OUT/$name-$run.time" "${cmd[@]}" >"$OUT/$name-$run.txt" 2>&1 || status=$?
  busy_after=$(machine_busy)
  cpu_after=$(server_cpu)
  if [ ! -s "$report" ]; then
    echo "bench-node: $name run $run failed (exit $status):" >&2
    cat "$OUT/$name-$run.txt" >&2
    exit 1
  fi
  python3 - "$report" "$name" "$run" "$cpu_before" "$cpu_after" "$OUT/$name-$run.time" \
    "$busy_before" "$busy_after" >>"$RUNS_TSV" <<'PY'
import json, sys
report, name, run, before, after, timing, busy_before, busy_after = sys.argv[1:9]
r = json.load(open(report))
client = sum(float(x) for x in open(timing).read().split()[-2:])
# Cores kept busy by everything but this server and this client (other tenants, the kernel's
# own threads), averaged over the run: how disturbed the measurement was.
other = (float(busy_after) - float(busy_before) - (float(after) - float(before)) - client) / r["elapsed_s"]
errors = sum(r["errors"].values())
check = {None: "off", True: "passed", False: "FAILED"}[r["check_passed"]]
lat = r["latency"]
print("\t".join(str(x) for x in [name, run, round(r["votes_per_s"]), lat["p50_us"], lat["p99_us"],
      lat["p999_us"], lat["max_us"], errors, check, round(float(after) - float(before), 3),
      round(client, 3), r["votes_sent"], r["service_time"]["p99_us"], round(max(other, 0), 2)]))
PY
  tail -n 1 "$RUNS_TSV" | awk -F'\t' '{ printf "  %-16s run %s: %9d votes/s  p50 %6.3f ms  p99 %7.3f ms  check %s  other load %.2f cores\n", $1, $2, $3, $4/1000, $5/1000, $9, $14 }'
}

# "FSYNCS SECONDS" from the node's /metrics: log fsyncs so far and the time they took.
fsync_totals() {
  python3 - "http://$NODE_ADDRESS/metrics" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
values = {}
for line in text.splitlines():
    if line.startswith("tally_wal_fsync_duration_seconds_"):
        name, value = line.rsplit(" ", 1)
        values[name] = float(value)
print(int(values.get("tally_wal_fsync_duration_seconds_count", 0)),
      values.get("tally_wal_fsync_duration_seconds_sum", 0.0))
PY
}

# measure_run CASE RUN START_FUNCTION ADDRESS LOAD_ARGS...: one run on a fresh warmed-up server.
# For Tally nodes, also how many fsyncs the run took and how long they were (fsync.tsv).
measure_run() {
  local name=$1 run=$2 start=$3 address=$4
  shift 4
  "$start"
  warm_up "$address"
  local before=""
  [ "$address" = "$NODE_ADDRESS" ] && before=$(fsync_totals)
  load_run "$name" "$run" --target "http://$address" "$@"
  if [ -n "$before" ]; then
    local after votes
    after=$(fsync_totals)
    votes=$(tail -n 1 "$RUNS_TSV" | cut -f12)
    echo "$name $run $before $after $votes" |
      awk '{ printf "%s\t%s\t%d\t%.6f\t%d\n", $1, $2, $5 - $3, $6 - $4, $7 }' >>"$OUT/fsync.tsv"
  fi
  stop_server
}

# wrk against the hello route, run $1; appends a row to runs.tsv.
wrk_run() {
  local run=$1
  local cmd=(wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" -s "$WRK_LUA" --latency
    "http://$HELLO_ADDRESS/v1/polls/superbowl/votes")
  echo "wrk-hello run $run: ${cmd[*]}" >>"$COMMANDS"
  local cpu_before cpu_after busy_before busy_after
  cpu_before=$(server_cpu)
  busy_before=$(machine_busy)
  /usr/bin/time -f '%U %S' -o "$OUT/wrk-$run.time" "${cmd[@]}" >"$OUT/wrk-$run.txt" 2>&1
  busy_after=$(machine_busy)
  cpu_after=$(server_cpu)
  python3 - "$OUT/wrk-$run.txt" "$run" "$cpu_before" "$cpu_after" "$OUT/wrk-$run.time" \
    "$busy_before" "$busy_after" "$SECONDS_PER_RUN" >>"$RUNS_TSV" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
run, before, after = sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
client = sum(float(x) for x in open(sys.argv[5]).read().split()[-2:])
other = (float(sys.argv[7]) - float(sys.argv[6]) - (after - before) - client) / float(sys.argv[8])
def us(pattern):
    m = re.search(pattern + r"\s+([\d.]+)(us|ms|s)\b", text)
    if not m:
        return 0
    return round(float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)])
rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
total = int(re.search(r"(\d+) requests in", text).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sockets.groups())) if sockets else 0)
print("\t".join(str(x) for x in ["wrk-hello", run, round(rate), us("50%"), us("99%"), 0,
      us(r"Latency\s+[\d.]+\w+\s+[\d.]+\w+"), errors, "off", round(after - before, 3),
      round(client, 3), total, 0, round(max(other, 0), 2)]))
PY
  tail -n 1 "$RUNS_TSV" | awk -F'\t' '{ printf "  %-16s run %s: %9d req/s    p50 %6.3f ms  p99 %7.3f ms  other load %.2f cores\n", $1, $2, $3, $4/1000, $5/1000, $14 }'
}

# Median of column $2 (1-based) of case $1's rows.
median() {
  awk -F'\t' -v name="$1" -v col="$2" '$1 == name { print $col }' "$RUNS_TSV" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

WRK_LUA=$OUT/post.lua
cat >"$WRK_LUA" <<'LUA'
wrk.method = "POST"
wrk.body = '{"option":"green","vote_id":"0b6d9a5e-1f3c-4c8e-9a1f-2d3b4c5d6e7f"}'
wrk.headers["Content-Type"] = "application/json"
LUA

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
cat >"$OUT/settings.env" <<ENV
RUNS=$RUNS
SECONDS_PER_RUN=$SECONDS_PER_RUN
CONNECTIONS=$CONNECTIONS
MEMORY_VOTES=$MEMORY_VOTES
LOAD_BEFORE='$LOAD_BEFORE'
ENV
echo "bench-node: $(nproc) cores shared by client and server; load average $LOAD_BEFORE"
echo "bench-node: data directories on $(df -T "$SCRATCH" | awk 'NR == 2 { print $2 " (" $1 ")" }')"
echo "bench-node: $RUNS runs of ${SECONDS_PER_RUN} s, $CONNECTIONS connections; output in $OUT"

# (a)-(c) and the supplementary rows, interleaved: run 1 of every case, then run 2, ... so that
# a change in the machine's other load during the benchmark hits every case alike.
for run in $(seq "$RUNS"); do
  # (a) the hello route, with tally load and with wrk.
  measure_run hello "$run" start_hello "$HELLO_ADDRESS" --check off --options green,blue \
    --duration "${SECONDS_PER_RUN}s"
  start_hello
  warm_up "$HELLO_ADDRESS"
  wrk_run "$run"
  stop_server
  # (b) single votes with fsync, (c) batches with fsync.
  measure_run single "$run" start_node "$NODE_ADDRESS" --duration "${SECONDS_PER_RUN}s"
  measure_run batch-binary "$run" start_node "$NODE_ADDRESS" --batch-size "$BATCH" --binary \
    --duration "${SECONDS_PER_RUN}s"
  measure_run batch-json "$run" start_node "$NODE_ADDRESS" --batch-size "$BATCH" \
    --duration "${SECONDS_PER_RUN}s"
  # Supplementary: 4x the connections (if throughput grows, (b) is bound by latency, not
  # CPU), and the same load without durability (NOT durable; labelled as such).
  RUN_CONNECTIONS=$((CONNECTIONS * 4)) measure_run single-c4x "$run" start_node "$NODE_ADDRESS" \
    --duration "${SECONDS_PER_RUN}s"
  measure_run single-memory "$run" start_memory_node "$NODE_ADDRESS" \
    --duration "${SECONDS_PER_RUN}s"
done

# (d) single votes at half the median maximum rate of (b), open loop.
HALF_RATE=$(awk -v m="$(median single 3)" 'BEGIN { printf "%d", m / 2 }')
echo "HALF_RATE=$HALF_RATE" >>"$OUT/settings.env"
for run in $(seq "$RUNS"); do
  measure_run half-rate "$run" start_node "$NODE_ADDRESS" --rate "$HALF_RATE" \
    --duration "${SECONDS_PER_RUN}s"
done

# (e) memory per held vote ID: VmRSS before and after loading MEMORY_VOTES votes (no warm-up).
MEMORY_TSV=$OUT/memory.tsv
printf 'run\tvotes\trss_before_kb\trss_after_kb\tbytes_per_vote\n' >"$MEMORY_TSV"
for run in $(seq "$RUNS"); do
  start_node
  before=$(server_rss_kb)
  load_run memory "$run" --target "http://$NODE_ADDRESS" --batch-size "$BATCH" --binary \
    --count "$MEMORY_VOTES"
  after=$(server_rss_kb)
  echo "memory run $run: VmRSS of tally run (pid $SERVER_PID) from /proc/PID/status before and after" >>"$COMMANDS"
  awk -v r="$run" -v n="$MEMORY_VOTES" -v b="$before" -v a="$after" \
    'BEGIN { printf "%s\t%d\t%d\t%d\t%.1f\n", r, n, b, a, (a - b) * 1024 / n }' >>"$MEMORY_TSV"
  tail -n 1 "$MEMORY_TSV" | awk -F'\t' '{ printf "  memory           run %s: VmRSS %d kB -> %d kB for %d votes: %.1f bytes/vote ID\n", $1, $3, $4, $2, $5 }'
  stop_server
done

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
echo "LOAD_AFTER='$LOAD_AFTER'" >>"$OUT/settings.env"
summarize | tee "$OUT/summary.md"
echo
echo "bench-node: every run in $RUNS_TSV, commands in $COMMANDS, summary in $OUT/summary.md"
