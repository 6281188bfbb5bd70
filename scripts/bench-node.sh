#!/usr/bin/env bash
# The node benchmark of issues 3 and 6, in one command: builds release, then on 127.0.0.1 measures
# with the SAME client (`tally load`) and the same connection count:
#   (a) a minimal axum route (node/examples/hello_server.rs): the framework's ceiling; also wrk
#       against it, as a cross-check of the client; and DESIGN.md §7's single-vote reference
#       (node/examples/reference_server.rs: the vote parsed, deduplicated in a
#       Mutex<HashSet<u128>>, counted in two atomics, NOT durable): what a vote handler without
#       a log, receipts or metrics costs on top of the hello route; and the same reference made
#       durable (each new vote's 17 bytes appended to a file and answered after the group
#       commit's fdatasync that covers it): the least a vote with Tally's durability costs;
#   (b) Tally single votes with fsync durability (`tally run` on a temporary data directory);
#   (c) Tally batches of 1,000 votes, postcard and JSON, with durability;
#   (d) latency at half the maximum single-vote rate of (b), open loop (from intended send time);
#   (e) resident memory per held vote ID: the node's VmRSS before and after loading N votes;
#   (f) Redis doing the original design's job (issue 6): one Lua script adds the vote ID to a
#       set and increments the option only if the ID was new (SADD + INCR), driven by
#       redis-benchmark with the same connection count, non-pipelined and pipelined ×32, on a
#       fresh redis-server without persistence (NOT durable), plus a supplementary row with
#       `appendfsync always` (durable); and Redis's VmRSS per set member after N votes;
# plus two supplementary rows that tell what limits (b): 4x the connections, and memory-only
# (NOT durable). Each measurement runs RUNS times (default 3) for SECONDS seconds (default 8),
# each on a fresh, warmed-up server, the cases interleaved round by round (so a change in the
# machine's other load hits every case alike); the medians, and the median of the ratios
# within a round, are reported. Client (`tally load --threads 1`, like `wrk -t1`) and server share this
# machine's cores (`nproc`), so every figure is for both together. Writes every run and the exact
# commands under target/bench-node/<time>/ and prints a table (also in summary.md there), draws
# throughput and latency as an SVG (chart.svg there), and, with BENCH_WRITE=1 (the default),
# copies the table into BENCHMARKS.md between its bench-node markers and the chart to
# benchmarks/node-vs-redis.svg.
#
# Settings (environment): BENCH_RUNS, BENCH_HALF_RATE_RUNS (runs of (d), default 5: one host
# stall in an 8 s open-loop run decides its p99, so it gets more runs than the others),
# BENCH_SECONDS, BENCH_CONNECTIONS, BENCH_MEMORY_VOTES, BENCH_NODE_PORT, BENCH_HELLO_PORT,
# BENCH_REDIS_PORT, BENCH_WRITE. Only 127.0.0.1 is contacted; every run is bounded in time or
# count.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${BENCH_RUNS:-3}
HALF_RATE_RUNS=${BENCH_HALF_RATE_RUNS:-5}
SECONDS_PER_RUN=${BENCH_SECONDS:-8}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
MEMORY_VOTES=${BENCH_MEMORY_VOTES:-5000000}
NODE_ADDRESS=127.0.0.1:${BENCH_NODE_PORT:-18180}
HELLO_ADDRESS=127.0.0.1:${BENCH_HELLO_PORT:-18181}
REDIS_PORT=${BENCH_REDIS_PORT:-18182}
REDIS_ADDRESS=127.0.0.1:$REDIS_PORT
WRITE=${BENCH_WRITE:-1}
# Requests per redis-benchmark run (it takes a count, not a duration), sized to last about
# SECONDS_PER_RUN at the rates seen here (~100k/s non-pipelined, ~600k/s pipelined).
REDIS_REQUESTS=$((SECONDS_PER_RUN * 120000))
REDIS_PIPELINED_REQUESTS=$((SECONDS_PER_RUN * 700000))
REDIS_PIPELINE=32
BATCH=1000
WARM_UP_VOTES=5000

# The table from $OUT's files: medians, ratios, CPU ceilings and targets.
summarize() {
python3 - "$OUT/runs.tsv" "$OUT/memory.tsv" "$HALF_RATE" "$CONNECTIONS" "$SECONDS_PER_RUN" "$RUNS" \
  "$(nproc)" "$LOAD_BEFORE" "$LOAD_AFTER" "$MEMORY_VOTES" "$OUT/redis-memory.tsv" "$OUT/chart.svg" <<'PY'
import csv, os, statistics, sys
runs, memory, half, conns, secs, n, cores, load_before, load_after, mem_votes, redis_memory, chart = sys.argv[1:13]
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
def paired(case, base):
    # Per run: case / base measured in the same round, then the median of those ratios.
    by_run = {r["run"]: float(r["votes_per_s"]) for r in rows if r["case"] == base}
    ratios = [float(r["votes_per_s"]) / by_run[r["run"]] for r in rows
              if r["case"] == case and by_run.get(r["run"])]
    return statistics.median(ratios) if ratios else 0.0
checks = {c: {r["check"] for r in rows if r["case"] == c} for c in {r["case"] for r in rows}}
hello = med("hello", "votes_per_s")
print(f"Node benchmark: medians of {n} runs of {secs} s, {conns} connections, on 127.0.0.1; client and "
      f"server share {cores} cores (load average {load_before} before, {load_after} after; 'other "
      f"load' is the cores kept busy by everything else during a run, median over runs; 'CPU "
      f"ceiling' is cores × 10⁶ / (node + client CPU µs per vote), the rate if the two had the "
      f"cores to themselves).\n")
print("| case | votes/s (median) | × hello | × Redis appendfsync always (paired) | × reference, NOT durable (paired) | runs (votes/s) | p50 ms | p99 ms | node CPU µs/vote | client CPU µs/vote | CPU ceiling, votes/s | other load, cores | check |")
print("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|")
names = {
    "hello": "(a) hello route, tally load",
    "wrk-hello": "(a) hello route, wrk -t1",
    "reference": "(a) DESIGN.md §7 reference: Mutex<HashSet> + 2 atomics, NOT durable",
    "reference-durable": "(a) the same reference + group-commit fdatasync (durable)",
    "single": "(b) Tally single votes, fsync",
    "batch-binary": "(c) Tally batches ×1000 postcard, fsync",
    "batch-json": "(c) Tally batches ×1000 JSON, fsync",
    "half-rate": f"(d) Tally single votes at {half}/s, fsync (latency from intended send; "
                 f"{sum(r['case'] == 'half-rate' for r in rows)} runs)",
    "single-c4x": f"(supplement) Tally single votes, fsync, {int(conns) * 4} connections",
    "single-memory": "(supplement) Tally single votes, memory-only: NOT durable",
    "redis": "(f) Redis SADD+INCR script, non-pipelined, no persistence: NOT durable",
    "redis-pipelined": "(f) Redis SADD+INCR script, pipelined ×32, no persistence: NOT durable",
    "redis-fsync": "(supplement) Redis SADD+INCR script, non-pipelined, appendfsync always",
}
for case, label in names.items():
    v = med(case, "votes_per_s")
    # Issue 24's two ratios, per round: against durable Redis and the non-durable reference.
    vs_redis = paired(case, "redis-fsync") if case != "half-rate" else 0.0
    vs_reference = paired(case, "reference") if case != "half-rate" else 0.0
    print(f"| {label} | {v:,.0f} | {v / hello if hello else 0:.2f} | "
          f"{f'{vs_redis:.2f}' if vs_redis else '-'} | {f'{vs_reference:.2f}' if vs_reference else '-'} | {spread(case)} | "
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
print(f"\nPaired ratios (median over runs of the ratio within a round): single/hello "
      f"{paired('single', 'hello'):.2f}, single/wrk-hello {paired('single', 'wrk-hello'):.2f}, "
      f"hello/wrk-hello {paired('hello', 'wrk-hello'):.2f}, memory-only single/hello "
      f"{paired('single-memory', 'hello'):.2f}, reference/hello {paired('reference', 'hello'):.2f}, "
      f"single/reference {paired('single', 'reference'):.2f}, memory-only single/reference "
      f"{paired('single-memory', 'reference'):.2f}, durable reference/hello "
      f"{paired('reference-durable', 'hello'):.2f}, single/durable reference "
      f"{paired('single', 'reference-durable'):.2f}")
rmem = []
if os.path.exists(redis_memory):
    rmem = list(csv.DictReader(open(redis_memory), delimiter="\t"))
redis_bpv = statistics.median(float(r["bytes_per_member"]) for r in rmem) if rmem else 0.0
if rmem:
    print(f"(f) Redis resident memory per set member after {int(mem_votes):,} votes: {redis_bpv:.1f} bytes "
          f"(median VmRSS growth / SCARD; runs {' / '.join(r['bytes_per_member'] for r in rmem)}; "
          f"its own used_memory growth: {statistics.median(float(r['used_bytes_per_member']) for r in rmem):.1f} bytes)")
def best_batch_paired(base):
    by_run = {r["run"]: float(r["votes_per_s"]) for r in rows if r["case"] == base}
    ratios = []
    for run, b in by_run.items():
        best = max((float(r["votes_per_s"]) for r in rows
                    if r["case"] in ("batch-binary", "batch-json") and r["run"] == run), default=0)
        if b:
            ratios.append(best / b)
    return statistics.median(ratios) if ratios else 0.0
if med("redis", "votes_per_s"):
    print(f"\nAgainst Redis (paired per round): single/redis {paired('single', 'redis'):.2f}, "
          f"best batch/redis-pipelined {best_batch_paired('redis-pipelined'):.2f}, "
          f"single/redis-fsync {paired('single', 'redis-fsync'):.2f}, redis/hello {paired('redis', 'hello'):.2f}")
print("\nTargets:")
print(f"- single votes with fsync ≥ 0.8× hello: {single / hello if hello else 0:.2f}× — "
      f"{'MET' if hello and single >= 0.8 * hello else 'NOT MET'}")
print(f"- batch ingestion ≥ 1M votes/s with durability: {batch:,.0f}/s — {'MET' if batch >= 1e6 else 'NOT MET'}")
print(f"- p99 ≤ 10 ms at half max rate ({half} votes/s): {p99:.3f} ms from the intended send time "
      f"(service time p99 {med('half-rate', 'service_p99_us') / 1000:.3f} ms) — {'MET' if p99 <= 10 else 'NOT MET'}")
print(f"- CPU ceilings: single/hello {ceiling('single') / ceiling('hello') if ceiling('hello') else 0:.2f}, "
      f"single/wrk-hello {ceiling('single') / ceiling('wrk-hello') if ceiling('wrk-hello') else 0:.2f}")
print(f"- client cross-check: tally load reaches {hello / wrk if wrk else 0:.2f}× wrk's rate on the hello route")
if med("redis-fsync", "votes_per_s") and med("reference", "votes_per_s"):
    d24, m24 = paired("single", "redis-fsync"), paired("single-memory", "reference")
    print(f"- (issue 24) single durable votes ≥ 1.0× Redis appendfsync always (paired): {d24:.2f}× — "
          f"{'MET' if d24 >= 1.0 else 'NOT MET'}")
    print(f"- (issue 24) memory-only single votes ≥ 0.95× the non-durable reference (paired): {m24:.2f}× — "
          f"{'MET' if m24 >= 0.95 else 'NOT MET'}")
if med("redis", "votes_per_s"):
    r1, r2, rm = paired("single", "redis"), best_batch_paired("redis-pipelined"), bpv / redis_bpv if redis_bpv else 0
    print(f"- (issue 6) single votes ≥ 1.0× Redis non-pipelined: {r1:.2f}× — {'MET' if r1 >= 1.0 else 'NOT MET'}")
    print(f"- (issue 6) batch ingestion ≥ 2× Redis pipelined: {r2:.2f}× — {'MET' if r2 >= 2.0 else 'NOT MET'}")
    print(f"- (issue 6) memory per vote ID ≤ 0.4× Redis's: {bpv:.1f} / {redis_bpv:.1f} B = {rm:.2f}× — "
          f"{'MET' if rm and rm <= 0.4 else 'NOT MET'}")

# The chart: throughput and p99 latency per case, as horizontal bars (plain SVG, no libraries).
short = {
    "hello": "hello route (tally load)", "wrk-hello": "hello route (wrk -t1)",
    "reference": "DESIGN.md §7 reference (NOT durable)",
    "reference-durable": "the reference + group-commit fdatasync",
    "single": "Tally single votes, fsync", "batch-binary": "Tally batches ×1000 postcard, fsync",
    "batch-json": "Tally batches ×1000 JSON, fsync", "half-rate": "Tally single votes at half rate, fsync",
    "single-c4x": "Tally single votes, fsync, 4× connections",
    "single-memory": "Tally single votes, memory-only (NOT durable)",
    "redis": "Redis script, non-pipelined (NOT durable)",
    "redis-pipelined": "Redis script, pipelined ×32 (NOT durable)",
    "redis-fsync": "Redis script, appendfsync always",
}
cases = [c for c in names if med(c, "votes_per_s")]
def bars(title, values, unit, y0, colour):
    top = max(values) or 1
    out = [f'<text x="10" y="{y0}" font-size="15" font-weight="bold">{title}</text>']
    for i, (case, v) in enumerate(zip(cases, values)):
        y = y0 + 12 + i * 24
        width = 520 * v / top
        fill = "#c0392b" if case.startswith("redis") else ("#7f8c8d" if case in ("hello", "wrk-hello", "reference", "reference-durable") else colour)
        out.append(f'<text x="450" y="{y + 15}" font-size="12" text-anchor="end">{short[case]}</text>')
        out.append(f'<rect x="460" y="{y}" width="{width:.1f}" height="18" fill="{fill}"/>')
        out.append(f'<text x="{466 + width:.1f}" y="{y + 14}" font-size="12">{v:,.{0 if unit == "votes/s" else 2}f} {unit}</text>')
    return out, y0 + 24 + len(cases) * 24
svg, y = bars(f"Throughput (median of {n} runs, {conns} connections, 127.0.0.1, {cores} cores shared)",
              [med(c, "votes_per_s") for c in cases], "votes/s", 24, "#2980b9")
more, y = bars("p99 latency per request, ms (a batch request carries 1,000 votes; Redis: redis-benchmark's figure)",
               [med(c, "p99_us") / 1000 for c in cases], "ms", y + 20, "#27ae60")
svg += more
svg.append(f'<text x="10" y="{y + 10}" font-size="11" fill="#555">grey: the framework ceiling (hello route) and DESIGN.md §7 reference, without and with durability; '
           f'red: Redis; blue/green: Tally. Made by scripts/bench-node.sh.</text>')
with open(chart, "w") as f:
    f.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="1160" height="{y + 24}" '
            f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>'
            + "".join(svg) + "</svg>\n")
PY
}

# BENCHMARKS.md: the table between the markers (appended with them the first time), the chart
# beside it.
write_benchmarks() {
  mkdir -p benchmarks
  cp "$OUT/chart.svg" benchmarks/node-vs-redis.svg
  python3 - BENCHMARKS.md "$OUT/summary.md" "$OUT" "$RUNS" "$SECONDS_PER_RUN" "$CONNECTIONS" "$MEMORY_VOTES" "$HALF_RATE_RUNS" <<'PY'
import sys
path, summary, out, runs, secs, conns, votes, half_runs = sys.argv[1:9]
begin, end = "<!-- bench-node:begin -->", "<!-- bench-node:end -->"
section = (f"{begin}\n### The latest `scripts/bench-node.sh` run ({out.rsplit('/', 1)[-1]})\n\n"
           f"Command: `BENCH_RUNS={runs} BENCH_HALF_RATE_RUNS={half_runs} BENCH_SECONDS={secs} BENCH_CONNECTIONS={conns} "
           f"BENCH_MEMORY_VOTES={votes} scripts/bench-node.sh` (every command of the run is in "
           f"`{out}/commands.txt`).\n\n![throughput and p99 latency](benchmarks/node-vs-redis.svg)\n\n"
           + open(summary).read().strip() + f"\n{end}")
text = open(path).read()
if begin in text and end in text:
    head, rest = text.split(begin, 1)
    text = head + section + rest.split(end, 1)[1]
else:
    text = text.rstrip() + "\n\n" + section + "\n"
open(path, "w").write(text)
PY
  echo "bench-node: wrote the table into BENCHMARKS.md and the chart to benchmarks/node-vs-redis.svg"
}

# `bench-node.sh --summary target/bench-node/TIME` prints an earlier run's table again;
# `--write target/bench-node/TIME` also puts it into BENCHMARKS.md (for a run whose own
# summary step failed).
if [ "${1:-}" = "--summary" ] || [ "${1:-}" = "--write" ]; then
  OUT=${2:?usage: scripts/bench-node.sh --summary|--write target/bench-node/TIME}
  # shellcheck source=/dev/null
  . "$OUT/settings.env"
  HALF_RATE_RUNS=${HALF_RATE_RUNS:-$RUNS}
  summarize | tee "$OUT/summary.md"
  if [ "$1" = "--write" ]; then write_benchmarks; fi
  exit 0
fi

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
[ -x /usr/bin/time ] || need+=(time)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-benchmark >/dev/null 2>&1 || need+=(redis-tools)
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
cargo build --release --locked -p tally --bin tally -p tally-node --example hello_server \
  --example reference_server
TALLY=target/release/tally
HELLO=target/release/examples/hello_server
REFERENCE=target/release/examples/reference_server

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

# An example server ($1: the hello route, or DESIGN.md §7's reference; $2, if given, the
# reference's log file, which makes it durable) on the hello route's address.
start_example() {
  "$1" "$HELLO_ADDRESS" ${2:+"$2"} >>"$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  wait_listening "$HELLO_ADDRESS"
}
start_hello() { start_example "$HELLO"; }
start_reference() { start_example "$REFERENCE"; }
start_durable_reference() {
  start_example "$REFERENCE" "$(mktemp -d -p "$SCRATCH")/reference.log"
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

# The original design's job in one atomic step: a new vote ID joins the set and counts for its
# option; a seen one changes nothing.
REDIS_LUA="if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then return redis.call('INCR', KEYS[2]) else return 0 end"

# A fresh redis-server on loopback; extra arguments set persistence. Loads the script ($REDIS_SHA).
start_redis() {
  local data
  data=$(mktemp -d -p "$SCRATCH")
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$data" --save '' --appendonly no \
    --protected-mode yes "$@" >>"$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  wait_listening "$REDIS_ADDRESS"
  for _ in $(seq 50); do
    redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break
    sleep 0.1
  done
  REDIS_SHA=$(redis-cli -p "$REDIS_PORT" script load "$REDIS_LUA")
}
start_redis_plain() { start_redis; }
start_redis_fsync() { start_redis --appendonly yes --appendfsync always; }

# redis_run CASE RUN START PIPELINE REQUESTS: redis-benchmark (one thread, like wrk -t1) sends
# the script with a fresh 36-digit vote ID per call (three random 12-digit numbers, the length
# of a UUID; redis-benchmark's -r must stay below 10^12 or it stops randomising). Checks afterwards that the counter equals the set's size (each ID counted once).
redis_run() {
  local name=$1 run=$2 start=$3 pipeline=$4 requests=$5
  "$start"
  local cmd=(redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -c "$CONNECTIONS" -n "$requests"
    -r 100000000000 -P "$pipeline" --csv
    evalsha "$REDIS_SHA" 2 tally:ids tally:green __rand_int____rand_int____rand_int__)
  echo "$name run $run: ${cmd[*]}" >>"$COMMANDS"
  local cpu_before cpu_after busy_before busy_after started ended
  cpu_before=$(server_cpu)
  busy_before=$(machine_busy)
  started=$(date +%s.%N)
  /usr/bin/time -f '%U %S' -o "$OUT/$name-$run.time" "${cmd[@]}" >"$OUT/$name-$run.txt" 2>&1
  ended=$(date +%s.%N)
  busy_after=$(machine_busy)
  cpu_after=$(server_cpu)
  local members counted
  members=$(redis-cli -p "$REDIS_PORT" scard tally:ids)
  counted=$(redis-cli -p "$REDIS_PORT" get tally:green)
  python3 - "$OUT/$name-$run.txt" "$name" "$run" "$cpu_before" "$cpu_after" "$OUT/$name-$run.time" \
    "$busy_before" "$busy_after" "$started" "$ended" "$requests" "$members" "$counted" >>"$RUNS_TSV" <<'PY'
import csv, sys
text, name, run, before, after, timing, busy_before, busy_after, started, ended, requests, members, counted = sys.argv[1:14]
row = [r for r in csv.reader(open(text)) if r and r[0] != "test"][-1]
rps, p50_ms, p99_ms, max_ms = float(row[1]), float(row[4]), float(row[6]), float(row[7])
client = sum(float(x) for x in open(timing).read().split()[-2:])
elapsed = float(ended) - float(started)
server = float(after) - float(before)
other = (float(busy_after) - float(busy_before) - server - client) / elapsed
# Each call carries a new ID (36 random digits): the set must have grown by (almost) every call,
# and the counter must equal the set (each ID counted once).
check = "passed" if members == counted and int(members) >= 0.99 * int(requests) else "FAILED"
print("\t".join(str(x) for x in [name, run, round(rps), round(p50_ms * 1000), round(p99_ms * 1000), 0,
      round(max_ms * 1000), 0, check, round(server, 3), round(client, 3), requests, 0,
      round(max(other, 0), 2)]))
PY
  tail -n 1 "$RUNS_TSV" | awk -F'\t' '{ printf "  %-16s run %s: %9d votes/s  p50 %6.3f ms  p99 %7.3f ms  check %s  other load %.2f cores\n", $1, $2, $3, $4/1000, $5/1000, $9, $14 }'
  stop_server
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
HALF_RATE_RUNS=$HALF_RATE_RUNS
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
  measure_run reference "$run" start_reference "$HELLO_ADDRESS" --check off --options green,blue \
    --duration "${SECONDS_PER_RUN}s"
  measure_run reference-durable "$run" start_durable_reference "$HELLO_ADDRESS" --check off \
    --options green,blue --duration "${SECONDS_PER_RUN}s"
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
  # (f) Redis, non-pipelined and pipelined (no persistence), and durable (supplement).
  redis_run redis "$run" start_redis_plain 1 "$REDIS_REQUESTS"
  redis_run redis-pipelined "$run" start_redis_plain "$REDIS_PIPELINE" "$REDIS_PIPELINED_REQUESTS"
  redis_run redis-fsync "$run" start_redis_fsync 1 "$((REDIS_REQUESTS / 4))"
done

# (d) single votes at half the median maximum rate of (b), open loop.
HALF_RATE=$(awk -v m="$(median single 3)" 'BEGIN { printf "%d", m / 2 }')
echo "HALF_RATE=$HALF_RATE" >>"$OUT/settings.env"
for run in $(seq "$HALF_RATE_RUNS"); do
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

# (f) Redis memory per set member: VmRSS before and after MEMORY_VOTES pipelined script calls.
REDIS_MEMORY_TSV=$OUT/redis-memory.tsv
printf 'run\tmembers\trss_before_kb\trss_after_kb\tbytes_per_member\tused_bytes_per_member\n' >"$REDIS_MEMORY_TSV"
for run in $(seq "$RUNS"); do
  start_redis_plain
  before=$(server_rss_kb)
  used_before=$(redis-cli -p "$REDIS_PORT" info memory | awk -F: '/^used_memory:/ { print $2 + 0 }')
  cmd=(redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -c "$CONNECTIONS" -n "$MEMORY_VOTES"
    -r 100000000000 -P "$REDIS_PIPELINE" -q
    evalsha "$REDIS_SHA" 2 tally:ids tally:green __rand_int____rand_int____rand_int__)
  echo "redis-memory run $run: ${cmd[*]}; VmRSS of redis-server before and after" >>"$COMMANDS"
  "${cmd[@]}" >"$OUT/redis-memory-$run.txt" 2>&1
  after=$(server_rss_kb)
  used_after=$(redis-cli -p "$REDIS_PORT" info memory | awk -F: '/^used_memory:/ { print $2 + 0 }')
  members=$(redis-cli -p "$REDIS_PORT" scard tally:ids)
  awk -v r="$run" -v n="$members" -v b="$before" -v a="$after" -v ub="$used_before" -v ua="$used_after" \
    'BEGIN { printf "%s\t%d\t%d\t%d\t%.1f\t%.1f\n", r, n, b, a, (a - b) * 1024 / n, (ua - ub) / n }' >>"$REDIS_MEMORY_TSV"
  tail -n 1 "$REDIS_MEMORY_TSV" | awk -F'\t' '{ printf "  redis-memory     run %s: VmRSS %d kB -> %d kB for %d members: %.1f bytes/member\n", $1, $3, $4, $2, $5 }'
  stop_server
done

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
echo "LOAD_AFTER='$LOAD_AFTER'" >>"$OUT/settings.env"
summarize | tee "$OUT/summary.md"
echo
echo "bench-node: every run in $RUNS_TSV, commands in $COMMANDS, summary in $OUT/summary.md, chart in $OUT/chart.svg"

if [ "$WRITE" = 1 ]; then
  write_benchmarks
fi
