#!/usr/bin/env bash
# A/B of two `tally` builds: copy them to /tmp/tally-before and /tmp/tally-after; each round
# runs both, memory-only and with fsync, against the same client (the before build's `tally load`),
# 64 connections, AB_SECONDS (8) s each, and prints votes/s, node CPU µs per vote and p99.
# Only 127.0.0.1:18191 is contacted.
set -u
CLIENT=/tmp/tally-before
for round in 1 2 3; do
  for bin in before after; do
    for mode in memory fsync; do
      d=$(mktemp -d)
      if [ $mode = memory ]; then args=(--memory-only); else args=(--data-dir $d/data); fi
      RUST_LOG=warn /tmp/tally-$bin run --listen 127.0.0.1:18191 "${args[@]}" >/dev/null 2>&1 &
      pid=$!
      for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/18191) 2>/dev/null && break; sleep 0.1; done
      $CLIENT load --target http://127.0.0.1:18191 --no-progress --check off --options green,blue --count 5000 >/dev/null
      c0=$(awk '{print $14+$15}' /proc/$pid/stat)
      out=$($CLIENT load --target http://127.0.0.1:18191 --no-progress --duration ${AB_SECONDS:-8}s --json-report $d/r.json 2>&1)
      c1=$(awk '{print $14+$15}' /proc/$pid/stat)
      python3 -c "import json;r=json.load(open('$d/r.json'));print('$round $bin $mode', round(r['votes_per_s']), 'us/vote=%.2f' % (($c1-$c0)/100*1e6/r['votes_sent']), 'p99=%.2fms' % (r['latency']['p99_us']/1000))"
      kill $pid; wait $pid 2>/dev/null; rm -rf $d
    done
  done
done
