#!/usr/bin/env bash
# What a damaged log costs at start-up (issue 29). Loads VOTES votes into one durable node on
# 127.0.0.1 and SIGKILLs it (no snapshot: the restart replays one log segment), then restarts
# copies of its data directory RUNS times each, timing spawn → first `200` from /readyz:
#   whole    the log as the node left it;
#   damaged  one byte flipped at 10% of the log, started with --accept-log-damage: the scan
#            for the next valid frame, the copy kept aside, every vote after the damage
#            recorded again by the new incarnation, and the snapshot that retires the file;
#   garbage  random bytes from 10% of the log to its end: a 90% torn tail, scanned byte by
#            byte for a valid frame before it is cut off.
#
#   scripts/bench-damaged-restart.sh              # VOTES=2000000 RUNS=3
#   TALLY_BIN=/tmp/other/tally scripts/bench-damaged-restart.sh
#
# Bounded: one load and 3 × RUNS restarts, each given at most 120 s to become ready.
set -euo pipefail
cd "$(dirname "$0")/.."
VOTES="${VOTES:-2000000}"
RUNS="${RUNS:-3}"
PORT="${PORT:-18195}"
# shellcheck source=scripts/lib/local-server.sh
. scripts/lib/local-server.sh
tally_binary
require_tools curl python3
start_cleanup

"$TALLY" run --listen "127.0.0.1:$PORT" --data-dir "$WORK/whole" >"$WORK/load.log" 2>&1 &
pid=$!
wait_ready "$pid" "$PORT"
"$TALLY" load --target "http://127.0.0.1:$PORT" --count "$VOTES" --batch-size 1000 --binary \
  --connections 4 | grep -E "outcomes"
kill -9 "$pid"; wait "$pid" 2>/dev/null || true; pid=""
segment="wal-00000000000000000001.log"
cp -a "$WORK/whole" "$WORK/damaged"
cp -a "$WORK/whole" "$WORK/garbage"
python3 - "$WORK" "$segment" <<'EOF'
import os, sys
work, segment = sys.argv[1], sys.argv[2]
for variant in ("damaged", "garbage"):
    path = os.path.join(work, variant, segment)
    data = bytearray(open(path, "rb").read())
    at = len(data) // 10
    if variant == "damaged":
        data[at] ^= 0x40
    else:
        data[at:] = os.urandom(len(data) - at)
    open(path, "wb").write(data)
print(f"log {len(data)} bytes; damage at byte {at}")
EOF

for variant in whole damaged garbage; do
  times=()
  for _ in $(seq "$RUNS"); do
    rm -rf "$WORK/run"; cp -a "$WORK/$variant" "$WORK/run"
    flags=()
    [ "$variant" = damaged ] && flags=(--accept-log-damage)
    start=$(date +%s.%N)
    "$TALLY" run --listen "127.0.0.1:$PORT" --data-dir "$WORK/run" "${flags[@]}" \
      >"$WORK/run.log" 2>&1 &
    pid=$!
    wait_ready "$pid" "$PORT"
    end=$(date +%s.%N)
    total=$(curl -s "http://127.0.0.1:$PORT/v1/polls/superbowl/results" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')
    kill -9 "$pid"; wait "$pid" 2>/dev/null || true; pid=""
    times+=("$(python3 -c "print(f'{$end - $start:.3f}')")")
  done
  echo "$variant: ready in ${times[*]} s (total shown $total)"
done
