#!/usr/bin/env bash
# Polling with If-None-Match (issue 23 part 6): 304s per second from a node's and an edge's
# results route, beside the framework's hello route (node/examples/hello_server.rs), with the
# same client (`wrk -t1 -c64`), the cases interleaved round by round. Each poll names the
# current ETag, so every answer is a bodyless 304, as a CDN's revalidations or the browsers
# behind it would get between changes.
# Settings (environment): BENCH_ROUNDS (3), BENCH_SECONDS (8), BENCH_CONNECTIONS (64).
# Prints requests/s per case and round, then the medians and their ratio to hello.
# Only 127.0.0.1 is contacted (ports 18295-18297); every run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${BENCH_ROUNDS:-3}
SECONDS_PER_RUN=${BENCH_SECONDS:-8}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
NODE=127.0.0.1:18295
EDGE=127.0.0.1:18296
HELLO=127.0.0.1:18297
# shellcheck source=scripts/lib/local-server.sh
. scripts/lib/local-server.sh
command -v wrk >/dev/null || { echo "bench-not-modified: needs wrk (apt-get install wrk)" >&2; exit 1; }
cargo build --release --locked -q -p tally --bin tally -p tally-node --example hello_server
T=target/release
OUT=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$OUT"; }
trap cleanup EXIT
echo "bench-not-modified: $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for a in $NODE $EDGE $HELLO; do require_free_port bench-not-modified $a; done
RUST_LOG=warn $T/tally run --listen $NODE --memory-only >"$OUT/node.log" 2>&1 &
pids+=("$!"); wait_ready "$!" "${NODE##*:}"
RUST_LOG=warn $T/tally edge --listen $EDGE --upstream "http://$NODE" >"$OUT/edge.log" 2>&1 &
pids+=("$!"); wait_ready "$!" "${EDGE##*:}"
$T/examples/hello_server $HELLO >/dev/null 2>&1 &
pids+=("$!"); wait_for_server bench-not-modified "$!" $HELLO
path=/v1/polls/superbowl/results
tag_of() { curl -sf -D - -o /dev/null "http://$1$path" | awk -F': ' 'tolower($1) == "etag" { gsub("\r", "", $2); print $2 }'; }
rate() { # URL [HEADER]: requests/s of one wrk run
  local header=()
  [ $# -gt 1 ] && header=(-H "$2")
  wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" "${header[@]}" "$1" \
    | awk '/^Requests\/sec:/ { printf "%d", $2 }'
}
declare -A runs
for round in $(seq "$ROUNDS"); do
  for case in hello node edge; do
    case $case in
      hello) r=$(rate "http://$HELLO/") ;;
      node) r=$(rate "http://$NODE$path" "If-None-Match: $(tag_of $NODE)") ;;
      edge) r=$(rate "http://$EDGE$path" "If-None-Match: $(tag_of $EDGE)") ;;
    esac
    echo "round $round $case $r req/s"
    runs[$case]="${runs[$case]:-} $r"
  done
done
# Every answer of a run was a 304 only if the tag held: check once more after the runs.
for a in $NODE $EDGE; do
  status=$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $(tag_of $a)" "http://$a$path")
  [ "$status" = 304 ] || { echo "bench-not-modified: $a answered $status, not 304" >&2; exit 1; }
done
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
h=$(median "${runs[hello]}")
for case in hello node edge; do
  m=$(median "${runs[$case]}")
  echo "median $case $m req/s ($(awk -v m="$m" -v h="$h" 'BEGIN { printf "%.2f", m / h }')x hello)"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
