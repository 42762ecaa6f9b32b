#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60; the issue's
# long campaign is `scripts/fuzz.sh 600`). Needs the nightly toolchain
# (fuzzing only; the build itself is stable) and cargo-fuzz:
#   cargo install cargo-fuzz --locked
# The growing corpus lives in fuzz/corpus/<target> (not committed), seeded
# from the committed fuzz/seeds/<target>; a crash is written to
# fuzz/artifacts/<target> and fails the run. Usage:
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
mkdir -p target/fuzz-logs
cargo +nightly fuzz build -O
status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  log="target/fuzz-logs/$t.log"
  echo "== fuzz $t for ${secs}s (log: $log)"
  if cargo +nightly fuzz run -O "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 \
      -print_final_stats=1 >"$log" 2>&1; then
    grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added)' "$log" || true
  else
    echo "!! $t failed:"
    grep -E -A20 'panicked|ERROR: libFuzzer|SUMMARY' "$log" | head -n 40 || tail -n 40 "$log"
    status=1
  fi
done
exit "$status"
