#!/usr/bin/env bash
# Checks deploy/: the systemd units with `systemd-analyze verify` (any
# warning fails), the Kubernetes manifests with `kubernetes-validate
# --strict` (the Kubernetes OpenAPI schemas, unknown fields rejected), the
# Prometheus alert rules and example config with `promtool check
# rules|config`, and the Grafana dashboard: valid JSON whose every panel
# query is valid PromQL (`promtool check rules` on the queries turned into
# recording rules). A missing tool is skipped locally and fails under
# CI=true (.ci/run installs them). Called by tests/it/deploy.rs, which also
# checks that every metric the rules and the dashboard name exists.
#
#   CAIRN_BIN    the cairn binary the units' ExecStart is checked against
#                (default target/debug/cairn)
#   K8S_VERSION  Kubernetes version to validate against (default 1.31.0)
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$(realpath "${CAIRN_BIN:-target/debug/cairn}")
k8s=${K8S_VERSION:-1.31.0}
status=0

missing() {
  if [ "${CI:-}" = "true" ]; then
    echo "FAIL: $1 is missing (CI must install it: .ci/run)" >&2
    status=1
  else
    echo "SKIP: $1 is missing"
  fi
}

if command -v systemd-analyze >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # ExecStart must name an executable: check against the built binary.
  for unit in deploy/systemd/*.service; do
    sed "s#/usr/local/bin/cairn#$bin#" "$unit" >"$tmp/$(basename "$unit")"
  done
  if out=$(systemd-analyze verify "$tmp"/*.service 2>&1) && [ -z "$out" ]; then
    echo "ok: systemd-analyze verify deploy/systemd/*.service"
  else
    echo "FAIL: systemd-analyze verify:" >&2
    echo "$out" >&2
    status=1
  fi
else
  missing systemd-analyze
fi

if command -v kubernetes-validate >/dev/null 2>&1; then
  if kubernetes-validate --strict --quiet -k "$k8s" deploy/kubernetes/*.yaml; then
    echo "ok: kubernetes-validate --strict -k $k8s deploy/kubernetes/*.yaml"
  else
    echo "FAIL: kubernetes-validate" >&2
    status=1
  fi
else
  missing kubernetes-validate
fi
if command -v promtool >/dev/null 2>&1; then
  if promtool check rules deploy/prometheus/cairn-alerts.yml &&
    promtool check config --syntax-only deploy/prometheus/prometheus.yml; then
    echo "ok: promtool check rules deploy/prometheus/cairn-alerts.yml"
  else
    echo "FAIL: promtool check rules/config" >&2
    status=1
  fi
else
  missing promtool
fi

# The dashboard: JSON, panels with targets, each expression valid PromQL
# (Grafana's $__rate_interval and friends replaced by a plain range).
gtmp=$(mktemp -d)
if python3 - deploy/grafana/cairn.json "$gtmp/dashboard-rules.yml" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
exprs = []
for p in d["panels"]:
    if p.get("type") == "row":
        continue
    assert p.get("targets"), f"panel {p.get('title')!r} has no targets"
    for t in p["targets"]:
        exprs.append(t["expr"])
with open(sys.argv[2], "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, e in enumerate(exprs):
        e = e.replace("$__rate_interval", "5m").replace("$__interval", "1m")
        f.write(f"      - record: cairn:dashboard:{i}\n        expr: {json.dumps(e)}\n")
print(f"{len(exprs)} dashboard queries")
PY
then
  if command -v promtool >/dev/null 2>&1; then
    if promtool check rules "$gtmp/dashboard-rules.yml" >/dev/null; then
      echo "ok: grafana dashboard deploy/grafana/cairn.json (JSON, PromQL)"
    else
      promtool check rules "$gtmp/dashboard-rules.yml" >&2 || true
      echo "FAIL: deploy/grafana/cairn.json: a query is not valid PromQL" >&2
      status=1
    fi
  else
    echo "ok: grafana dashboard deploy/grafana/cairn.json (JSON; PromQL unchecked)"
  fi
else
  echo "FAIL: deploy/grafana/cairn.json is not a valid dashboard" >&2
  status=1
fi
rm -rf "$gtmp"
exit $status
