#!/usr/bin/env bash
# Measures the simulation (issue 5): simulated votes per wall-clock second at 1% scale (median
# of SEEDS seeds, each its own process) and the wall time and peak memory of the full
# 30-million-vote Super Bowl scenario for one seed, with its chart. Bounded: SEEDS + 1 runs.
#
#   scripts/bench-sim.sh            # SEEDS=5 FULL_SEED=1
#   SEEDS=3 FULL=0 scripts/bench-sim.sh   # skip the full scenario
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS="${SEEDS:-5}"
FULL="${FULL:-1}"
FULL_SEED="${FULL_SEED:-1}"
OUT="target/bench-sim/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
cargo build --release --locked -p tally-sim >/dev/null
BIN=target/release/tally-sim
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/summary.txt"

for seed in $(seq 1 "$SEEDS"); do
  /usr/bin/time -f "%e %M" -o "$OUT/time-$seed.txt" "$BIN" --seed "$seed" --scale 0.01 \
    >"$OUT/seed-$seed.txt" 2>&1
done
python3 - "$OUT" "$SEEDS" <<'PY' | tee -a "$OUT/summary.txt"
import re, statistics, sys
out, seeds = sys.argv[1], int(sys.argv[2])
rows = []
for s in range(1, seeds + 1):
    text = open(f"{out}/seed-{s}.txt").read()
    wall, rss = open(f"{out}/time-{s}.txt").read().split()
    sim = float(re.search(r"simulated ([0-9.]+) s in", text).group(1))
    votes = int(re.search(r"([0-9]+) invoked", text).group(1))
    rows.append((float(wall), sim, votes, int(rss)))
wall = statistics.median(r[0] for r in rows)
print(f"1% scale, {seeds} seeds: median wall {wall:.2f} s per seed, "
      f"median {statistics.median(r[2] / r[0] for r in rows):,.0f} simulated votes per wall s, "
      f"median simulated/wall time {statistics.median(r[1] / r[0] for r in rows):.1f}x, "
      f"median peak RSS {statistics.median(r[3] for r in rows) / 1024:.0f} MiB")
PY

if [ "$FULL" = 1 ]; then
  /usr/bin/time -f "%e %M" -o "$OUT/time-full.txt" "$BIN" --seed "$FULL_SEED" --scale 1 \
    --chart "$OUT/superbowl-seed$FULL_SEED.svg" >"$OUT/full.txt" 2>&1
  read -r wall rss <"$OUT/time-full.txt"
  grep -E "checks passed|simulated|trace hash" "$OUT/full.txt" | tee -a "$OUT/summary.txt"
  python3 -c "import sys; w=float(sys.argv[1]); print(f'full scenario (30,000,000 votes, seed $FULL_SEED): wall {w:.1f} s = {w/60:.2f}x the 60 s target, peak RSS {int(sys.argv[2])/1048576:.1f} GiB')" \
    "$wall" "$rss" | tee -a "$OUT/summary.txt"
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/summary.txt"
echo "results in $OUT"
