#!/usr/bin/env bash
# The cost of HTTPS on the S3 gateway (issue 14; a benchmark, not a test).
#
# Starts its own cluster of real processes (1 metadata node, 3 chunkservers
# in 3 zones, 2+1 buckets) and two gateways on it: one serving HTTPS with a
# certificate from `cairn admin cert issue` (a fresh CA), one plain HTTP
# (`--plain-http`). Then runs `cairn bench put|get` against each in
# alternating rounds (the order flips every round, so drift and cache
# warm-up hit both alike): 64 MiB objects (MB/s) and 4 KiB objects
# (ops/s). Prints the median of each, and HTTPS as a share of plain.
# Stops everything it started (by PID) and deletes its data.
#
# Builds nothing: uses target/release/cairn (override with CAIRN=...).
# Knobs (environment):
#   ROUNDS=5         alternating rounds
#   BIG_COUNT=16     64 MiB operations per timed phase
#   SMALL_COUNT=2000 4 KiB operations per timed phase
#   CONC=4           concurrent requests
#   BASE_PORT=7600   metadata on BASE+1, chunkservers on BASE+101..103,
#                    gateways on BASE+900 (HTTPS) and BASE+901 (plain)
#   WORK=/tmp        where the temporary cluster data goes
#   OUT=target/bench-tls/<time>  results kept here (logs, every run's JSON)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CAIRN=${CAIRN:-$ROOT/target/release/cairn}
ROUNDS=${ROUNDS:-5}
BIG_COUNT=${BIG_COUNT:-16}
SMALL_COUNT=${SMALL_COUNT:-2000}
CONC=${CONC:-4}
BASE_PORT=${BASE_PORT:-7600}
WORK=${WORK:-/tmp}
OUT=${OUT:-$ROOT/target/bench-tls/$(date +%Y%m%d-%H%M%S)}

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -x $CAIRN ]] || die "$CAIRN missing: run cargo build --release --bin cairn"
command -v jq >/dev/null || die "jq is needed"
command -v python3 >/dev/null || die "python3 is needed"

mkdir -p "$OUT/logs" "$OUT/runs" "$WORK"
DATA=$(mktemp -d "$WORK/cairn-bench-tls.XXXXXX")
PIDS=()

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for _ in $(seq 50); do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.2
  done
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$DATA"
  log "results in $OUT"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for port in $((BASE_PORT + 1)) $((BASE_PORT + 101)) $((BASE_PORT + 102)) \
  $((BASE_PORT + 103)) $((BASE_PORT + 900)) $((BASE_PORT + 901)); do
  if ss -Hltn "sport = :$port" | grep -q .; then die "port $port is in use (set BASE_PORT)"; fi
done

export CAIRN_SECRET
CAIRN_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
export CAIRN_METADATA=127.0.0.1:$((BASE_PORT + 1))
export CAIRN_CONFIG=$DATA/no-config.json # never the user's config

start_role() { # name args...
  local name=$1
  shift
  "$CAIRN" "$@" >"$OUT/logs/$name.log" 2>&1 &
  PIDS+=("$!")
}

start_role meta1 metadata --id 1 --listen "$CAIRN_METADATA" --data "$DATA/meta1" \
  --init --peers "1=$CAIRN_METADATA"
for j in 1 2 3; do
  start_role "cs$j" chunkserver --listen "127.0.0.1:$((BASE_PORT + 100 + j))" \
    --data "$DATA/cs$j" --zone "zone$j" --metadata "$CAIRN_METADATA"
done

log "CA and gateway certificate (offline)"
"$CAIRN" admin ca init --dir "$DATA/ca" >/dev/null
"$CAIRN" admin cert issue --ca-dir "$DATA/ca" --role gateway --name gw \
  --san 127.0.0.1 --out-dir "$DATA/tls" >/dev/null
HTTPS=127.0.0.1:$((BASE_PORT + 900))
PLAIN=127.0.0.1:$((BASE_PORT + 901))
start_role gw-https gateway --listen "$HTTPS" --metadata "$CAIRN_METADATA" \
  --tls-cert "$DATA/tls/gw.pem" --tls-key "$DATA/tls/gw.key"
start_role gw-plain gateway --listen "$PLAIN" --metadata "$CAIRN_METADATA" --plain-http

log "waiting for 3 chunkservers up"
deadline=$((SECONDS + 90))
until [[ $("$CAIRN" admin status --json 2>/dev/null |
  jq '[.cluster.chunkservers[] | select(.state == "up")] | length' 2>/dev/null || echo 0) == 3 ]]; do
  ((SECONDS < deadline)) || die "the cluster did not come up; see $OUT/logs"
  sleep 0.5
done
KEY_JSON=$("$CAIRN" --json admin key create bench-tls --admin)
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
AWS_ACCESS_KEY_ID=$(jq -r .id <<<"$KEY_JSON")
AWS_SECRET_ACCESS_KEY=$(jq -r .secret <<<"$KEY_JSON")

bench() { # transport mode size count round
  local t=$1 mode=$2 size=$3 count=$4 round=$5 ep
  local args=()
  if [[ $t == https ]]; then
    ep=https://$HTTPS
    args=(--ca-file "$DATA/ca/ca.pem")
  else
    ep=http://$PLAIN
  fi
  "$CAIRN" bench "$mode" --endpoint "$ep" "${args[@]}" --size "$size" --count "$count" \
    --concurrency "$CONC" --ec 2+1 --no-limits --json \
    >"$OUT/runs/$round-$t-$mode-$size.json" 2>"$OUT/runs/$round-$t-$mode-$size.err" ||
    die "bench $mode $size over $t failed: $(tail -3 "$OUT/runs/$round-$t-$mode-$size.err")"
}

for r in $(seq "$ROUNDS"); do
  if ((r % 2)); then order=(https plain); else order=(plain https); fi
  for t in "${order[@]}"; do
    log "round $r/$ROUNDS: $t"
    bench "$t" put 64MiB "$BIG_COUNT" "$r"
    bench "$t" get 64MiB "$BIG_COUNT" "$r"
    bench "$t" put 4KiB "$SMALL_COUNT" "$r"
    bench "$t" get 4KiB "$SMALL_COUNT" "$r"
  done
done

python3 - "$OUT/runs" <<'EOF' | tee "$OUT/summary.txt"
import json, os, statistics, sys
runs = sys.argv[1]
vals = {}
for f in sorted(os.listdir(runs)):
    if not f.endswith(".json"):
        continue
    _, t, mode, size = f[:-5].split("-", 3)
    rep = json.load(open(os.path.join(runs, f)))
    for row in rep["results"]:
        if row["op"] != mode:
            continue
        if row["errors"]:
            sys.exit(f"{f}: {row['errors']} errors")
        unit = "MB/s" if size == "64MiB" else "ops/s"
        v = row["mbps"] if unit == "MB/s" else row["ops_per_sec"]
        vals.setdefault((mode, size, unit), {}).setdefault(t, []).append(v)
print(f"{'op':<4} {'size':>6} {'unit':>6} {'https':>9} {'plain':>9} {'https/plain':>12}  rounds")
for (mode, size, unit), d in sorted(vals.items(), key=lambda kv: (kv[0][1] != "64MiB", kv[0][0] != "put")):
    h, p = statistics.median(d["https"]), statistics.median(d["plain"])
    print(f"{mode:<4} {size:>6} {unit:>6} {h:>9.1f} {p:>9.1f} {h / p:>11.1%}  {len(d['https'])}")
EOF
