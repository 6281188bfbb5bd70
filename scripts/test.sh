#!/usr/bin/env bash
# The test command (README.md): installs what the tests need on a fresh Debian machine, then
# runs every test of the workspace. Heavy simulation seeds stay behind SIM_SEEDS (default small).
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
# The dashboard's browser test (node/tests/browser.rs) drives Debian's headless Chromium.
[ -x /usr/bin/chromium ] || need_packages+=(chromium)
if [ ${#need_packages[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing ${need_packages[*]} (Debian packages)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_packages[@]}" >/dev/null
  else
    echo "test.sh: please install: ${need_packages[*]} (the browser test needs them)" >&2
    exit 1
  fi
fi

cargo test --workspace --locked "$@"
