#!/usr/bin/env bash
# Restart time (issue 3: a node holding 10M votes is ready in under 5 s), with and without the
# poll's `expected_votes` reservation. Loads VOTES votes into one durable node on 127.0.0.1,
# stops it cleanly (SIGTERM: the log is compacted into a snapshot), then restarts it on the
# same data directory RUNS times per config, the two configs alternating, timing each from
# spawn to the first `200` from /readyz, and reading the node's resident memory then.
#
#   scripts/bench-restart.sh                  # VOTES=10000000 RUNS=3
#   TALLY_BIN=/tmp/other/tally scripts/bench-restart.sh   # another build's binary
#
# Writes every run to target/bench-restart/<time>/runs.tsv and prints the medians. Bounded:
# one load of VOTES votes and 2 × RUNS restarts, each given at most 120 s to become ready.
set -euo pipefail
cd "$(dirname "$0")/.."
VOTES="${VOTES:-10000000}"
RUNS="${RUNS:-3}"
PORT="${PORT:-18190}"
if [ -n "${TALLY_BIN:-}" ]; then
  TALLY="$TALLY_BIN"
else
  cargo build --quiet --release --locked -p tally --bin tally
  TALLY=target/release/tally
fi
LOAD=target/release/tally
[ -x "$LOAD" ] || cargo build --quiet --release --locked -p tally --bin tally
for tool in curl python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "bench-restart: please install $tool (Debian package: $tool)" >&2
    exit 1
  fi
done
OUT="target/bench-restart/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

for config in plain reserved; do
  {
    echo 'listen = "127.0.0.1:'"$PORT"'"'
    echo '[[polls]]'
    echo 'id = "superbowl"'
    echo 'options = ["green", "blue"]'
    echo 'open = true'
    [ "$config" = reserved ] && echo "expected_votes = $VOTES"
  } >"$WORK/$config.toml"
done

ready() { curl -fs -o /dev/null "http://127.0.0.1:$PORT/readyz"; }

# start CONFIG: spawns the node; sets pid and started (ns).
start() {
  started=$(date +%s%N)
  RUST_LOG=warn "$TALLY" run --config "$WORK/$1.toml" --data-dir "$WORK/data" \
    >>"$OUT/node-$1.log" 2>&1 &
  pid=$!
}

# wait_ready: waits for /readyz; prints seconds since start.
wait_ready() {
  local deadline=$(( $(date +%s) + 120 ))
  until ready; do
    if ! kill -0 "$pid" 2>/dev/null; then echo "bench-restart: the node exited" >&2; exit 1; fi
    if [ "$(date +%s)" -gt "$deadline" ]; then echo "bench-restart: not ready in 120 s" >&2; exit 1; fi
    sleep 0.01
  done
  awk -v now="$(date +%s%N)" -v started="$started" 'BEGIN { printf "%.3f\n", (now - started) / 1e9 }'
}

stop() {
  kill -TERM "$pid"
  wait "$pid" || true
  pid=""
}

echo "bench-restart: loading $VOTES votes (load average $(cut -d' ' -f1-3 /proc/loadavg))"
start plain
wait_ready >/dev/null
"$LOAD" load --target "http://127.0.0.1:$PORT" --batch-size 1000 --binary --count "$VOTES" \
  --no-progress >"$OUT/load.txt"
stop
du -sh "$WORK/data" | tee "$OUT/data-size.txt"

printf 'round\tconfig\tready_s\trss_kb\n' >"$OUT/runs.tsv"
for round in $(seq 1 "$RUNS"); do
  for config in plain reserved; do
    start "$config"
    seconds=$(wait_ready)
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    held=$(curl -fs "http://127.0.0.1:$PORT/v1/polls/superbowl/results" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')
    if [ "$held" != "$VOTES" ]; then
      echo "bench-restart: the restarted node shows $held votes, not $VOTES" >&2
      exit 1
    fi
    stop
    printf '%s\t%s\t%s\t%s\n' "$round" "$config" "$seconds" "$rss" | tee -a "$OUT/runs.tsv"
  done
done

python3 - "$OUT/runs.tsv" <<'PY' | tee "$OUT/summary.txt"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
by = {}
for r in rows:
    by.setdefault(r["config"], []).append(r)
for config, rs in by.items():
    times = [float(r["ready_s"]) for r in rs]
    rss = statistics.median(int(r["rss_kb"]) for r in rs) / 1024
    print(f"{config}: ready in {statistics.median(times):.3f} s median "
          f"(runs {' / '.join(f'{t:.3f}' for t in times)}), {rss:.0f} MiB resident")
plain = {r["round"]: float(r["ready_s"]) for r in by["plain"]}
ratios = [plain[r["round"]] / float(r["ready_s"]) for r in by["reserved"]]
print(f"plain / reserved, paired per round: median {statistics.median(ratios):.2f}")
PY
echo "bench-restart: every run in $OUT"
