#!/usr/bin/env bash
# The network fault campaigns of tests/it/partition.rs and
# tests/it/partition_cs.rs (and the multi-host end-to-end test of
# tests/it/netns.rs), run again and again for DURATION
# seconds: each run starts a fresh set of network namespaces and a fresh
# cluster, so repetitions explore different leaders, timings and
# interleavings. Stops at the first failing run and leaves its output in
# target/fault-campaigns/.
#
# Needs root (network namespaces), iproute2 and nftables, like the tests.
# Knobs (environment):
#   DURATION=1800   seconds to keep going (a run takes about a minute)
#   FILTER="partition:: partition_cs:: netns::"   nextest filters of the
#                   tests to run
#   FAULT_SECS=     how long each campaign keeps its main fault going
#                   (exported as CAIRN_FAULT_SECS; unset: the tests'
#                   CI-short defaults of 12-24 s). Longer faults need a
#                   longer slow-timeout than .config/nextest.toml's 8 min.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-1800}
FILTER=${FILTER:-"partition:: partition_cs:: netns::"}
if [ -n "${FAULT_SECS:-}" ]; then
  export CAIRN_FAULT_SECS="$FAULT_SECS"
fi
OUT=target/fault-campaigns
mkdir -p "$OUT"

cargo nextest run --workspace --locked --no-run
end=$(( $(date +%s) + DURATION ))
run=0
while [ "$(date +%s)" -lt "$end" ]; do
  run=$((run + 1))
  log="$OUT/run-$run.log"
  # shellcheck disable=SC2086
  if ! cargo nextest run --workspace --locked --no-fail-fast $FILTER >"$log" 2>&1; then
    echo "run $run FAILED: see $log"
    exit 1
  fi
  echo "run $run passed"
  rm -f "$log"
done
echo "$run runs passed in ${DURATION}s"
