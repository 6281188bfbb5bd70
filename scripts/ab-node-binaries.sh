#!/usr/bin/env bash
# A/B of two `tally` builds: copy them to /tmp/tally-before and /tmp/tally-after (or name them
# with AB_BEFORE and AB_AFTER); each round runs both, memory-only and with fsync, against the
# same client (the before build's `tally load`), 64 connections, AB_SECONDS (8) s each, and
# prints votes/s, node CPU µs per vote and p99 (with fsync, also the log's fsyncs per second,
# mean fsync time and votes per fsync, from the node's /metrics), then the medians and the
# median of the after/before ratios within a round. The order of the two builds alternates from round to
# round, so neither always runs first.
# Settings (environment): AB_ROUNDS (3); AB_SECONDS (8); AB_CLIENT_THREADS (tally load's default;
# 1 is what scripts/bench-node.sh uses); AB_LOAD_ARGS, extra `tally load` arguments (for example
# "--batch-size 1000 --binary"); AB_MODES ("memory fsync"); AB_PORT (18191).
# Only 127.0.0.1:AB_PORT is contacted; every run is bounded in time.
set -u
BEFORE=${AB_BEFORE:-/tmp/tally-before}
AFTER=${AB_AFTER:-/tmp/tally-after}
CLIENT=$BEFORE
ADDRESS=127.0.0.1:${AB_PORT:-18191}
ROUNDS=${AB_ROUNDS:-3}
# shellcheck source=scripts/lib/local-server.sh
. "$(dirname "$0")/lib/local-server.sh"
threads=()
[ -n "${AB_CLIENT_THREADS:-}" ] && threads=(--threads "$AB_CLIENT_THREADS")
read -r -a extra <<<"${AB_LOAD_ARGS:-}"
results=$(mktemp)
for round in $(seq "$ROUNDS"); do
  order="before after"
  [ $((round % 2)) = 0 ] && order="after before"
  for bin in $order; do
    if [ $bin = before ]; then server=$BEFORE; else server=$AFTER; fi
    for mode in ${AB_MODES:-memory fsync}; do
      d=$(mktemp -d)
      if [ $mode = memory ]; then args=(--memory-only); else args=(--data-dir $d/data); fi
      require_free_port ab-node-binaries $ADDRESS
      RUST_LOG=warn $server run --listen $ADDRESS "${args[@]}" >/dev/null 2>&1 &
      pid=$!
      wait_for_server ab-node-binaries $pid $ADDRESS
      warm_up $CLIENT $ADDRESS
      f0=$(fsync_totals $ADDRESS)
      c0=$(cpu_ticks $pid)
      $CLIENT load --target http://$ADDRESS --no-progress --check off --options green,blue \
        "${threads[@]}" "${extra[@]}" --duration ${AB_SECONDS:-8}s --json-report $d/r.json >/dev/null 2>&1
      c1=$(cpu_ticks $pid)
      f1=$(fsync_totals $ADDRESS)
      python3 -c "import json;r=json.load(open('$d/r.json'));n0,s0='$f0'.split();n1,s1='$f1'.split();n=int(n1)-int(n0);fs=' fsyncs/s=%d fsync=%.2fms votes/fsync=%.1f' % (n/r['elapsed_s'], (float(s1)-float(s0))*1e3/n, r['votes_sent']/n) if n else '';print('$round $bin $mode', round(r['votes_per_s']), 'us/vote=%.2f' % (($c1-$c0)/$(getconf CLK_TCK)*1e6/r['votes_sent']), 'p99=%.2fms' % (r['latency']['p99_us']/1000) + fs)" | tee -a "$results"
      kill $pid; wait $pid 2>/dev/null; rm -rf $d
    done
  done
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def val(row, i):
    return float(row[i].split("=")[-1].rstrip("ms")) if "=" in row[i] else float(row[i])
for mode in sorted({r[2] for r in rows}):
    for bin in ("before", "after"):
        sel = [r for r in rows if r[1] == bin and r[2] == mode]
        print(f"{mode:6} {bin:6} median {statistics.median(val(r, 3) for r in sel):>10,.0f} votes/s  "
              f"{statistics.median(val(r, 4) for r in sel):6.2f} µs node CPU/vote")
    ratio = lambda i: statistics.median(
        val(a, i) / val(b, i) for a in rows for b in rows
        if a[1] == "after" and b[1] == "before" and a[2] == b[2] == mode and a[0] == b[0])
    print(f"{mode:6} after/before (median of paired ratios): {ratio(3):.2f}× votes/s, {ratio(4):.2f}× CPU/vote")
PY
rm -f "$results"
