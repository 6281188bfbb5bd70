# Sourced by the quick comparison and restart scripts (ab-node-binaries.sh,
# ab-admin-reserve.sh, quick-single-votes.sh, bench-damaged-restart.sh,
# bench-index-growth-node.sh): start-up checks and measurements of a server they run in the
# background on 127.0.0.1. Each function exits the calling script with a message on failure.

# tally_binary: sets TALLY to the binary under test, TALLY_BIN if given (another build's),
# else this checkout's release build, built first.
tally_binary() {
  if [ -n "${TALLY_BIN:-}" ]; then
    TALLY="$TALLY_BIN"
  else
    cargo build --quiet --release --locked -p tally --bin tally
    TALLY=target/release/tally
  fi
}

# require_tools TOOL...: refuses to go on unless every TOOL is on PATH.
require_tools() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "please install $tool" >&2; exit 1; }
  done
}

# start_cleanup: a scratch directory WORK, removed on exit, and the server PID in `pid`
# (empty until one starts) killed then.
start_cleanup() {
  WORK="$(mktemp -d)"
  pid=""
  trap 'if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT
}

# require_free_port NAME ADDRESS: refuses to go on if something already listens on ADDRESS
# (a server left running would answer in place of the one about to start).
require_free_port() {
  if (exec 3<>"/dev/tcp/${2%:*}/${2##*:}") 2>/dev/null; then
    echo "$1: something already listens on $2; stop it first" >&2
    exit 1
  fi
}

# wait_for_server NAME PID ADDRESS: waits up to 5 s for ADDRESS to accept connections while
# PID (the server just started) is alive.
wait_for_server() {
  local attempt
  for attempt in $(seq 50); do
    kill -0 "$2" 2>/dev/null || break
    if (exec 3<>"/dev/tcp/${3%:*}/${3##*:}") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$1: the server (pid $2) did not start listening on $3 (${attempt} tries)" >&2
  exit 1
}

# warm_up CLIENT ADDRESS: 5,000 single votes through CLIENT (a `tally` binary), unmeasured.
warm_up() {
  "$1" load --target "http://$2" --no-progress --check off --options green,blue --count 5000 \
    >/dev/null
}

# fsync_totals ADDRESS: "FSYNCS SECONDS", the log fsyncs of the node at ADDRESS so far and the
# time they took (its /metrics; "0 0" for a memory-only node).
fsync_totals() {
  curl -s "http://$1/metrics" | awk '
    /^tally_wal_fsync_duration_seconds_count / { n = $2 }
    /^tally_wal_fsync_duration_seconds_sum / { s = $2 }
    END { printf "%d %s\n", n, (s == "" ? 0 : s) }'
}

# cpu_ticks PID: the process's user + system CPU time so far, in clock ticks (getconf CLK_TCK).
cpu_ticks() {
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# wait_ready PID PORT: polls http://127.0.0.1:PORT/readyz every 20 ms until it answers 200,
# for at most 120 s, while PID (the node) is alive.
wait_ready() {
  local deadline=$((SECONDS + 120))
  until curl -sf "http://127.0.0.1:$2/readyz" >/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "the node was not ready in 120 s" >&2; exit 1; }
    kill -0 "$1" 2>/dev/null || { echo "the node (pid $1) exited" >&2; exit 1; }
    sleep 0.02
  done
}
