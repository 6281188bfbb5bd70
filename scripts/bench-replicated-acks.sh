#!/usr/bin/env bash
# Replicated acks against local acks (issue 26), on two real release nodes on 127.0.0.1 that
# are each other's peers over QUIC with mutual TLS (certificates from `tally certs`), each on
# its own temporary data directory with fsync durability. The two modes run in the same
# rounds, interleaved, each run on two fresh nodes:
#   local       both nodes `ack_mode = "local"` (the default): a vote is answered after its
#               node's fsync; the peer gets the records by its pull tick (100 ms);
#   replicated  both nodes `ack_mode = "replicated"`, each the other's ack peer: a vote is
#               answered once its node's fsync and the peer's fsync of the pushed records
#               are done.
# `tally load` (one client thread) spreads its connections over both nodes, as a region's
# Service spreads voters over its two pods, and checks at the end that both nodes show every
# vote either acknowledged (`--check cluster`). Cases, per mode:
#   batch       batches of 1,000 votes (postcard), flat out, BENCH_CONNECTIONS connections;
#   single      single votes, flat out, BENCH_CONNECTIONS connections;
#   half-batch  batches at half the median `replicated` batch rate (open loop: latency from
#               each request's intended send time), both modes at that same rate;
#   half-single single votes at half the median `replicated` single-vote rate, likewise.
# Reported: medians over runs, and per round the ratio replicated / local, whose median is
# the same-run ratio; for `replicated`, the nodes' own ack-peer wait (local fsync to the peer's
# confirmation, mean from tally_ack_peer_wait_seconds) and votes no ack peer confirmed.
# Beside the acknowledged rate (votes answered ÷ the client's run), "votes/s until converged":
# the same votes ÷ the time from the run's start (the client's first request, its report's
# `started_unix_s`) until both nodes first showed the totals its check settled on (every
# acknowledged vote on both nodes), read every 20 ms from the side while the client runs and
# checks (totals-<case>-<mode>-<run>.tsv; late by up to a results tick, 100 ms, in both
# modes). Under `local` acks a node merges its peer's records by pull, which may finish after
# the run; under `replicated` the peer merges them before it confirms. The issue's target
# stays the acknowledged rate's ratio; the converged one is reported beside it.
# Client and both nodes share this machine's cores (`nproc`): every figure is for the three
# together.
#
# An A/B of two builds: BENCH_BASELINE=/path/to/another/tally (e.g. main's release binary,
# copied out of its target/) runs that build's nodes too, in the same rounds (modes
# `base-local` and `base-replicated`, right after this build's two), with this build's client;
# the summary then gives each build's same-run ratios side by side.
# Per run it also reads both nodes' CPU time (user + system, /proc/PID/stat) over the load, and
# the host's idle share (/proc/stat): node CPU per vote tells work from waiting; and how long
# the nodes' threads waited runnable for a core (/proc/PID/task/*/schedstat), in ms per second
# of the run: every wake-up's scheduling delay counts, so compare runs of one case.
#
# Diagnostic settings (off by default): BENCH_MODES (a subset of the modes, e.g. "local"),
# BENCH_EXPECTED_VOTES (the poll's index reserved for that many vote IDs, as OPERATIONS.md's
# "Before an event" asks), BENCH_SYNC_TICK_MS (the nodes' sync_tick_ms), BENCH_PERF_SECONDS (`perf record -g -F 999` of both
# nodes for that long, from 1 s into each run: perf-<case>-<mode>-<run>.data). Each run's /metrics
# of both nodes is kept beside its report (metrics-<case>-<mode>-<run>-{a,b}.prom).
# Settings (environment): BENCH_RUNS (3), BENCH_SECONDS (8), BENCH_CONNECTIONS (64),
# BENCH_PORT_BASE (18200: HTTP on +1 and +2, QUIC on +11 and +12), BENCH_CASES (all four:
# "batch single half-batch half-single"; a half-rate case whose flat-out case is left out
# runs at BENCH_HALF_BATCH_RATE or BENCH_HALF_SINGLE_RATE votes/s), BENCH_BASELINE (none). Writes every run and the
# exact commands under target/bench-replicated-acks/<time>/ and prints a table (also in
# summary.md there). Only 127.0.0.1 is contacted; every run is bounded in time (a node that is
# not ready in 120 s ends the script).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/local-server.sh
. scripts/lib/local-server.sh

RUNS=${BENCH_RUNS:-3}
SECONDS_PER_RUN=${BENCH_SECONDS:-8}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
BASE=${BENCH_PORT_BASE:-18200}
BATCH=1000
HTTP_A=127.0.0.1:$((BASE + 1))
HTTP_B=127.0.0.1:$((BASE + 2))
PEER_A=127.0.0.1:$((BASE + 11))
PEER_B=127.0.0.1:$((BASE + 12))

command -v curl >/dev/null 2>&1 || { echo "bench-replicated-acks: please install curl" >&2; exit 1; }
echo "bench-replicated-acks: building release"
cargo build --release --locked -q -p tally --bin tally
TALLY=target/release/tally
CLIENT=$TALLY
BASELINE=${BENCH_BASELINE:-}
CASES=${BENCH_CASES:-batch single half-batch half-single}
MODES=${BENCH_MODES:-local replicated}
EXPECTED_VOTES=${BENCH_EXPECTED_VOTES:-}
SYNC_TICK_MS=${BENCH_SYNC_TICK_MS:-}
PERF_SECONDS=${BENCH_PERF_SECONDS:-}
if [ -n "$BASELINE" ]; then
  [ -x "$BASELINE" ] || { echo "bench-replicated-acks: BENCH_BASELINE $BASELINE is not executable" >&2; exit 1; }
  MODES=${BENCH_MODES:-local replicated base-local base-replicated}
fi

OUT=target/bench-replicated-acks/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
SCRATCH=$(mktemp -d)
RUNS_TSV=$OUT/runs.tsv
COMMANDS=$OUT/commands.txt
: >"$COMMANDS"
printf 'case\tmode\trun\tvotes_per_s\tp50_us\tp99_us\tmax_us\tcounted\trefused\tunknown\tcheck\tack_wait_mean_us\tack_misses\tfsync_mean_us\tnode_cpu_us_per_vote\thost_idle_pct\tpushes_journal\tpushes_log\tnode_runq_ms_per_s\tconverged_votes_per_s\tconverged_s\telapsed_s\tudp_rcvbuf_drops\n' >"$RUNS_TSV"
"$CLIENT" certs --out "$SCRATCH/certs" --nodes a,b >/dev/null

PID_A=""
PID_B=""
stop_nodes() {
  local pid
  for pid in $PID_A $PID_B; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PID_A=""
  PID_B=""
}
cleanup() {
  stop_nodes
  rm -rf "$SCRATCH"
}
trap cleanup EXIT

# config NODE HTTP PEER_LISTEN OTHER OTHER_PEER MODE DIR: node NODE's tally.toml in DIR.
config() {
  local node=$1 http=$2 peer=$3 other=$4 other_peer=$5 mode=$6 dir=$7
  {
    echo "node_id = \"$node\""
    echo "listen = \"$http\""
    echo "peer_listen = \"$peer\""
    echo "data_dir = \"$dir/data\""
    echo "ack_mode = \"$mode\""
    if [ "$mode" = replicated ]; then echo 'ack_peers = ["a", "b"]'; fi
    if [ -n "$SYNC_TICK_MS" ]; then echo "sync_tick_ms = $SYNC_TICK_MS"; fi
    echo '[tls]'
    echo "ca = \"$SCRATCH/certs/ca.pem\""
    echo "cert = \"$SCRATCH/certs/$node.pem\""
    echo "key = \"$SCRATCH/certs/$node-key.pem\""
    echo '[[peers]]'
    echo "id = \"$other\""
    echo "address = \"$other_peer\""
    if [ -n "$EXPECTED_VOTES" ]; then
      echo '[[polls]]'
      echo 'id = "superbowl"'
      echo 'options = ["green", "blue"]'
      echo "expected_votes = $EXPECTED_VOTES"
    fi
  } >"$dir/tally.toml"
}

# start_nodes MODE: two fresh peered nodes in MODE, ready (caught up, clock checked, and
# under replicated acks their ack peer connected), warmed up with 5,000 votes.
start_nodes() {
  local mode=${1#base-} node_bin=$TALLY dir_a dir_b
  [ "$1" = "$mode" ] || node_bin=$BASELINE
  dir_a=$(mktemp -d -p "$SCRATCH")
  dir_b=$(mktemp -d -p "$SCRATCH")
  config a "$HTTP_A" "$PEER_A" b "$PEER_B" "$mode" "$dir_a"
  config b "$HTTP_B" "$PEER_B" a "$PEER_A" "$mode" "$dir_b"
  require_free_port bench-replicated-acks "$HTTP_A"
  require_free_port bench-replicated-acks "$HTTP_B"
  RUST_LOG=warn "$node_bin" run --config "$dir_a/tally.toml" >>"$OUT/node-a.log" 2>&1 &
  PID_A=$!
  RUST_LOG=warn "$node_bin" run --config "$dir_b/tally.toml" >>"$OUT/node-b.log" 2>&1 &
  PID_B=$!
  wait_ready "$PID_A" "${HTTP_A##*:}"
  wait_ready "$PID_B" "${HTTP_B##*:}"
  "$CLIENT" load --target "http://$HTTP_A" --target "http://$HTTP_B" --no-progress --check off \
    --options green,blue --count 5000 >/dev/null
}

# "CPU_TICKS IDLE_TICKS TOTAL_TICKS RUNQ_NS": both nodes' CPU time so far, and the host's idle
# and total time (/proc/stat), in clock ticks; both nodes' threads' run-queue wait, in ns.
cpu_sample() {
  local nodes runq
  nodes=$(($(cpu_ticks "$PID_A") + $(cpu_ticks "$PID_B")))
  runq=$(($(run_queue_ns "$PID_A") + $(run_queue_ns "$PID_B")))
  awk -v nodes="$nodes" -v runq="$runq" '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print nodes, $5 + $6, t, runq; exit }' /proc/stat
}

# run_queue_ns PID: the time the process's threads have spent runnable but waiting for a core
# (the second field of /proc/PID/task/*/schedstat), summed, in ns: threads that ended are not
# in it, so a run's difference is a lower bound.
run_queue_ns() {
  cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ t += $2 } END { printf "%d", t }'
}

# "WAIT_SECONDS WAITS MISSES FSYNC_SECONDS FSYNCS JOURNAL LOG" over both nodes, from their
# /metrics: the ack-peer wait histogram's sum and count, the votes no ack peer confirmed, the
# log's fsyncs, and the peers' pushes answered from the push journal and after the main log
# (both 0 for a build without the journal).
ack_totals() {
  python3 - "http://$HTTP_A/metrics" "http://$HTTP_B/metrics" <<'PY'
import sys, urllib.request
names = ["tally_ack_peer_wait_seconds_sum", "tally_ack_peer_wait_seconds_count",
         "tally_ack_peer_misses_total{", "tally_wal_fsync_duration_seconds_sum",
         "tally_wal_fsync_duration_seconds_count",
         'tally_ack_pushes_answered_total{lane="journal"}',
         'tally_ack_pushes_answered_total{lane="log"}']
totals = [0.0] * len(names)
for url in sys.argv[1:]:
    for line in urllib.request.urlopen(url, timeout=10).read().decode().splitlines():
        for i, name in enumerate(names):
            if line.startswith(name if name.endswith("{") else name + " "):
                totals[i] += float(line.split()[-1])
print(" ".join(str(t) for t in totals))
PY
}

# udp_rcvbuf_drops: datagrams the host's UDP sockets dropped for a full receive buffer so far
# (RcvbufErrors of /proc/net/snmp; host-wide: the peers' QUIC is the only UDP of a run).
udp_rcvbuf_drops() {
  awk '/^Udp:/ { if (!n) { for (i = 1; i <= NF; i++) if ($i == "RcvbufErrors") c = i; n = 1 } else print $c }' /proc/net/snmp
}

# poll_totals FILE: both nodes' poll totals every 20 ms, a line "UNIX_TIME TOTAL_A TOTAL_B"
# each, until killed (at most the run's length plus 120 s). A node publishes its totals every
# results tick (100 ms), so a time read here is late by up to the tick plus 20 ms.
poll_totals() {
  exec python3 - "$1" "http://$HTTP_A/v1/polls/superbowl/results" "http://$HTTP_B/v1/polls/superbowl/results" \
    "$((SECONDS_PER_RUN + 120))" <<'PY'
import json, sys, time, urllib.request
path, url_a, url_b, limit = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
def total(url):
    try:
        return json.load(urllib.request.urlopen(url, timeout=2))["total"]
    except Exception:
        return -1
end = time.time() + limit
with open(path, "w", buffering=1) as out:
    while time.time() < end:
        a = total(url_a)
        b = total(url_b)
        out.write(f"{time.time():.6f} {a} {b}\n")
        time.sleep(0.02)
PY
}

# run_case CASE MODE RUN LOAD_ARGS...: one run on two fresh nodes; appends a row to runs.tsv.
run_case() {
  local name=$1 mode=$2 run=$3
  shift 3
  start_nodes "$mode"
  local before after report=$OUT/$name-$mode-$run.json
  before=$(ack_totals)
  local cpu_before cpu_after drops_before drops_after
  cpu_before=$(cpu_sample)
  drops_before=$(udp_rcvbuf_drops)
  local cmd=("$CLIENT" load --target "http://$HTTP_A" --target "http://$HTTP_B"
    --connections "$CONNECTIONS" --no-progress --threads 1 --check cluster
    --options green,blue --duration "${SECONDS_PER_RUN}s" --timeout-ms 5000 --json-report "$report" "$@")
  echo "$name $mode run $run: ${cmd[*]}" >>"$COMMANDS"
  local perf_pid=""
  if [ -n "$PERF_SECONDS" ]; then
    # A profile of both nodes (call graphs) from 1 s into the load, for PERF_SECONDS.
    (sleep 1; exec perf record -q -g -F 999 -p "$PID_A,$PID_B" -o "$OUT/perf-$name-$mode-$run.data" \
      -- sleep "$PERF_SECONDS") >/dev/null 2>&1 &
    perf_pid=$!
  fi
  # Both nodes' totals, read every 20 ms from before the client starts until it has ended
  # (its check waits for convergence): when both first showed their final totals.
  local totals=$OUT/totals-$name-$mode-$run.tsv
  poll_totals "$totals" &
  local poll_pid=$!
  local launched
  launched=$(date +%s.%N)
  "${cmd[@]}" >"$OUT/$name-$mode-$run.txt" 2>&1 || true
  kill "$poll_pid" 2>/dev/null || true
  wait "$poll_pid" 2>/dev/null || true
  if [ -n "$perf_pid" ]; then wait "$perf_pid" || true; fi
  cpu_after=$(cpu_sample)
  drops_after=$(udp_rcvbuf_drops)
  after=$(ack_totals)
  # Both nodes' whole /metrics after the run (histograms of engine wake-ups, fsyncs, group
  # sizes, ack-peer waits: where a tail comes from).
  curl -s "http://$HTTP_A/metrics" >"$OUT/metrics-$name-$mode-$run-a.prom" || true
  curl -s "http://$HTTP_B/metrics" >"$OUT/metrics-$name-$mode-$run-b.prom" || true
  python3 - "$report" "$name" "$mode" "$run" "$before" "$after" "$cpu_before" "$cpu_after" "$(getconf CLK_TCK)" "$(nproc)" "$totals" "$launched" "$((drops_after - drops_before))" >>"$RUNS_TSV" <<'PY'
import json, sys
path, name, mode, run, before, after, cpu_before, cpu_after, tck, ncores, totals, launched, drops = sys.argv[1:14]
ncores = float(ncores)
cb, ca = [float(x) for x in cpu_before.split()], [float(x) for x in cpu_after.split()]
r = json.load(open(path))
b, a = [float(x) for x in before.split()], [float(x) for x in after.split()]
waits = a[1] - b[1]
mean_us = (a[0] - b[0]) / waits * 1e6 if waits else 0
fsyncs = a[4] - b[4]
fsync_us = (a[3] - b[3]) / fsyncs * 1e6 if fsyncs else 0
o = r["outcomes"]
check = {True: "passed", False: "FAILED", None: "none"}[r.get("check_passed")]
# Converged: the first read at which both nodes showed the totals the client's check settled
# on (every acknowledged vote on both), from the run's start (the client's first request;
# its launch for a client without `started_unix_s`, which counts its set-up too); 0 if never seen.
finals = [c["total_after"] for c in r.get("checks", [])]
start = r.get("started_unix_s") or float(launched)
converged_s = 0.0
if r.get("check_passed") and len(finals) == 2:
    for line in open(totals):
        t, ta, tb = line.split()
        if [int(ta), int(tb)] == finals:
            converged_s = float(t) - start
            break
votes = r["votes_sent"]
print("\t".join(str(x) for x in [name, mode, run, round(r["votes_per_s"]), r["latency"]["p50_us"],
      r["latency"]["p99_us"], r["latency"]["max_us"], o["counted"], o["refused"], o["unknown"],
      check, round(mean_us), round(a[2] - b[2]), round(fsync_us),
      round((ca[0] - cb[0]) / float(tck) * 1e6 / o["counted"], 3) if o["counted"] else 0,
      round(100 * (ca[1] - cb[1]) / (ca[2] - cb[2]), 1) if ca[2] > cb[2] else 0,
      round(a[5] - b[5]), round(a[6] - b[6]),
      round((ca[3] - cb[3]) / 1e6 / ((ca[2] - cb[2]) / float(tck) / ncores), 1) if ca[2] > cb[2] else 0,
      round(votes / converged_s) if converged_s > 0 else 0, round(converged_s, 3),
      round(r["elapsed_s"], 3), drops]))
PY
  tail -n 1 "$RUNS_TSV" | awk -F'\t' '{ printf "  %-11s %-15s run %s: %9d votes/s  p50 %7.3f ms  p99 %7.3f ms  refused %s unknown %s  check %s  ack wait %s µs  fsync %s µs  node CPU %s µs/vote  host idle %s%%  nodes waiting for a core %s ms/s  pushes answered journal/log %s/%s  until converged %d votes/s (%s s, run %s s)  UDP receive-buffer drops %s\n", $1, $2, $3, $4, $5/1000, $6/1000, $9, $10, $11, $12, $14, $15, $16, $19, $17, $18, $20, $21, $22, $23 }'
  stop_nodes
}

# Median of column $3 (1-based) of rows of case $1 in mode $2.
median() {
  awk -F'\t' -v name="$1" -v mode="$2" -v col="$3" '$1 == name && $2 == mode { print $col }' "$RUNS_TSV" |
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

{
  echo "# Node configs: two nodes a, b on $HTTP_A / $HTTP_B (QUIC $PEER_A / $PEER_B), mutual TLS"
  echo "# from \`tally certs --nodes a,b\`; ack_mode = \"local\", or \"replicated\" with"
  echo "# ack_peers = [\"a\", \"b\"] (each skips itself); everything else default (fsync durability)."
} >>"$COMMANDS"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
echo "bench-replicated-acks: $(nproc) cores shared by the client and two nodes; load average $LOAD_BEFORE"
echo "bench-replicated-acks: data directories on $(df -T "$SCRATCH" | awk 'NR == 2 { print $2 " (" $1 ")" }')"
echo "bench-replicated-acks: $RUNS runs of ${SECONDS_PER_RUN} s per case and mode, $CONNECTIONS connections; output in $OUT"

wanted() {
  case " $CASES " in *" $1 "*) return 0 ;; *) return 1 ;; esac
}
for run in $(seq "$RUNS"); do
  for mode in $MODES; do
    if wanted batch; then run_case batch "$mode" "$run" --batch-size "$BATCH" --binary; fi
    if wanted single; then run_case single "$mode" "$run"; fi
  done
done
HALF_BATCH=${BENCH_HALF_BATCH_RATE:-600000}
HALF_SINGLE=${BENCH_HALF_SINGLE_RATE:-12000}
if wanted batch; then HALF_BATCH=$(awk -v m="$(median batch replicated 4)" 'BEGIN { printf "%d", m / 2 }'); fi
if wanted single; then HALF_SINGLE=$(awk -v m="$(median single replicated 4)" 'BEGIN { printf "%d", m / 2 }'); fi
echo "bench-replicated-acks: half rates: batches $HALF_BATCH votes/s, single votes $HALF_SINGLE votes/s"
for run in $(seq "$RUNS"); do
  for mode in $MODES; do
    if wanted half-batch; then run_case half-batch "$mode" "$run" --batch-size "$BATCH" --binary --rate "$HALF_BATCH"; fi
    if wanted half-single; then run_case half-single "$mode" "$run" --rate "$HALF_SINGLE"; fi
  done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$RUNS_TSV" "$RUNS" "$SECONDS_PER_RUN" "$CONNECTIONS" "$(nproc)" "$LOAD_BEFORE" "$LOAD_AFTER" \
  "$HALF_BATCH" "$HALF_SINGLE" "$MODES" "$BASELINE" <<'PY' | tee "$OUT/summary.md"
import csv, statistics, sys
path, runs, secs, conns, cores, load_before, load_after, half_batch, half_single, modes, baseline = sys.argv[1:12]
modes = modes.split()
rows = list(csv.DictReader(open(path), delimiter="\t"))
def med(case, mode, col):
    vals = [float(r[col]) for r in rows if r["case"] == case and r["mode"] == mode]
    return statistics.median(vals) if vals else 0.0
def spread(case, mode):
    return " / ".join(f"{int(r['votes_per_s']):,}" for r in rows if r["case"] == case and r["mode"] == mode)
def paired(case, col, prefix=""):
    local = {r["run"]: float(r[col]) for r in rows if r["case"] == case and r["mode"] == prefix + "local"}
    ratios = [float(r[col]) / local[r["run"]] for r in rows
              if r["case"] == case and r["mode"] == prefix + "replicated" and local.get(r["run"])]
    return statistics.median(ratios) if ratios else 0.0
def ratios(case, col, prefix=""):
    local = {r["run"]: float(r[col]) for r in rows if r["case"] == case and r["mode"] == prefix + "local"}
    return " / ".join(f"{float(r[col]) / local[r['run']]:.2f}" for r in rows
                      if r["case"] == case and r["mode"] == prefix + "replicated" and local.get(r["run"]))
print(f"Replicated against local acks: medians of {runs} runs of {secs} s, {conns} connections spread "
      f"over two peered nodes on 127.0.0.1 (mutual TLS, fsync durability), client and both nodes on "
      f"{cores} shared cores (load average {load_before} before, {load_after} after)."
      + (f" Modes base-*: the baseline build {baseline}." if baseline else "") + "\n")
print("| case | mode | votes/s (median) | runs (votes/s) | votes/s until converged (median) | p50 ms | p99 ms | max ms | refused | unknown | check | ack-peer wait, mean µs | fsync, mean µs | node CPU µs/vote | host idle % | nodes waiting for a core, ms/s | UDP receive-buffer drops (median) |")
print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
labels = {"batch": "batches ×1000 postcard, flat out", "single": "single votes, flat out",
          "half-batch": f"batches ×1000 at {int(half_batch):,} votes/s (open loop)",
          "half-single": f"single votes at {int(half_single):,} votes/s (open loop)"}
cases = [c for c in labels if any(r["case"] == c for r in rows)]
for case in cases:
    for mode in modes:
        mine = [r for r in rows if r["case"] == case and r["mode"] == mode]
        checks = "/".join(sorted({r["check"] for r in mine}))
        wait = f"{med(case, mode, 'ack_wait_mean_us'):,.0f}" if mode.endswith("replicated") else "–"
        print(f"| {labels[case]} | {mode} | {med(case, mode, 'votes_per_s'):,.0f} | {spread(case, mode)} | "
              f"{med(case, mode, 'converged_votes_per_s'):,.0f} | "
              f"{med(case, mode, 'p50_us') / 1000:.3f} | {med(case, mode, 'p99_us') / 1000:.3f} | "
              f"{med(case, mode, 'max_us') / 1000:.1f} | {sum(int(r['refused']) for r in mine)} | "
              f"{sum(int(r['unknown']) for r in mine)} | {checks} | {wait} | "
              f"{med(case, mode, 'fsync_mean_us'):,.0f} | {med(case, mode, 'node_cpu_us_per_vote'):.2f} | "
              f"{med(case, mode, 'host_idle_pct'):.1f} | {med(case, mode, 'node_runq_ms_per_s'):.0f} | "
              f"{med(case, mode, 'udp_rcvbuf_drops'):.0f} |")
misses = sum(int(r["ack_misses"]) for r in rows)
builds = [("", "this build")] + ([("base-", "baseline")] if baseline else [])
print("\nSame-run ratios replicated / local (median over rounds of the ratio within a round; each "
      "round's ratio in brackets):")
for prefix, label in builds:
    parts = []
    for case, col in (("batch", "votes_per_s"), ("single", "votes_per_s"),
                      ("half-batch", "p99_us"), ("half-single", "p99_us")):
        if case in cases:
            what = "throughput" if col == "votes_per_s" else "p99"
            parts.append(f"{case} {what} {paired(case, col, prefix):.2f} ({ratios(case, col, prefix)})")
            if col == "votes_per_s":
                parts.append(f"{case} throughput until converged {paired(case, 'converged_votes_per_s', prefix):.2f} "
                             f"({ratios(case, 'converged_votes_per_s', prefix)})")
    print(f"- {label}: " + "; ".join(parts))
print(f"\nVotes no ack peer confirmed, all runs: {misses}.")
print("\nTargets (this build):")
if "batch" in cases:
    batch = paired("batch", "votes_per_s")
    print(f"- batch throughput replicated ≥ 0.8× local: {batch:.2f}× — {'MET' if batch >= 0.8 else 'NOT MET'}"
          f" (until converged, reported beside it: {paired('batch', 'converged_votes_per_s'):.2f}×)")
for case in ("half-batch", "half-single"):
    if case in cases:
        p99 = med(case, "replicated", "p99_us") / 1000
        print(f"- p99 confirmation at half the maximum rate ≤ 10 ms (replicated, {case}): {p99:.3f} ms — "
              f"{'MET' if p99 <= 10 else 'NOT MET'}")
if "single" in cases:
    print(f"- single votes' throughput ratio (reported): {paired('single', 'votes_per_s'):.2f}×")
PY
echo
echo "bench-replicated-acks: every run in $RUNS_TSV, commands in $COMMANDS, summary in $OUT/summary.md"
