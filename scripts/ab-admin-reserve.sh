#!/usr/bin/env bash
# What an admin-API reservation costs the votes a node is answering meanwhile, for two `tally`
# builds: copy them to /tmp/tally-before and /tmp/tally-after (the same binary twice measures
# one build). Each round, for each build: a fresh node on a temporary data directory, a
# 5,000-vote warm-up, then single votes at AB_RATE (2,000) a second for 6 s (open loop,
# latency from the intended send time); 2 s in, `POST /v1/admin/polls` creates a poll with
# `expected_votes` = AB_EXPECTED_VOTES (30,000,000). Prints the admin request's status and
# time and the votes' max, p99.9 and p99 latency.
# Settings (environment): AB_ROUNDS (3), AB_RATE, AB_EXPECTED_VOTES.
# Only 127.0.0.1:18191 is contacted; every run is bounded in time.
set -u
ROUNDS=${AB_ROUNDS:-3}
RATE=${AB_RATE:-2000}
EXPECTED=${AB_EXPECTED_VOTES:-30000000}
ADDRESS=127.0.0.1:18191
# shellcheck source=scripts/lib/local-server.sh
. "$(dirname "$0")/lib/local-server.sh"
for round in $(seq "$ROUNDS"); do
  for bin in before after; do
    d=$(mktemp -d)
    require_free_port ab-admin-reserve $ADDRESS
    RUST_LOG=warn /tmp/tally-$bin run --listen $ADDRESS --data-dir "$d/data" \
      --admin-token ab-secret >/dev/null 2>&1 &
    pid=$!
    wait_for_server ab-admin-reserve $pid $ADDRESS
    warm_up /tmp/tally-before $ADDRESS
    /tmp/tally-before load --target http://$ADDRESS --no-progress --check off \
      --options green,blue --rate "$RATE" --duration 6s --json-report "$d/r.json" >/dev/null 2>&1 &
    load=$!
    sleep 2
    admin=$(curl -s -o /dev/null -w "%{http_code} in %{time_total} s" -X POST \
      -H 'authorization: Bearer ab-secret' -H 'content-type: application/json' \
      -d "{\"id\":\"reserved\",\"options\":[\"a\",\"b\"],\"expected_votes\":$EXPECTED}" \
      http://$ADDRESS/v1/admin/polls)
    wait $load
    python3 -c "import json; l = json.load(open('$d/r.json'))['latency']; print('round $round $bin: admin $admin; votes max %.1f ms, p99.9 %.1f ms, p99 %.1f ms' % (l['max_us'] / 1e3, l['p999_us'] / 1e3, l['p99_us'] / 1e3))"
    kill $pid
    wait $pid 2>/dev/null
    rm -rf "$d"
  done
done
