#!/usr/bin/env bash
# The simulation soak before an event (issue 24): thousands of seeds of the Super Bowl scenario,
# each a deterministic run of the real node code on five simulated regions with its own swarm of
# faults, judged by the checker. A progress bar while it runs (--no-progress when not a
# terminal), every failure listed at the end with the command that replays it, and a summary
# kept under target/soak/<UTC time>/ (the full output and the failing seeds).
#
#   scripts/soak.sh                               # seeds 100000..102000, 5,000 votes each
#   SEEDS=10000 FIRST=0 VOTES=2000 scripts/soak.sh
#   JOBS=1 scripts/soak.sh                        # one seed at a time (default: every core)
#   BUILD=debug scripts/soak.sh                   # the test build (slower per seed, no release build)
#   scripts/soak.sh --force disk-full             # further arguments go to tally-sim
#
# Bounded: SEEDS runs, each a bounded simulation; it stops by itself. Exit status 1 if any seed
# failed. Memory: each running seed holds its five nodes (~100 MB at 5,000 votes).
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS="${SEEDS:-2000}"
FIRST="${FIRST:-100000}"
VOTES="${VOTES:-5000}"
JOBS="${JOBS:-$(nproc)}"
BUILD="${BUILD:-release}"
OUT="target/soak/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"

case "$BUILD" in
  release) cargo build --release --locked -p tally-sim; BIN=target/release/tally-sim ;;
  debug) cargo build --locked -p tally-sim; BIN=target/debug/tally-sim ;;
  *) echo "soak.sh: BUILD is release or debug, not '$BUILD'" >&2; exit 2 ;;
esac

progress=()
[ -t 1 ] || progress=(--no-progress)
echo "soak: seeds $FIRST..$((FIRST + SEEDS)), $VOTES votes each, $JOBS at a time; output in $OUT"
echo "soak: load average before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/summary.txt"
started=$(date +%s)
status=0
# The bar goes to the terminal (stderr); the per-seed lines, the fault table and the failures
# to the log as well.
"$BIN" --first "$FIRST" --seeds "$SEEDS" --votes "$VOTES" --jobs "$JOBS" --keep-going \
  "${progress[@]}" "$@" 2>&1 | tee "$OUT/output.txt" || status=$?
elapsed=$(( $(date +%s) - started ))
passed=$(grep -c ': ok, trace hash' "$OUT/output.txt" || true)
# tally-sim ends a failing range with "N of M seeds run FAILED ...; replay each with:" and a
# seed, its failure and its replay command per failure.
sed -n '/seeds run FAILED/,$p' "$OUT/output.txt" >"$OUT/failures.txt"
failed=$(grep -c '^FAILED seed' "$OUT/output.txt" || true)
{
  echo "soak: $passed passed, $failed failed of $SEEDS seeds in $elapsed s ($BUILD build, $JOBS jobs)"
  echo "soak: load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
  if [ "$failed" -gt 0 ]; then
    cat "$OUT/failures.txt"
  fi
} | tee -a "$OUT/summary.txt"
exit "$status"
