#!/usr/bin/env bash
# Where a single vote's CPU goes: runs one server under `tally load` single votes (the client
# of scripts/bench-node.sh: one thread, PROFILE_CONNECTIONS (64) connections), records it with
# `perf record --call-graph dwarf` for PROFILE_SECONDS (8) in the middle of the run, and prints
# the node's CPU µs per vote over the recorded window, then scripts/lib/profile_summary.py's
# table: each sample charged to the leaf-most frame that names a part of the request's path
# (hyper, axum, the handler, the engine, the log, tokio's scheduler), in % and µs per vote.
#
# Usage: scripts/profile-single-votes.sh CASE [OUTPUT.md]
#   CASE: memory (`tally run --memory-only`, NOT durable), fsync (`tally run` on a temporary
#   data directory), reference (node/examples/reference_server.rs, NOT durable), durable (the
#   same with its log), hello (node/examples/hello_server.rs).
# Settings (environment): PROFILE_TALLY (the `tally` binary to serve; default the release
# build, which is always the client), PROFILE_SECONDS, PROFILE_CONNECTIONS, PROFILE_PORT
# (18192), PROFILE_FREQUENCY (perf samples per second and thread, 999), PROFILE_KEEP (a path:
# keep `perf script`'s text there for other questions, e.g. who calls malloc).
# Needs perf. Only 127.0.0.1:PROFILE_PORT is contacted; the run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
CASE=${1:?usage: scripts/profile-single-votes.sh memory|fsync|reference|durable|hello [OUTPUT.md]}
OUTPUT=${2:-}
SECONDS_RECORDED=${PROFILE_SECONDS:-8}
CONNECTIONS=${PROFILE_CONNECTIONS:-64}
ADDRESS=127.0.0.1:${PROFILE_PORT:-18192}
FREQUENCY=${PROFILE_FREQUENCY:-999}
# shellcheck source=scripts/lib/local-server.sh
. scripts/lib/local-server.sh
command -v perf >/dev/null || { echo "profile-single-votes: needs perf" >&2; exit 1; }
cargo build --release --locked -q -p tally --bin tally -p tally-node --example hello_server \
  --example reference_server
T=target/release
SERVER=${PROFILE_TALLY:-$T/tally}
work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
require_free_port profile-single-votes "$ADDRESS"
case $CASE in
  memory) RUST_LOG=warn $SERVER run --listen "$ADDRESS" --memory-only >/dev/null 2>&1 & ;;
  fsync) RUST_LOG=warn $SERVER run --listen "$ADDRESS" --data-dir "$work/data" >/dev/null 2>&1 & ;;
  reference) $T/examples/reference_server "$ADDRESS" >/dev/null 2>&1 & ;;
  durable) $T/examples/reference_server "$ADDRESS" "$work/reference.log" >/dev/null 2>&1 & ;;
  hello) $T/examples/hello_server "$ADDRESS" >/dev/null 2>&1 & ;;
  *) echo "profile-single-votes: unknown case $CASE" >&2; exit 2 ;;
esac
pid=$!
wait_for_server profile-single-votes "$pid" "$ADDRESS"
warm_up $T/tally "$ADDRESS"
# The client runs 2 s longer on each side of the recording, so only steady load is recorded.
# CPU per vote is measured over the whole client run (perf's own work in the recorded part is
# charged to the server too, so it reads a little high).
ticks_before=$(cpu_ticks "$pid")
$T/tally load --target "http://$ADDRESS" --no-progress --check off --options green,blue \
  --threads 1 --connections "$CONNECTIONS" --duration "$((SECONDS_RECORDED + 4))s" \
  --json-report "$work/report.json" >/dev/null 2>&1 &
client=$!
sleep 2
perf record -F "$FREQUENCY" --call-graph dwarf,16384 -p "$pid" -o "$work/perf.data" \
  -- sleep "$SECONDS_RECORDED" >/dev/null 2>&1
wait "$client"
ticks_after=$(cpu_ticks "$pid")
read -r rate per_vote < <(python3 -c "import json; r = json.load(open('$work/report.json'))
print(round(r['votes_per_s']), f\"{($ticks_after - $ticks_before) / $(getconf CLK_TCK) * 1e6 / r['votes_sent']:.2f}\")")
perf script -i "$work/perf.data" -F comm,tid,ip,sym,dso 2>/dev/null >"$work/perf.txt"
[ -n "${PROFILE_KEEP:-}" ] && cp "$work/perf.txt" "$PROFILE_KEEP"
{
  echo "Profile of \`$CASE\` under single votes ($(date -u +%Y-%m-%dT%H:%MZ), $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')):"
  echo "\`scripts/profile-single-votes.sh $CASE\`: $CONNECTIONS connections, ${SECONDS_RECORDED} s recorded at"
  echo "$FREQUENCY Hz with DWARF call graphs; $rate votes/s over the client's run (perf slows the server);"
  echo "server CPU $per_vote µs per vote (utime + stime over the client's run ÷ votes sent); load average"
  echo "$(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  python3 scripts/lib/profile_summary.py "$work/perf.txt" "$per_vote"
} | if [ -n "$OUTPUT" ]; then tee "$OUTPUT"; else cat; fi
