#!/usr/bin/env bash
# A/B of two builds of tally-core's replica bench, with and without huge pages. Copy the
# criterion binaries (target/release/deps/replica-*) to /tmp/replica-before and
# /tmp/replica-after first. Alternates before (huge pages), after (huge pages) and after
# (4 KiB pages) for ROUNDS (3) rounds, so that the host's drift hits every variant alike, and
# prints each bench's runs and median. FILTER picks the benches (criterion regex).
set -euo pipefail
ROUNDS="${ROUNDS:-3}"
FILTER="${FILTER:-(accept_local(_batch)?|apply_records)/new_ids}"
OUT="$(mktemp)"
for round in $(seq "$ROUNDS"); do
  for variant in before:on after:on after:off; do
    bin=${variant%:*} pages=${variant#*:}
    tunables=""
    [ "$pages" = on ] && tunables=glibc.malloc.hugetlb=1
    GLIBC_TUNABLES=$tunables "/tmp/replica-$bin" --bench "$FILTER" --warm-up-time 1 \
      --measurement-time 3 --noplot 2>&1 | awk -v tag="$bin huge_pages=$pages" '
      /^[a-z_]+\/[a-z_]+\/[0-9A-Za-z_]+/ {name=$1}
      /thrpt: +\[/ && name != "" {
        for (i = 1; i <= NF; i++) if ($i ~ /^\[/) { print tag, name, $(i+2), $(i+3); name=""; break }
      }' | tee -a "$OUT"
  done
done
python3 - "$OUT" <<'PY'
import collections, re, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    bin_, pages, name, value, unit = line.split()
    scale = {"Gelem/s": 1e3, "Melem/s": 1, "Kelem/s": 1e-3}[unit]
    runs[(name, bin_, pages)].append(float(value) * scale)
print("\nbench | build | pages | runs (M/s) | median")
for key in sorted(runs):
    values = runs[key]
    print(" | ".join(key), "|", ", ".join(f"{v:.2f}" for v in values), f"| {statistics.median(values):.2f}")
PY
rm -f "$OUT"
