#!/usr/bin/env bash
# Metadata scale benchmark (issue "Metadata v2"; not a test).
#
# Starts a scratch metadata cluster of 3 real `cairn metadata` processes (no
# chunkservers: `cairn bench meta-scale` heartbeats for synthetic ones), runs
# `cairn bench meta-scale --objects N`, then measures what the bench cannot
# see from a client:
#   - metadata RSS (VmRSS, VmHWM) of every node and disk bytes per object
#     (du of each data dir, and raft-sm.redb alone);
#   - snapshot install: a 4th node joins with an empty data dir (the
#     leader's log is purged behind the snapshot the bench had built, so it
#     must install the snapshot); timed until its applied index reaches the
#     leader's, with its peak RSS (VmHWM) while installing.
# Results: OUT/result.json (the bench's report plus these figures) and a
# table on stdout. Stops everything it started (by PID) and deletes its data
# unless KEEP_DATA=1.
#
# Knobs (environment):
#   N=1000000        objects to load
#   CHUNKSERVERS=12  synthetic chunkservers
#   CONCURRENCY=256  writes in flight while loading
#   SAMPLES=1000     samples per timed operation
#   DOWN_SECS=10     metadata --chunkserver-down-secs
#   KEEP_LOGS=0      metadata --keep-logs (0: the log is purged up to the
#                    bench's snapshot, so the joining node installs it)
#   BASE_PORT=7700   metadata on BASE+1..3
#   CAIRN=target/debug/cairn (the dev profile is optimized)
#   WORK=/tmp  OUT=target/meta-scale/<time>  KEEP_DATA=0
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CAIRN=${CAIRN:-$ROOT/target/debug/cairn}
N=${N:-1000000}
CHUNKSERVERS=${CHUNKSERVERS:-12}
CONCURRENCY=${CONCURRENCY:-256}
SAMPLES=${SAMPLES:-1000}
DOWN_SECS=${DOWN_SECS:-10}
KEEP_LOGS=${KEEP_LOGS:-0}
BASE_PORT=${BASE_PORT:-7700}
WORK=${WORK:-/tmp}
OUT=${OUT:-$ROOT/target/meta-scale/$(date +%Y%m%d-%H%M%S)}
KEEP_DATA=${KEEP_DATA:-0}

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
now_ms() { date +%s%3N; }

[[ -x $CAIRN ]] || die "$CAIRN missing: run cargo build --bin cairn"
command -v jq >/dev/null || die "jq is needed"
command -v curl >/dev/null || die "curl is needed"
mkdir -p "$OUT/logs" "$WORK"
DATA=$(mktemp -d "$WORK/cairn-meta-scale.XXXXXX")
PIDS=()
declare -A NODE_PID

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for _ in $(seq 100); do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.2
  done
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [[ $KEEP_DATA == 1 ]]; then log "cluster data kept in $DATA"; else rm -rf "$DATA"; fi
  log "results in $OUT"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SECRET_FILE=$DATA/secret
(umask 077 && head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$SECRET_FILE")
SECRET=$(cat "$SECRET_FILE")
ADDRS=()
for i in 1 2 3; do ADDRS+=("127.0.0.1:$((BASE_PORT + i))"); done
PEERS="1=${ADDRS[0]},2=${ADDRS[1]},3=${ADDRS[2]}"
export CAIRN_METADATA
CAIRN_METADATA=$(IFS=,; echo "${ADDRS[*]}")
export CAIRN_SECRET_FILE=$SECRET_FILE
export CAIRN_CONFIG=$DATA/no-config.json # never the user's config
for i in 1 2 3 4; do
  if ss -Hltn "sport = :$((BASE_PORT + i))" | grep -q .; then die "port $((BASE_PORT + i)) in use (set BASE_PORT)"; fi
done

start_node() { # id [--init ...]
  local id=$1
  shift
  "$CAIRN" metadata --id "$id" --listen "${ADDRS[$((id - 1))]}" --data "$DATA/meta$id" \
    --secret-file "$SECRET_FILE" --chunkserver-down-secs "$DOWN_SECS" --keep-logs "$KEEP_LOGS" "$@" \
    >>"$OUT/logs/meta$id.log" 2>&1 &
  NODE_PID[$id]=$!
  PIDS+=("$!")
}

status() { # addr -> RaftStatus JSON
  curl -sf --max-time 5 -X POST -H "x-cairn-secret: $SECRET" -H 'content-type: application/json' \
    -d 'null' "http://$1/v1/status"
}

start_node 1 --init --peers "$PEERS"
start_node 2
start_node 3
log "waiting for a leader"
for _ in $(seq 300); do
  l=$(status "${ADDRS[0]}" 2>/dev/null | jq -r '.leader // empty' || true)
  [[ -n $l ]] && break
  sleep 0.2
done
[[ -n ${l:-} ]] || die "no leader"

log "cairn bench meta-scale --objects $N"
"$CAIRN" bench meta-scale --scratch --json --objects "$N" --chunkservers "$CHUNKSERVERS" \
  --concurrency "$CONCURRENCY" --samples "$SAMPLES" >"$OUT/bench.json"

rss() { awk -v k="$2:" '$1 == k { print $2 * 1024 }' "/proc/$1/status"; }
LEADER=$(status "${ADDRS[0]}" | jq -r '.leader')
declare -A RSS HWM DISK SM
for i in 1 2 3; do
  RSS[$i]=$(rss "${NODE_PID[$i]}" VmRSS)
  HWM[$i]=$(rss "${NODE_PID[$i]}" VmHWM)
  DISK[$i]=$(du -sb "$DATA/meta$i" | cut -f1)
  SM[$i]=$(stat -c %s "$DATA/meta$i/raft-sm.redb")
done

# Snapshot install on a new node: node 4 joins with an empty data dir. The
# leader's log is purged behind the snapshot the bench built, so the
# learner must install it. (Never wipe a voter in place: a voter that loses
# its log breaks Raft's safety, and openraft refuses it.)
F=4
ADDRS+=("127.0.0.1:$((BASE_PORT + 4))")
target=$(status "${ADDRS[$((LEADER - 1))]}" | jq -r '.last_applied')
log "snapshot install: node 4 joins (leader applied $target)"
t0=$(now_ms)
start_node 4 --join "${ADDRS[$((LEADER - 1))]}"
hwm_install=0
while :; do
  a=$(status "${ADDRS[3]}" 2>/dev/null | jq -r '.last_applied // 0' || echo 0)
  h=$(rss "${NODE_PID[4]}" VmHWM 2>/dev/null || echo 0)
  ((h > hwm_install)) && hwm_install=$h
  [[ $a != null ]] && ((a >= target)) && break
  (($(now_ms) - t0 < 4 * 3600 * 1000)) || die "node 4 did not catch up"
  sleep 0.2
done
install_secs=$(awk -v a="$(now_ms)" -v b="$t0" 'BEGIN { printf "%.2f", (a - b) / 1000 }')
snap_file=$(stat -c %s "$DATA/meta$F/raft-snapshot.snap" 2>/dev/null || echo 0)

jq -n --slurpfile b "$OUT/bench.json" \
  --argjson leader "$LEADER" \
  --argjson rss "[${RSS[1]},${RSS[2]},${RSS[3]}]" \
  --argjson hwm "[${HWM[1]},${HWM[2]},${HWM[3]}]" \
  --argjson disk "[${DISK[1]},${DISK[2]},${DISK[3]}]" \
  --argjson sm "[${SM[1]},${SM[2]},${SM[3]}]" \
  --argjson install_secs "$install_secs" --argjson install_hwm "$hwm_install" \
  --argjson snap_bytes "$snap_file" \
  '$b[0] + {leader: $leader, rss_bytes: $rss, hwm_bytes: $hwm, data_dir_bytes: $disk,
    state_machine_bytes: $sm, snapshot_install_secs: $install_secs,
    snapshot_install_peak_rss_bytes: $install_hwm, snapshot_file_bytes: $snap_bytes}' \
  >"$OUT/result.json"

jq -r '
  def ms(l): "p50 \(l.p50_ms) ms, p99 \(l.p99_ms) ms";
  def mib(b): "\((b / 1048576 * 10 | floor) / 10) MiB";
  "objects                \(.objects) (\(.stripes) stripes), load \(.load_objects_per_sec | floor) objects/s",
  "PUT commit             \(ms(.put))",
  "HEAD                   \(ms(.head))",
  "LIST page of 1000      \(ms(.list_page))",
  "inventory page 10000   \(ms(.inventory_page))",
  "snapshot build         \(.snapshot_build_secs) s (file \(mib(.snapshot_file_bytes)))",
  "snapshot install       \(.snapshot_install_secs) s, peak RSS \(mib(.snapshot_install_peak_rss_bytes))",
  "lost chunkserver       \(.lost_shards) shards queued \(.lost_find_secs) s after the down mark",
  "metadata RSS (leader)  \(mib(.rss_bytes[.leader - 1])), peak \(mib(.hwm_bytes[.leader - 1]))",
  "disk per object        \(.data_dir_bytes[.leader - 1] / .objects | floor) B (state machine \(.state_machine_bytes[.leader - 1] / .objects | floor) B)"
' "$OUT/result.json" | tee "$OUT/table.txt"
