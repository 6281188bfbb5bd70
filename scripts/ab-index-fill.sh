#!/usr/bin/env bash
# A/B of the dedupe index's fill, grown against reserved, as the node runs it (huge pages),
# each way in a process of its own, alternating binaries and ways round by round
# (BENCHMARKS.md, "The next table prepared off the engine").
#
#   BINARIES="before=/tmp/ig-fill-base after=/tmp/ig-fill-new" IDS=30000000 ROUNDS=2 \
#     scripts/ab-index-fill.sh
#
# Each binary is a build of `cargo bench -p tally-core --bench index_growth --no-run`
# (target/release/deps/index_growth-*). A name may carry environment for its runs, e.g.
# `after-nohelper=TALLY_GROWTH_HELPER=0:/tmp/ig-fill-new` (one VAR=value before a colon).
# Prints each run's row (the bench's columns: fill wall s, the filling thread's CPU s, the
# other threads' CPU s, longest groups) and writes them to target/ab-index-fill/<time>.tsv.
set -euo pipefail
BINARIES=${BINARIES:?"BINARIES=\"name=path name=path\""}
IDS=${IDS:-30000000}
ROUNDS=${ROUNDS:-2}
OUT_DIR=${OUT_DIR:-target/ab-index-fill}
mkdir -p "$OUT_DIR"
OUT="$OUT_DIR/$(date -u +%Y%m%dT%H%M%SZ).tsv"
printf 'round\tbinary\tway\tload\trow\n' >"$OUT"
for round in $(seq 1 "$ROUNDS"); do
  for way in grown reserved; do
    for entry in $BINARIES; do
      name=${entry%%=*}
      spec=${entry#*=}
      extra=()
      if [[ $spec == *:* ]]; then
        extra=("${spec%%:*}")
        spec=${spec#*:}
      fi
      load=$(cut -d' ' -f1 /proc/loadavg)
      row=$(env "${extra[@]}" GLIBC_TUNABLES=glibc.malloc.hugetlb=1 TALLY_GROWTH_ONLY="$way" \
        TALLY_GROWTH_IDS="$IDS" TALLY_GROWTH_ROUNDS=1 "$spec" | tail -1)
      printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$way" "$load" "$row" | tee -a "$OUT"
    done
  done
done
echo "written: $OUT"
