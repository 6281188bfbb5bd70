#!/usr/bin/env bash
# The test command (README.md): installs what the tests need on a fresh Debian machine, then
# checks the deployment files, runs every test of the workspace, a range of simulation seeds
# (SIM_CI_SEEDS, default 200) and the API contract.
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
# The dashboard's browser test (tally/tests/browser.rs) drives Debian's headless Chromium.
[ -x /usr/bin/chromium ] || need_packages+=(chromium)
# The operations test (tally/tests/operations.rs) scrapes real nodes with a real Prometheus;
# scripts/check-deploy.sh uses its promtool.
command -v prometheus >/dev/null 2>&1 || need_packages+=(prometheus)
# The clock-skew test (tally/tests/clock_skew.rs) runs a node under libfaketime.
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || need_packages+=(faketime)
if [ ${#need_packages[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing ${need_packages[*]} (Debian packages)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_packages[@]}" >/dev/null
  else
    echo "test.sh: please install: ${need_packages[*]} (the browser, operations and clock-skew tests need them)" >&2
    exit 1
  fi
fi

# The deployment files: alert rules and their unit tests, Kubernetes schemas, Dockerfile,
# systemd unit, Grafana dashboard.
bash scripts/check-deploy.sh

cargo test --workspace --locked "$@"

# The simulation's seed range (issue 24): SIM_CI_SEEDS seeds (default 200) of the Super Bowl
# scenario, 1,000 votes each over five regions with their own swarm of faults, on every core,
# with the debug build the tests just made. A failing seed is listed with its replay command.
# scripts/soak.sh runs thousands before an event.
cargo run --locked -q -p tally-sim -- --first 1000 --seeds "${SIM_CI_SEEDS:-200}" --votes 1000 \
  --jobs "$(nproc)" --keep-going --no-progress

# The API contract: schemathesis (pinned) with every check on against a fresh node, using the
# debug binary the tests just built.
bash scripts/api-contract.sh
