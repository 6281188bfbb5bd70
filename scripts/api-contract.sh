#!/usr/bin/env bash
# The API contract check: schemathesis (pinned, from PyPI, in a virtualenv under target/) with
# every check on, against /openapi.json of a fresh `tally run` with an admin token, on a free
# 127.0.0.1 port and a temporary data directory. Exits non-zero on any failure: the document
# must say exactly what the server does. scripts/test.sh runs it after the tests (which built
# the debug binary it uses); TALLY_BIN=path overrides the binary.
#
#   bash scripts/api-contract.sh                 # the CI run: seed 1, 50 examples an operation
#   CONTRACT_EXAMPLES=500 CONTRACT_SEED=7 bash scripts/api-contract.sh   # a longer hunt
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
examples=${CONTRACT_EXAMPLES:-50}
seed=${CONTRACT_SEED:-1}
bin=${TALLY_BIN:-target/debug/tally}
venv=target/schemathesis-$SCHEMATHESIS_VERSION

[ -x "$bin" ] || cargo build --locked -p tally --bin tally
if ! [ -x "$venv/bin/schemathesis" ]; then
  echo "api-contract: installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

work=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
"$bin" run --listen "127.0.0.1:$port" --data-dir "$work/data" --admin-token "$token" \
  >"$work/node.log" 2>&1 &
node=$!
cleanup() {
  kill "$node" 2>/dev/null || true
  wait "$node" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for _ in $(seq 100); do
  if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/readyz', timeout=1)" 2>/dev/null; then
    break
  fi
  sleep 0.1
done

started=$(date +%s)
status=0
"$venv/bin/schemathesis" --config-file scripts/schemathesis.toml run \
  "http://127.0.0.1:$port/openapi.json" --checks all \
  --header "Authorization: Bearer $token" \
  --seed "$seed" --max-examples "$examples" --workers 2 --no-color \
  --request-timeout 60 || status=$?
echo "api-contract: schemathesis $SCHEMATHESIS_VERSION, seed $seed, $examples examples an operation, $(( $(date +%s) - started )) s, exit $status"
if [ "$status" -ne 0 ]; then
  echo "api-contract: the node's log:" >&2
  tail -n 40 "$work/node.log" >&2
fi
exit "$status"
