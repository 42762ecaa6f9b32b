#!/usr/bin/env bash
# Checks deploy/: the systemd units with `systemd-analyze verify` (any
# warning fails) and the Kubernetes manifests with `kubernetes-validate
# --strict` (the Kubernetes OpenAPI schemas, unknown fields rejected).
# A missing tool is skipped locally and fails under CI=true (.ci/run
# installs both). Called by tests/it/deploy.rs.
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
exit $status
