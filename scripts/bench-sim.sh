#!/usr/bin/env bash
# Measures the simulation (issue 5): simulated votes per wall-clock second at 1% scale (median
# of SEEDS seeds, each its own process) and the wall time and peak memory of the full
# 30-million-vote Super Bowl scenario for one seed (FULL_RUNS runs, median), with its chart.
# Before the full runs it times the first touch of 1 GiB of fresh memory (a python mmap), the
# host's rate of backing new pages: a full run touches ~9 GiB, and that rate moves by hours.
# Bounded: SEEDS + FULL_RUNS runs.
#
#   scripts/bench-sim.sh            # SEEDS=5 FULL_SEED=1 FULL_RUNS=3
#   SEEDS=3 FULL=0 scripts/bench-sim.sh   # skip the full scenario
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS="${SEEDS:-5}"
FULL="${FULL:-1}"
FULL_SEED="${FULL_SEED:-1}"
FULL_RUNS="${FULL_RUNS:-3}"
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
  python3 - <<'PY' | tee -a "$OUT/summary.txt"
import mmap, time
size = 1 << 30
memory = mmap.mmap(-1, size)
started = time.perf_counter()
for offset in range(0, size, 4096):
    memory[offset] = 1
elapsed = time.perf_counter() - started
print(f"first touch of 1 GiB of fresh memory: {elapsed:.2f} s ({size / elapsed / 1e9:.2f} GB/s)")
PY
  for run in $(seq 1 "$FULL_RUNS"); do
    chart=()
    [ "$run" = 1 ] && chart=(--chart "$OUT/superbowl-seed$FULL_SEED.svg")
    /usr/bin/time -f "%e %M" -o "$OUT/time-full-$run.txt" "$BIN" --seed "$FULL_SEED" --scale 1 \
      --no-progress "${chart[@]}" >"$OUT/full-$run.txt" 2>&1
    read -r wall rss <"$OUT/time-full-$run.txt"
    echo "full run $run: wall $wall s, peak RSS $((rss / 1024)) MiB"
    grep -E "simulated .* wall|trace hash" "$OUT/full-$run.txt" | sed 's/^/  /'
  done | tee -a "$OUT/summary.txt"
  grep -E "checks passed" "$OUT/full-1.txt" | tee -a "$OUT/summary.txt"
  python3 - "$OUT" "$FULL_RUNS" "$FULL_SEED" <<'PY' | tee -a "$OUT/summary.txt"
import re, statistics, sys
out, runs, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3]
walls, rss, hashes, bursts, afters = [], [], set(), [], []
for run in range(1, runs + 1):
    wall, peak = open(f"{out}/time-full-{run}.txt").read().split()
    walls.append(float(wall)); rss.append(int(peak))
    text = open(f"{out}/full-{run}.txt").read()
    hashes.add(re.search(r"trace hash ([0-9a-f]+)", text).group(1))
    split = re.search(r"after ([0-9.]+) s wall, converged and checked in the ([0-9.]+) s wall", text)
    bursts.append(float(split.group(1))); afters.append(float(split.group(2)))
wall = statistics.median(walls)
print(f"full scenario (30,000,000 votes, seed {seed}), {runs} runs: median wall {wall:.1f} s = "
      f"{wall / 60:.2f}x the 60 s target (runs {' / '.join(f'{w:.1f}' for w in walls)} s; "
      f"burst median {statistics.median(bursts):.1f} s, after healing {statistics.median(afters):.1f} s), "
      f"peak RSS {statistics.median(rss) / 1048576:.1f} GiB, trace hash "
      f"{' '.join(sorted(hashes))}{'' if len(hashes) == 1 else ' (DIFFERENT: not deterministic)'}")
PY
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/summary.txt"
echo "results in $OUT"
