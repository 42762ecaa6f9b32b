#!/usr/bin/env bash
# Issue 6's repair-speed benchmark (not a test).
#
# Starts its own cluster of real processes (3 metadata nodes, 6 chunkservers
# in 3 zones, run directly rather than through `cairn dev` so the down
# timeout and the repair limits can be set), measures this machine's limits
# (`cairn bench limits`: fsync'd sequential write MB/s, loopback TCP) in the
# same run, fills the cluster with 4+2 objects (FILL_GIB logical: each of the
# 6 chunkservers then holds FILL_GIB/4 GiB, 2.25 GiB by default), starts a
# read-latency probe (timed `cairn get` of 1 MiB objects, content checked),
# kill -9s the chunkserver holding the most bytes and polls `cairn admin
# status --json` until every stripe is back at full redundancy. Reports the
# rebuilt bytes (the victim's used bytes), the time from the down mark and
# from the kill to 99% and to 100% of the stripes at full redundancy, MB/s,
# the ratio to the slower of the two limits, the probe's latency before /
# during / after repair, and the CPU each role spent during the bulk of it. Then checks a sample of the
# fill objects reads back identical, stops everything it started (by PID)
# and deletes its data.
#
# Builds nothing: uses target/release/cairn (override with CAIRN=...).
# Knobs (environment):
#   FILL_GIB=9          logical GiB written (4+2 on 6 chunkservers puts
#                       FILL_GIB/4 GiB on each); reduced if the disk is short
#   OBJ_MIB=64          object size of the fill
#   SHARD_SIZE=1048576  shard size of the fill bucket (the default)
#   DOWN_SECS=5         metadata --chunkserver-down-secs
#   REPAIR_PER_CS=4     metadata --repair-per-chunkserver
#   REPAIR_CONC=4       chunkserver --repair-concurrency
#   TASK_TIMEOUT_SECS=120 metadata --repair-task-timeout-secs
#   CS_HEARTBEAT_MS=1000 chunkserver --heartbeat-ms
#   BASE_PORT=7400      metadata on BASE+1..3, chunkservers on BASE+101..106
#   BASELINE_SECS=20    probe window before the kill; POST_SECS=10 after
#   PROBE_GAP=0.2       seconds between probe reads
#   VERIFY=16           fill objects hashed before the kill and after repair
#                       (all: every object)
#   PERF_SECS=0         if > 0, `perf record -g` the chunkservers that long
#                       once repair runs (report in OUT/perf-*.txt)
#   WORK=/tmp           where the temporary cluster data goes
#   OUT=target/bench-repair/<time>  results kept here (logs, timeline)
#   KEEP_DATA=0         1 keeps the cluster data
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CAIRN=${CAIRN:-$ROOT/target/release/cairn}
FILL_GIB=${FILL_GIB:-9}
OBJ_MIB=${OBJ_MIB:-64}
SHARD_SIZE=${SHARD_SIZE:-1048576}
DOWN_SECS=${DOWN_SECS:-5}
REPAIR_PER_CS=${REPAIR_PER_CS:-4}
REPAIR_CONC=${REPAIR_CONC:-4}
TASK_TIMEOUT_SECS=${TASK_TIMEOUT_SECS:-120}
CS_HEARTBEAT_MS=${CS_HEARTBEAT_MS:-1000}
BASE_PORT=${BASE_PORT:-7400}
BASELINE_SECS=${BASELINE_SECS:-20}
POST_SECS=${POST_SECS:-10}
PROBE_GAP=${PROBE_GAP:-0.2}
PROBE_OBJECTS=${PROBE_OBJECTS:-8}
VERIFY=${VERIFY:-16}
PERF_SECS=${PERF_SECS:-0}
REPAIR_TIMEOUT=${REPAIR_TIMEOUT:-1800}
MIN_FREE_GIB=${MIN_FREE_GIB:-10}
WORK=${WORK:-/tmp}
OUT=${OUT:-$ROOT/target/bench-repair/$(date +%Y%m%d-%H%M%S)}
KEEP_DATA=${KEEP_DATA:-0}

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
now_ms() { date +%s%3N; }

[[ -x $CAIRN ]] || die "$CAIRN missing: run cargo build --release --bin cairn"
command -v jq >/dev/null || die "jq is needed"
head_ms=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)
if (($(stat -c %Y "$CAIRN") < head_ms)); then
  log "warning: $CAIRN is older than HEAD; rebuild with cargo build --release --bin cairn"
fi

mkdir -p "$OUT" "$WORK"
DATA=$(mktemp -d "$WORK/cairn-bench-repair.XXXXXX")
PIDS=()          # every process this script started, killed on exit
PROBE_PID=""
PERF_PID=""

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  [[ -n $PERF_PID ]] && kill -INT "$PERF_PID" 2>/dev/null && wait "$PERF_PID" 2>/dev/null
  [[ -n $PROBE_PID ]] && kill "$PROBE_PID" 2>/dev/null && wait "$PROBE_PID" 2>/dev/null
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
  if [[ $KEEP_DATA == 1 ]]; then
    log "cluster data kept in $DATA"
  else
    rm -rf "$DATA"
  fi
  log "results in $OUT"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the cluster -------------------------------------------------------------
export CAIRN_SECRET
CAIRN_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
META_ADDRS=()
for i in 1 2 3; do META_ADDRS+=("127.0.0.1:$((BASE_PORT + i))"); done
export CAIRN_METADATA
CAIRN_METADATA=$(IFS=,; echo "${META_ADDRS[*]}")
export CAIRN_CONFIG=$DATA/no-config.json   # never the user's config
mkdir -p "$OUT/logs"
for port in $((BASE_PORT + 1)) $((BASE_PORT + 2)) $((BASE_PORT + 3)) \
  $(seq $((BASE_PORT + 101)) $((BASE_PORT + 106))); do
  if ss -Hltn "sport = :$port" | grep -q .; then die "port $port is in use (set BASE_PORT)"; fi
done

# Disk: the fill is written 1.5x (4+2), the lost part again by repair, plus
# the limits' disk test; keep MIN_FREE_GIB free.
avail_gib=$(($(df -B1 --output=avail "$DATA" | tail -1) >> 30))
fits=$(((avail_gib - MIN_FREE_GIB - 2) * 4 / 7)) # 1.5 + 1.5/6 = 1.75 = 7/4
if ((fits < FILL_GIB)); then
  log "warning: $avail_gib GiB free: filling $fits GiB instead of $FILL_GIB GiB"
  FILL_GIB=$fits
fi
((FILL_GIB >= 1)) || die "not enough free disk ($avail_gib GiB) for any fill"
COUNT=$(((FILL_GIB << 10) / OBJ_MIB))

log "limits: cairn bench limits --json (disk test in $DATA)"
mkdir -p "$DATA/limits"
"$CAIRN" bench limits --json --dir "$DATA/limits" >"$OUT/limits.json"
rm -rf "$DATA/limits"
DISK_MBPS=$(jq '.fsync_write_mbps' "$OUT/limits.json")
LOOP_MBPS=$(jq '.loopback_tcp_gbps * 1000' "$OUT/limits.json")

declare -A ROLE_PID
start_role() { # name args...
  local name=$1
  shift
  "$CAIRN" "$@" >"$OUT/logs/$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  ROLE_PID[$name]=$pid
}
peers="1=${META_ADDRS[0]},2=${META_ADDRS[1]},3=${META_ADDRS[2]}"
for i in 1 2 3; do
  extra=()
  ((i == 1)) && extra=(--init --peers "$peers")
  start_role "meta$i" metadata --id "$i" --listen "${META_ADDRS[i - 1]}" \
    --data "$DATA/meta$i" --chunkserver-down-secs "$DOWN_SECS" \
    --repair-per-chunkserver "$REPAIR_PER_CS" \
    --repair-task-timeout-secs "$TASK_TIMEOUT_SECS" "${extra[@]}"
done
for j in 1 2 3 4 5 6; do
  start_role "cs$j" chunkserver --listen "127.0.0.1:$((BASE_PORT + 100 + j))" \
    --data "$DATA/cs$j" --zone "zone$(((j - 1) % 3 + 1))" \
    --metadata "$CAIRN_METADATA" --heartbeat-ms "$CS_HEARTBEAT_MS" \
    --repair-concurrency "$REPAIR_CONC"
done

status() { "$CAIRN" admin status --json 2>/dev/null; }
log "waiting for 6 chunkservers up"
deadline=$((SECONDS + 90))
until [[ $(status | jq '[.cluster.chunkservers[] | select(.state == "up")] | length' 2>/dev/null || echo 0) == 6 ]]; do
  ((SECONDS < deadline)) || die "the cluster did not come up; see $OUT/logs"
  sleep 0.5
done

# --- fill ----------------------------------------------------------------------
log "fill: $COUNT x ${OBJ_MIB} MiB into cairn://fill (4+2, shard size $SHARD_SIZE)"
"$CAIRN" mb -q cairn://fill --ec 4+2 --shard-size "$SHARD_SIZE" >/dev/null
t0=$(now_ms)
"$CAIRN" bench put --native --size "${OBJ_MIB}MiB" --count "$COUNT" --concurrency 4 \
  --keep --bucket fill --no-limits --json >"$OUT/fill.json" 2>"$OUT/fill.err"
fill_s=$(echo "scale=1; ($(now_ms) - $t0) / 1000" | bc)
fill_errors=$(jq '.errors' "$OUT/fill.json")
((fill_errors == 0)) || die "fill had $fill_errors errors"
log "fill took ${fill_s}s"

# Probe objects: 1 MiB of random bytes each, their SHA-256 remembered.
mkdir -p "$DATA/probe"
"$CAIRN" mb cairn://probe -q >/dev/null
for i in $(seq "$PROBE_OBJECTS"); do
  head -c $((1 << 20)) /dev/urandom >"$DATA/probe/p$i"
  "$CAIRN" put -q "$DATA/probe/p$i" "cairn://probe/p$i" >/dev/null
  sha256sum <"$DATA/probe/p$i" | cut -d' ' -f1 >"$DATA/probe/p$i.sha"
done

# Let the heartbeats report the fill, then pick the fullest chunkserver.
sleep $(((CS_HEARTBEAT_MS * 2 + 999) / 1000))
status >"$OUT/status-before.json"
read -r VICTIM_ID VICTIM_ADDR VICTIM_USED VICTIM_SHARDS < <(jq -r \
  '.cluster.chunkservers | max_by(.used) | "\(.id) \(.addr) \(.used) \(.shard_count)"' \
  "$OUT/status-before.json")
VICTIM=cs$((${VICTIM_ADDR##*:} - BASE_PORT - 100))
log "victim: $VICTIM (id $VICTIM_ID, $VICTIM_ADDR): $VICTIM_USED bytes in $VICTIM_SHARDS shards"

# Verification sample: hashes before the failure.
"$CAIRN" ls -r cairn://fill --json >"$OUT/fill-list.json"
jq -r '.. | objects | select(has("key")) | .key' "$OUT/fill-list.json" | sort >"$DATA/keys"
nkeys=$(wc -l <"$DATA/keys")
((nkeys == COUNT)) || die "listed $nkeys fill objects, wrote $COUNT"
if [[ $VERIFY == all ]]; then cp "$DATA/keys" "$DATA/sample"; else shuf -n "$VERIFY" "$DATA/keys" >"$DATA/sample"; fi
hash_sample() {
  local k
  while read -r k; do
    printf '%s %s\n' "$k" "$("$CAIRN" get -q "cairn://fill/$k" - | sha256sum | cut -d' ' -f1)"
  done <"$DATA/sample"
}
log "hashing $(wc -l <"$DATA/sample") fill objects"
hash_sample >"$OUT/hashes-before.txt"

# --- the probe -----------------------------------------------------------------
# One line per read: start ms, latency ms, ok|bad|err.
probe() {
  local i=0 want t0 t1 got
  while :; do
    i=$((i % PROBE_OBJECTS + 1))
    want=$(<"$DATA/probe/p$i.sha")
    t0=$(date +%s%N)
    if got=$("$CAIRN" get -q "cairn://probe/p$i" - 2>>"$OUT/probe.err" | sha256sum | cut -d' ' -f1); then :; fi
    t1=$(date +%s%N)
    if [[ $got == "$want" ]]; then r=ok; elif [[ $got == "$EMPTY_SHA" ]]; then r=err; else r=bad; fi
    echo "$((t0 / 1000000)) $(((t1 - t0) / 1000)) $r" >>"$OUT/probe.log"
    sleep "$PROBE_GAP"
  done
}
EMPTY_SHA=$(sha256sum </dev/null | cut -d' ' -f1)
: >"$OUT/probe.log"
probe &
PROBE_PID=$!
log "baseline probe for ${BASELINE_SECS}s"
sleep "$BASELINE_SECS"

# CPU seconds (user + system) of a PID.
cpu_s() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
cpu_snapshot() {
  local n
  for n in "${!ROLE_PID[@]}"; do echo "$n $(cpu_s "${ROLE_PID[$n]}")"; done | sort
}

# Busy and total jiffies of the whole machine (every CPU), from /proc/stat.
machine_jiffies() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat; }

# --- the failure -----------------------------------------------------------------
# T_FIRST: first repair in flight (reads that hit the dead chunkserver report
# its shards before the down timeout); T_DOWN: the victim is marked down (the
# bulk of the repair is dispatched in the next planner pass); T99: 99% of
# the stripes are back at full redundancy; T_DONE: all of them, queue and
# in-flight empty.
T_KILL=$(now_ms)
kill -KILL "${ROLE_PID[$VICTIM]}"
log "killed $VICTIM (pid ${ROLE_PID[$VICTIM]})"
T_FIRST="" T_DOWN="" T99="" T_DONE="" degraded=0 seen_bulk=0 full_min=""
echo "t_ms state queue in_flight done full stripes redundancy" >"$OUT/timeline.txt"
while :; do
  now=$(now_ms)
  ((now - T_KILL < REPAIR_TIMEOUT * 1000)) || die "no full redundancy after ${REPAIR_TIMEOUT}s"
  if ! s=$(status); then sleep 0.5; continue; fi
  read -r st q fl dn full total red < <(jq -r --argjson id "$VICTIM_ID" '.cluster as $c |
    "\(($c.chunkservers[] | select(.id == $id) | .state) // "gone") \($c.repair_queue) \($c.repairs_in_flight) \($c.repairs_done) \($c.redundancy["2"] // 0) \([$c.redundancy[]] | add // 0) \($c.redundancy | tojson)"' <<<"$s")
  echo "$((now - T_KILL)) $st $q $fl $dn $full $total $red" >>"$OUT/timeline.txt"
  if [[ -z $T_FIRST ]] && ((fl > 0)); then T_FIRST=$now; fi
  if [[ -z $T_DOWN && $st == down ]]; then
    T_DOWN=$now
    echo "$s" >"$OUT/status-at-down.json"
    cpu_snapshot >"$DATA/cpu0"
    machine_jiffies >"$DATA/jif0"
    log "$VICTIM marked down $(((now - T_KILL) / 1000)) s after the kill"
    if ((PERF_SECS > 0)); then
      perf_pids=$(for n in "${!ROLE_PID[@]}"; do [[ $n == "$VICTIM" ]] || echo "${ROLE_PID[$n]}"; done | paste -sd,)
      perf record -F 499 -g -p "$perf_pids" -o "$OUT/perf.data" -- sleep "$PERF_SECS" >/dev/null 2>&1 &
      PERF_PID=$!
    fi
  fi
  if [[ -z $full_min ]] || ((full < full_min)); then full_min=$full; fi
  if ((full < total || q > 0 || fl > 0)); then degraded=1; fi
  # The planner's view lags the down mark by up to one pass: wait until it
  # shows the bulk of the damage before looking for 99%.
  if [[ -n $T_DOWN ]] && ((full * 100 < total * 99)); then seen_bulk=1; fi
  if [[ -n $T_DOWN && -z $T99 ]] && ((seen_bulk && full * 100 >= total * 99)); then
    T99=$now full99=$full
    cpu_snapshot >"$DATA/cpu1"
    machine_jiffies >"$DATA/jif1"
  fi
  if [[ -n $T99 ]] && ((full == total && q == 0 && fl == 0)); then
    T_DONE=$now
    break
  fi
  sleep 0.5
done
log "full redundancy $(((T_DONE - T_KILL) / 1000)) s after the kill"
status >"$OUT/status-after.json"
log "post-repair probe for ${POST_SECS}s"
sleep "$POST_SECS"
T_POST=$(now_ms)
kill "$PROBE_PID" 2>/dev/null || true
wait "$PROBE_PID" 2>/dev/null || true
PROBE_PID=""
if [[ -n $PERF_PID ]]; then
  wait "$PERF_PID" 2>/dev/null || true
  PERF_PID=""
  perf report -i "$OUT/perf.data" --no-children --sort comm,dso,symbol --stdio 2>/dev/null |
    grep -v '^$' | head -120 >"$OUT/perf-report.txt" || true
fi

# --- verification ------------------------------------------------------------------
log "re-hashing the sample after repair"
hash_sample >"$OUT/hashes-after.txt"
if cmp -s "$OUT/hashes-before.txt" "$OUT/hashes-after.txt"; then verified=yes; else verified=NO; fi
if [[ $(jq -r '.cluster.redundancy | keys | join(",")' "$OUT/status-after.json") == 2 ]]; then full=yes; else full=NO; fi

# --- report ------------------------------------------------------------------------
pct() { # file percentile -> value (ms)
  sort -n "$1" | awk -v p="$2" '{ a[NR] = $1 } END { if (NR == 0) { print "n/a"; exit }
    i = int(p / 100 * NR + 0.999); if (i < 1) i = 1; if (i > NR) i = NR; printf "%.1f", a[i] / 1000 }'
}
window() { # from_ms to_ms -> latencies (us) of ok reads in [from, to)
  awk -v a="$1" -v b="$2" '$1 >= a && $1 < b && $3 == "ok" { print $2 }' "$OUT/probe.log"
}
probe_start=$(head -1 "$OUT/probe.log" | cut -d' ' -f1)
window "$probe_start" "$T_KILL" >"$DATA/lat-base"
window "$T_KILL" "$T_DOWN" >"$DATA/lat-detect"
window "$T_DOWN" "$T99" >"$DATA/lat-bulk"
window "$T99" "$T_DONE" >"$DATA/lat-tail"
window "$T_DONE" "$T_POST" >"$DATA/lat-post"
bad_reads=$(awk '$3 == "bad"' "$OUT/probe.log" | wc -l)
err_reads=$(awk '$3 == "err"' "$OUT/probe.log" | wc -l)
lat_row() { # label file
  printf '    %-30s n=%-5s p50=%-7s p99=%-7s max=%s\n' "$1" "$(wc -l <"$2")" "$(pct "$2" 50)" "$(pct "$2" 99)" "$(pct "$2" 100)"
}

sec() { echo "scale=1; $1 / 1000" | bc; }
mbps() { echo "scale=1; $1 / 1000 / $2" | bc; } # bytes, ms -> MB/s
LIMIT=$(echo "if ($DISK_MBPS < $LOOP_MBPS) $DISK_MBPS else $LOOP_MBPS" | bc)
ratio() { echo "scale=1; 100 * $1 / $LIMIT" | bc; }
bulk_ms=$((T99 - T_DOWN))
rebuilt99=$((VICTIM_USED * (full99 - full_min) / (total - full_min)))
MBPS_BULK=$(mbps "$rebuilt99" "$bulk_ms")
MBPS_DOWN=$(mbps "$VICTIM_USED" $((T_DONE - T_DOWN)))
MBPS_KILL=$(mbps "$VICTIM_USED" $((T_DONE - T_KILL)))
stuck=$(jq --argjson id "$VICTIM_ID" '[.cluster.recent_repairs[] | select(.to == $id)] | length' "$OUT/status-at-down.json")
early=$(awk -v k="$T_KILL" -v d="$T_DOWN" 'NR > 1 && $1 + k < d && $4 > m { m = $4 } END { print m + 0 }' "$OUT/timeline.txt")
ncpu=$(nproc)
read -r jb0 jt0 <"$DATA/jif0"
read -r jb1 jt1 <"$DATA/jif1"
machine_cores=$(echo "scale=2; $ncpu * ($jb1 - $jb0) / ($jt1 - $jt0)" | bc)
cpu_rows=$(join "$DATA/cpu0" "$DATA/cpu1" | awk -v d="$bulk_ms" -v v="$VICTIM" \
  '$1 != v { c = $3 - $2; printf "    %-6s %6.1f CPU s (%3.0f%% of one core)\n", $1, c, 100 * c * 1000 / d }')
cluster_cores=$(join "$DATA/cpu0" "$DATA/cpu1" | awk -v d="$bulk_ms" '{ c += $3 - $2 } END { printf "%.2f", c * 1000 / d }')

{
  echo "Cairn repair benchmark ($(date -u +%FT%TZ), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null), $ncpu CPUs)"
  echo "  cluster: 3 metadata + 6 chunkservers in 3 zones, 4+2; --chunkserver-down-secs $DOWN_SECS,"
  echo "           --repair-per-chunkserver $REPAIR_PER_CS, --repair-task-timeout-secs $TASK_TIMEOUT_SECS,"
  echo "           chunkserver --repair-concurrency $REPAIR_CONC --heartbeat-ms $CS_HEARTBEAT_MS"
  echo "  fill: $COUNT x $OBJ_MIB MiB = $FILL_GIB GiB logical, shard size $SHARD_SIZE, in ${fill_s}s; $total stripes"
  echo "  limits (same run): fsync'd sequential write $(printf %.0f "$DISK_MBPS") MB/s, loopback TCP $(printf %.0f "$LOOP_MBPS") MB/s -> slower limit $(printf %.0f "$LIMIT") MB/s"
  echo "  lost: $VICTIM (id $VICTIM_ID) holding $VICTIM_USED bytes ($(echo "scale=2; $VICTIM_USED / 1073741824" | bc) GiB) in $VICTIM_SHARDS shards"
  echo "  marked down $(sec $((T_DOWN - T_KILL))) s after the kill; first repair in flight at $(sec $((${T_FIRST:-$T_DOWN} - T_KILL))) s ($early tasks before the down mark, from reads reporting missing shards)"
  echo "  bulk:   99% of stripes full $(sec "$bulk_ms") s after the down mark: $MBPS_BULK MB/s = $(ratio "$MBPS_BULK")% of the slower limit"
  echo "  full:   every stripe full $(sec $((T_DONE - T_DOWN))) s after the down mark: $MBPS_DOWN MB/s = $(ratio "$MBPS_DOWN")%"
  echo "          $(sec $((T_DONE - T_KILL))) s after the kill: $MBPS_KILL MB/s = $(ratio "$MBPS_KILL")%"
  echo "          repair tasks dispatched to the dead chunkserver itself: $stuck (each waits out the task timeout)"
  echo "  every stripe at full redundancy: $full; sample of $(wc -l <"$DATA/sample") fill objects identical after repair: $verified"
  echo "  probe reads (cairn get of a 1 MiB object, process start included, one at a time), ms:"
  lat_row "before the failure" "$DATA/lat-base"
  lat_row "kill -> down mark" "$DATA/lat-detect"
  lat_row "bulk repair (down -> 99%)" "$DATA/lat-bulk"
  lat_row "repair tail (99% -> 100%)" "$DATA/lat-tail"
  lat_row "after repair" "$DATA/lat-post"
  echo "    failed reads: $err_reads, wrong content: $bad_reads"
  echo "  CPU during the bulk repair: whole machine $machine_cores of $ncpu cores busy, the cluster's processes $cluster_cores cores"
  echo "$cpu_rows"
} | tee "$OUT/summary.txt"

jq -n --argjson used "$VICTIM_USED" --argjson disk "$DISK_MBPS" --argjson loop "$LOOP_MBPS" \
  --argjson down_ms $((T_DOWN - T_KILL)) --argjson bulk_ms "$bulk_ms" \
  --argjson full_from_down_ms $((T_DONE - T_DOWN)) --argjson full_from_kill_ms $((T_DONE - T_KILL)) \
  --argjson bulk "$MBPS_BULK" --argjson from_down "$MBPS_DOWN" --argjson from_kill "$MBPS_KILL" \
  --argjson stuck "$stuck" --arg verified "$verified" --arg full "$full" \
  --argjson per_cs "$REPAIR_PER_CS" --argjson conc "$REPAIR_CONC" --argjson hb "$CS_HEARTBEAT_MS" \
  --argjson shard_size "$SHARD_SIZE" \
  '{rebuilt_bytes: $used, disk_write_mbps: $disk, loopback_mbps: $loop,
    down_mark_ms: $down_ms, bulk_99pct_ms: $bulk_ms, full_from_down_ms: $full_from_down_ms,
    full_from_kill_ms: $full_from_kill_ms, bulk_mbps: $bulk, full_mbps_from_down: $from_down,
    full_mbps_from_kill: $from_kill, bulk_ratio_to_slower_limit: ($bulk / ([$disk, $loop] | min)),
    tasks_to_dead_target: $stuck, verified: $verified, full_redundancy: $full,
    repair_per_chunkserver: $per_cs, repair_concurrency: $conc, heartbeat_ms: $hb,
    shard_size: $shard_size}' >"$OUT/summary.json"
[[ $verified == yes && $full == yes && $bad_reads == 0 ]] || die "verification failed"
