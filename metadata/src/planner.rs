//! The leader's repair planner: finds stripes that lost shards and tells
//! chunkservers to rebuild them, most urgent first.
//!
//! # What counts as lost
//! A pass reads the leader's local state machine (no linearizable read is
//! needed: every repair commits through Raft with a condition) and walks
//! every object manifest. A shard is *lost* when its `ShardLoc` names no
//! chunkserver (never written), its chunkserver is `Down` or unknown (or
//! `Draining` and silent for longer than the down timeout), the pair
//! (chunkserver, shard) is in the `bad` table (a scrub or read found it
//! corrupt or missing), or a repair-queue item names it for the manifest's
//! version. `Suspect` counts as healthy: it may come back. A shard on a
//! `Draining` chunkserver is healthy for redundancy but must be *moved*.
//!
//! # Priority
//! A stripe's redundancy is `healthy - k`: how many more losses it
//! survives. Shards to rebuild are dispatched by redundancy ascending, moves
//! off draining chunkservers last. When the most urgent shard cannot be
//! placed because every possible target is at its concurrency limit, no
//! less urgent shard is dispatched in that pass, so a stripe at -2 never
//! waits behind one at -1. Stripes with fewer than k healthy shards are
//! unrecoverable: they are counted (negative redundancy) and logged, never
//! dispatched.
//!
//! # Dispatch
//! One task rebuilds one shard index of one stripe, so the two lost shards
//! of a stripe at -2 are rebuilt in parallel on different targets. A target
//! is an `Up` chunkserver below `repair_per_chunkserver` tasks, preferring
//! one that holds no healthy shard of the stripe, then a zone the stripe
//! does not use, then the fewest shards of the stripe, then the most free
//! bytes; a chunkserver whose copy is the bad one is a fine target (that
//! copy is quarantined), one with the same shard waiting in its GC queue is
//! not (the pending delete would remove the rebuilt copy). Sources are every
//! healthy shard of the stripe; a move also lists the shard's own copy
//! first, so the target copies it without decoding. Tasks wait in memory
//! until the target's next heartbeat reply carries them; a task not
//! reported within `repair_task_timeout` is forgotten and its stripe backs
//! off before it is planned again.
//!
//! # Reports and commits
//! A chunkserver reports each task with the whole task, so any leader (also
//! one elected after the dispatch) can commit it: `Command::CommitRepair`
//! moves the placement only if the live manifest is still the planned
//! version with the same shard on the same chunkserver; otherwise the
//! rebuilt copy goes to the GC queue and the result is `Stale`. An
//! overwrite or delete racing a repair therefore always wins.
//!
//! # State and scaling
//! Everything here is leader memory, reset when the term changes. A pass is
//! O(manifests): fine for millions of objects at a pass per second while
//! degraded (and every 30 s otherwise). The scaling step is a reverse index
//! chunkserver -> stripes maintained by `apply`, so a failure touches only
//! the stripes it affects. Shards of multipart uploads still in progress are
//! not repaired (only committed manifests are); their bad reports are kept.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::model;
use crate::node::{now_ms, ApiError, MetaNode};
use crate::types::*;
use crate::worker::{BoxFuture, Worker, WorkerState};

/// Dispatch records kept for `cairn admin status` and tests.
const MAX_RECORDS: usize = 10_000;
/// Records returned in a [`ClusterStatus`].
const STATUS_RECORDS: usize = 2_000;
/// Candidate shards kept per pass (the most urgent); the rest wait for the
/// next pass. Bounds the planner's memory whatever the cluster size.
const MAX_CANDIDATES: usize = 8_192;
/// A full pass at least this often even when nothing seems to change.
const FULL_PASS_EVERY: Duration = Duration::from_secs(30);
/// Pass interval while anything is degraded or in flight.
const ACTIVE_EVERY: Duration = Duration::from_secs(1);
/// A task sent this long ago to a chunkserver that now runs none and
/// reports none is sent again.
const RESEND_AFTER: Duration = Duration::from_secs(2);
/// Longest per-stripe back-off after failed repairs.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A shard of a stripe of an object version.
type ShardKey = (StripeId, u64, u8);
/// A stripe of an object version.
type StripeKey = (StripeId, u64);

/// Planner settings (from [`crate::node::MetaConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct PlannerConfig {
    /// Tasks queued or running per target chunkserver.
    pub per_chunkserver: usize,
    /// A dispatched task not reported within this is forgotten.
    pub task_timeout: Duration,
    /// A draining chunkserver silent this long counts as down.
    pub silent_after: Duration,
}

struct InFlight {
    task: RepairTask,
    target: ChunkserverId,
    deadline: Instant,
    /// When a heartbeat reply carried it (`None`: waiting for one).
    sent: Option<Instant>,
    /// When the planner dispatched it (for the measured repair rate).
    planned: Instant,
    seq: u64,
}

/// What the last pass saw.
#[derive(Debug, Clone, Default)]
struct Summary {
    objects: u64,
    bytes: u64,
    redundancy: BTreeMap<i32, u64>,
    buckets: BTreeMap<String, BucketUsage>,
    waiting: u64,
    unrecoverable: u64,
    last_plan_ms: Option<u64>,
    /// Anything degraded, draining or in flight: plan again soon.
    active: bool,
}

#[derive(Default)]
struct State {
    /// The term this state belongs to; `None` when not leader.
    term: Option<u64>,
    next_task: u64,
    next_seq: u64,
    in_flight: HashMap<u64, InFlight>,
    busy: HashMap<ShardKey, u64>,
    /// Shards whose task finished since the running pass took its snapshot.
    finished: HashSet<ShardKey>,
    backoff: HashMap<StripeKey, (Instant, u32)>,
    records: VecDeque<RepairRecord>,
    done: u64,
    commits: VecDeque<Instant>,
    /// Shard bytes of committed repairs (this term).
    repaired_bytes: u64,
    /// Wall time at least one finished task was running (this term): the
    /// union of the finished tasks' [planned, finished] intervals.
    repair_busy: Duration,
    /// The latest end of an interval counted in `repair_busy`.
    busy_until: Option<Instant>,
    summary: Summary,
    triggered: bool,
    fingerprint: u64,
    last_full: Option<Instant>,
}

impl State {
    fn reset(&mut self, term: Option<u64>) {
        *self = State {
            term,
            ..State::default()
        };
    }

    fn load(&self, cs: ChunkserverId) -> usize {
        self.in_flight.values().filter(|f| f.target == cs).count()
    }

    fn set_outcome(&mut self, seq: u64, outcome: &str) {
        let Some(first) = self.records.front().map(|r| r.seq) else {
            return;
        };
        if let Some(r) = seq
            .checked_sub(first)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.records.get_mut(i))
        {
            r.outcome = outcome.to_string();
        }
    }

    /// Counts a finished task that ran from `start` to `end` into the
    /// measured repair rate. Tasks end in time order, so the part of
    /// [start, end] after the latest counted end is new busy time (gaps
    /// between earlier intervals that this one spans are not counted: the
    /// rate may read a little high while tasks overlap irregularly).
    fn note_finished(&mut self, start: Instant, end: Instant, bytes: u64) {
        let from = match self.busy_until {
            Some(u) if u > start => u,
            _ => start,
        };
        if end > from {
            self.repair_busy += end - from;
        }
        self.busy_until = Some(self.busy_until.map_or(end, |u| u.max(end)));
        self.repaired_bytes = self.repaired_bytes.saturating_add(bytes);
    }

    fn back_off(&mut self, key: StripeKey, now: Instant) {
        let n = self.backoff.get(&key).map(|(_, n)| *n).unwrap_or(0) + 1;
        let wait = Duration::from_secs(1)
            .saturating_mul(1u32 << n.min(6))
            .min(MAX_BACKOFF);
        self.backoff.insert(key, (now + wait, n));
    }
}

/// The outcome of a reported task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The placement moved to the target.
    Committed,
    /// The object changed meanwhile; the copy went to GC.
    Stale,
    /// The target could not rebuild it, or the commit failed.
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Committed => "committed",
            Outcome::Stale => "stale",
            Outcome::Failed => "failed",
        }
    }
}

/// The planner's state shared by the planner worker, the heartbeat handler
/// and the status endpoint.
pub struct Repairs {
    cfg: PlannerConfig,
    state: Mutex<State>,
    scrub: Mutex<BTreeMap<ChunkserverId, ScrubProgress>>,
    wake: tokio::sync::Notify,
}

impl Repairs {
    /// Empty state.
    pub fn new(cfg: PlannerConfig) -> Self {
        Repairs {
            cfg,
            state: Mutex::new(State::default()),
            scrub: Mutex::new(BTreeMap::new()),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Asks for a pass soon (something changed).
    pub fn trigger(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.triggered = true;
        }
        self.wake.notify_one();
    }

    /// Keeps a chunkserver's latest scrub progress.
    pub fn set_scrub(&self, cs: ChunkserverId, p: ScrubProgress) {
        if let Ok(mut m) = self.scrub.lock() {
            m.insert(cs, p);
        }
    }

    /// Tasks for `cs`'s heartbeat reply (now marked sent), if this state
    /// belongs to `term`. `idle` says the chunkserver runs no task and
    /// reported none: a task sent to it a while ago was lost with its reply
    /// (a timed-out heartbeat) and is sent again; the executor makes a
    /// repeat harmless (it finds the shard already stored).
    pub fn take_tasks(&self, cs: ChunkserverId, term: u64, idle: bool) -> Vec<RepairTask> {
        let Ok(mut s) = self.state.lock() else {
            return Vec::new();
        };
        if s.term != Some(term) {
            return Vec::new();
        }
        let now = Instant::now();
        let deadline = now + self.cfg.task_timeout;
        let mut out = Vec::new();
        for f in s.in_flight.values_mut() {
            let lost = idle
                && f.sent
                    .is_some_and(|t| now.duration_since(t) >= RESEND_AFTER);
            if f.target == cs && (f.sent.is_none() || lost) {
                f.sent = Some(now);
                f.deadline = deadline;
                out.push(f.task.clone());
            }
        }
        out.sort_by_key(|t| t.task);
        out
    }

    /// Shard ids an accepted (in-flight) repair task reads (its sources)
    /// or writes (its target's copy): the GC queue holds their deletion
    /// until the task is reported or forgotten. Read-only.
    pub fn busy_shards(&self) -> HashSet<ShardId> {
        let Ok(s) = self.state.lock() else {
            return HashSet::new();
        };
        s.in_flight
            .values()
            .flat_map(|f| {
                std::iter::once(f.task.shard).chain(f.task.sources.iter().map(|src| src.shard))
            })
            .collect()
    }

    /// Tasks dispatched and not yet reported.
    pub fn running_on(&self, cs: ChunkserverId) -> usize {
        self.state.lock().map(|s| s.load(cs)).unwrap_or(0)
    }

    /// Records the outcome of `task` reported by `cs`.
    pub fn finish(&self, cs: ChunkserverId, task: &RepairTask, outcome: Outcome) {
        let now = Instant::now();
        if let Ok(mut s) = self.state.lock() {
            let key: ShardKey = (task.version, task.stripe, task.index);
            let ours = s
                .in_flight
                .get(&task.task)
                .is_some_and(|f| f.target == cs && f.task.shard == task.shard);
            if ours {
                if let Some(f) = s.in_flight.remove(&task.task) {
                    s.set_outcome(f.seq, outcome.as_str());
                    let bytes = match outcome {
                        Outcome::Committed => f.task.shard_len,
                        Outcome::Stale | Outcome::Failed => 0,
                    };
                    s.note_finished(f.planned, now, bytes);
                }
                if s.busy.get(&key) == Some(&task.task) {
                    s.busy.remove(&key);
                }
                s.finished.insert(key);
            }
            match outcome {
                Outcome::Committed => {
                    s.done += 1;
                    s.commits.push_back(now);
                    s.backoff.remove(&(task.version, task.stripe));
                }
                Outcome::Failed => s.back_off((task.version, task.stripe), now),
                Outcome::Stale => {}
            }
            while s
                .commits
                .front()
                .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
            {
                s.commits.pop_front();
            }
        }
        self.trigger();
    }

    /// The cluster health view, from the last pass and leader memory.
    pub fn status(
        &self,
        raft: RaftStatus,
        chunkservers: Vec<ChunkserverInfo>,
        gc_pending: u64,
    ) -> ClusterStatus {
        let scrub = self.scrub.lock().map(|m| m.clone()).unwrap_or_default();
        let now = Instant::now();
        let (summary, in_flight, done, rate, records, measured) = match self.state.lock() {
            Ok(s) => {
                let recent = s
                    .commits
                    .iter()
                    .filter(|t| now.duration_since(**t) <= Duration::from_secs(60))
                    .count();
                let skip = s.records.len().saturating_sub(STATUS_RECORDS);
                (
                    s.summary.clone(),
                    s.in_flight.len() as u64,
                    s.done,
                    recent as f64 / 60.0,
                    s.records.iter().skip(skip).cloned().collect(),
                    (s.repaired_bytes, s.repair_busy.as_secs_f64()),
                )
            }
            Err(_) => (Summary::default(), 0, 0, 0.0, Vec::new(), (0, 0.0)),
        };
        ClusterStatus {
            raft,
            chunkservers,
            scrub,
            objects: summary.objects,
            bytes: summary.bytes,
            redundancy: summary.redundancy,
            repair_queue: summary.waiting,
            repairs_in_flight: in_flight,
            repairs_done: done,
            repair_rate: rate,
            gc_pending,
            orphans_pending: 0,
            last_plan_ms: summary.last_plan_ms,
            recent_repairs: records,
            buckets: summary.buckets,
            repaired_bytes: measured.0,
            repair_busy_secs: measured.1,
        }
    }
}

/// Commits the repairs `cs` reports (one Raft entry for all of them) and
/// records every outcome.
pub async fn handle_reports(
    node: &MetaNode,
    cs: ChunkserverId,
    reports: &[RepairReport],
) -> Result<(), ApiError> {
    let repairs = node.repairs();
    let mut cmds = Vec::new();
    let mut tasks = Vec::new();
    for r in reports {
        if r.ok {
            let t = &r.task;
            cmds.push(Command::CommitRepair {
                bucket: t.bucket.clone(),
                key: t.key.clone(),
                version: t.version,
                stripe: t.stripe,
                index: t.index,
                shard: t.shard,
                from: t.from,
                to: cs,
                reused: r.reused,
            });
            tasks.push(t);
        } else {
            tracing::warn!(
                cs,
                task = r.task.task,
                bucket = %r.task.bucket,
                key = %r.task.key,
                stripe = r.task.stripe,
                index = r.task.index,
                error = r.error.as_deref().unwrap_or(""),
                "repair failed"
            );
            repairs.finish(cs, &r.task, Outcome::Failed);
        }
    }
    if cmds.is_empty() {
        return Ok(());
    }
    let n = cmds.len();
    let results = match node.write(Command::Batch { cmds }).await? {
        CommandResult::Batch(r) if r.len() == n => r,
        other => return Err(ApiError::Internal(format!("repair commit: {other:?}"))),
    };
    for (t, r) in tasks.into_iter().zip(results) {
        let outcome = match r {
            CommandResult::Ok => Outcome::Committed,
            CommandResult::Err(MetaError::Stale(why)) => {
                tracing::info!(cs, task = t.task, %why, "repair is stale");
                Outcome::Stale
            }
            other => {
                tracing::warn!(cs, task = t.task, result = ?other, "repair commit refused");
                Outcome::Failed
            }
        };
        repairs.finish(cs, t, outcome);
    }
    Ok(())
}

/// A stripe's remaining redundancy: how many more chunkserver losses it
/// survives, counted in distinct failure domains. `healthy` gives, per
/// shard index, the chunkserver of a healthy copy (`None`: lost). The count
/// is the number of distinct chunkservers holding a healthy shard, each
/// zone counting at most its zone cap, minus k: two shards on one
/// chunkserver count once. A stripe with at least k healthy shards is
/// readable and never counts below 0 (one more loss, of the server or zone
/// that holds too much, can lose it); below k healthy shards it is
/// `healthy - k` (negative: lost until shards come back). The status table,
/// the planner's priorities and its "nothing to do" test all use this.
pub fn redundancy(
    rules: &model::PlacementRules,
    ec: EcParams,
    healthy: &[Option<ChunkserverId>],
) -> i32 {
    let k = i32::from(ec.k);
    let n_healthy = healthy.iter().filter(|c| c.is_some()).count() as i32;
    if n_healthy < k {
        return n_healthy - k;
    }
    let distinct: HashSet<ChunkserverId> = healthy.iter().flatten().copied().collect();
    let mut per_zone: HashMap<Option<&str>, usize> = HashMap::new();
    for c in &distinct {
        *per_zone.entry(rules.zone(*c)).or_insert(0) += 1;
    }
    let cap = rules.cap(ec);
    let counted: usize = per_zone
        .iter()
        .map(|(z, n)| if z.is_some() { (*n).min(cap) } else { *n })
        .sum();
    (counted as i32 - k).max(0)
}

/// The healthy shards that break the placement invariant and must move:
/// on a chunkserver holding several shards of the stripe, all but the
/// lowest index; in a zone holding more distinct chunkservers' shards than
/// the zone cap, the highest indexes beyond the cap. Ascending.
pub fn must_move(
    rules: &model::PlacementRules,
    ec: EcParams,
    healthy: &[Option<ChunkserverId>],
) -> Vec<usize> {
    let mut by_cs: BTreeMap<ChunkserverId, Vec<usize>> = BTreeMap::new();
    for (i, c) in healthy.iter().enumerate() {
        if let Some(c) = c {
            by_cs.entry(*c).or_default().push(i);
        }
    }
    let mut out = Vec::new();
    let mut by_zone: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (c, idx) in &by_cs {
        out.extend(idx.iter().skip(1).copied());
        if let (Some(z), Some(first)) = (rules.zone(*c), idx.first()) {
            by_zone.entry(z).or_default().push(*first);
        }
    }
    let cap = rules.cap(ec);
    for (_, mut idx) in by_zone {
        idx.sort_unstable();
        out.extend(idx.iter().skip(cap).copied());
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// One shard to rebuild or move, with what choosing a target needs.
struct Candidate {
    /// 0 = rebuild a lost shard, 1 = move off a draining chunkserver.
    class: u8,
    redundancy: i32,
    order: u64,
    ctx: Arc<StripeCtx>,
    index: u8,
}

impl Candidate {
    fn rank(&self) -> (u8, i32, u64) {
        (self.class, self.redundancy, self.order)
    }
}

impl PartialEq for Candidate {
    fn eq(&self, o: &Self) -> bool {
        self.rank() == o.rank()
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Candidate {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&o.rank())
    }
}

struct StripeCtx {
    bucket: String,
    key: String,
    version: StripeId,
    stripe: u64,
    ec: EcParams,
    manifest: StripeManifest,
    /// Per shard index: healthy (not lost).
    healthy: Vec<bool>,
}

/// What a pass leaves for the async part of the worker.
struct PassResult {
    clear_bad: BTreeMap<ChunkserverId, Vec<ShardId>>,
    unrecoverable: u64,
}

/// One planning pass over a read transaction (blocking: run it on the
/// blocking pool).
fn plan_pass(db: &redb::Database, repairs: &Repairs, term: u64) -> Result<PassResult, redb::Error> {
    use redb::ReadableDatabase;
    let cfg = repairs.cfg;
    let now = Instant::now();
    let wall = now_ms();
    // Targets that can still finish a task: a task sent to a chunkserver
    // that has since turned Suspect or Down (or was removed) will never
    // report, so it is dropped now rather than at its timeout (a read that
    // hit a dying chunkserver can get its shards planned onto it while it
    // still looks Up).
    let alive: HashSet<ChunkserverId> = model::chunkservers(&db.begin_read()?)?
        .into_iter()
        .filter(|c| matches!(c.state, ChunkserverState::Up | ChunkserverState::Draining))
        .map(|c| c.id)
        .collect();
    // Snapshot of what is in flight, taken before the read so that a task
    // finishing during the pass is seen in `finished`.
    let (busy, backoff) = {
        let Ok(mut s) = repairs.state.lock() else {
            return Err(redb::Error::Corrupted("planner state poisoned".into()));
        };
        if s.term != Some(term) {
            return Ok(PassResult {
                clear_bad: BTreeMap::new(),
                unrecoverable: 0,
            });
        }
        s.finished.clear();
        s.triggered = false;
        let expired: Vec<u64> = s
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(f) = s.in_flight.remove(&id) {
                tracing::warn!(task = id, target = f.target, "repair task timed out");
                let key = (f.task.version, f.task.stripe, f.task.index);
                if s.busy.get(&key) == Some(&id) {
                    s.busy.remove(&key);
                }
                s.set_outcome(f.seq, "failed");
                s.back_off((f.task.version, f.task.stripe), now);
            }
        }
        let orphaned: Vec<u64> = s
            .in_flight
            .iter()
            .filter(|(_, f)| !alive.contains(&f.target))
            .map(|(id, _)| *id)
            .collect();
        for id in orphaned {
            if let Some(f) = s.in_flight.remove(&id) {
                tracing::info!(
                    task = id,
                    target = f.target,
                    "repair target is gone: replanning"
                );
                let key = (f.task.version, f.task.stripe, f.task.index);
                if s.busy.get(&key) == Some(&id) {
                    s.busy.remove(&key);
                }
                s.set_outcome(f.seq, "failed");
            }
        }
        // Forget back-offs long past (their escalation count with them).
        s.backoff
            .retain(|_, (until, _)| now.saturating_duration_since(*until) < MAX_BACKOFF);
        let backoff: HashSet<StripeKey> = s
            .backoff
            .iter()
            .filter(|(_, (until, _))| *until > now)
            .map(|(k, _)| *k)
            .collect();
        (s.busy.keys().copied().collect::<HashSet<_>>(), backoff)
    };

    let txn = db.begin_read()?;
    let servers: HashMap<ChunkserverId, ChunkserverInfo> = model::chunkservers(&txn)?
        .into_iter()
        .map(|c| (c.id, c))
        .collect();
    let rules = model::PlacementRules::new(&servers.values().cloned().collect::<Vec<_>>());
    let silent_ms = cfg.silent_after.as_millis() as u64;
    let lost_cs = |c: ChunkserverId| match servers.get(&c) {
        None => true,
        Some(i) => match i.state {
            ChunkserverState::Down => true,
            ChunkserverState::Draining => wall.saturating_sub(i.last_heartbeat_ms) > silent_ms,
            _ => false,
        },
    };
    let mut bad: HashMap<(ChunkserverId, ShardId), bool> = model::bad_shards(&txn)?
        .into_iter()
        .map(|k| (k, false))
        .collect();
    let items: HashSet<ShardKey> = model::repair_items(&txn)?
        .into_iter()
        .map(|i| (i.version, i.stripe, i.index))
        .collect();

    let mut summary = Summary::default();
    let mut heap: BinaryHeap<Candidate> = BinaryHeap::new();
    let mut order = 0u64;
    let mut draining_left = false;
    // Per-bucket usage: the counters `apply` keeps, one row per bucket.
    summary.buckets = crate::stats::all(&txn)?
        .into_iter()
        .map(|(b, s)| {
            let u = BucketUsage {
                objects: s.objects,
                bytes: s.bytes,
                stripes: s.stripes,
            };
            (b, u)
        })
        .collect();
    model::for_each_object(&txn, |bucket, key, m| {
        summary.objects += 1;
        summary.bytes += m.size;
        let k = usize::from(m.ec.k);
        let total = m.ec.total();
        for (si, s) in m.stripes.iter().enumerate() {
            let si = si as u64;
            let mut healthy = vec![false; total];
            let mut moves = Vec::new();
            for (idx, l) in s.shards.iter().enumerate().take(total) {
                let lost = match l.chunkserver {
                    None => true,
                    Some(c) => {
                        let b = match bad.get_mut(&(c, l.shard)) {
                            Some(seen) => {
                                *seen = true;
                                true
                            }
                            None => false,
                        };
                        b || lost_cs(c) || items.contains(&(m.version, si, idx as u8))
                    }
                };
                healthy[idx] = !lost;
                if !lost
                    && l.chunkserver
                        .and_then(|c| servers.get(&c))
                        .is_some_and(|i| i.state == ChunkserverState::Draining)
                {
                    moves.push(idx);
                }
            }
            let n_healthy = healthy.iter().filter(|h| **h).count();
            let on: Vec<Option<ChunkserverId>> = s
                .shards
                .iter()
                .take(total)
                .enumerate()
                .map(|(i, l)| {
                    l.chunkserver
                        .filter(|_| healthy.get(i).copied().unwrap_or(false))
                })
                .collect();
            let red = redundancy(&rules, m.ec, &on);
            *summary.redundancy.entry(red).or_insert(0) += 1;
            // Shards breaking the invariant move first (class 0, by the
            // stripe's redundancy), shards leaving a draining server last.
            let fix = must_move(&rules, m.ec, &on);
            let moves: Vec<(u8, usize)> = fix
                .iter()
                .map(|i| (0u8, *i))
                .chain(moves.iter().filter(|i| !fix.contains(i)).map(|i| (1u8, *i)))
                .collect();
            if n_healthy == total && moves.is_empty() {
                continue;
            }
            if !moves.is_empty() {
                draining_left = true;
            }
            if n_healthy < k {
                summary.unrecoverable += 1;
                continue;
            }
            summary.active = true;
            let ctx = Arc::new(StripeCtx {
                bucket: bucket.to_string(),
                key: key.to_string(),
                version: m.version,
                stripe: si,
                ec: m.ec,
                manifest: s.clone(),
                healthy: healthy.clone(),
            });
            let lost = (0..total).filter(|i| !healthy[*i]).map(|i| (0u8, i));
            let wanted: Vec<(u8, usize)> = lost.chain(moves.iter().copied()).collect();
            for (class, idx) in wanted {
                if busy.contains(&(m.version, si, idx as u8)) {
                    continue;
                }
                summary.waiting += 1;
                if backoff.contains(&(m.version, si)) {
                    continue;
                }
                order += 1;
                heap.push(Candidate {
                    class,
                    redundancy: red,
                    order,
                    ctx: ctx.clone(),
                    index: idx as u8,
                });
                if heap.len() > MAX_CANDIDATES {
                    heap.pop();
                }
            }
        }
    })?;
    // Bad reports that no committed row places (any more): forget them.
    let mut clear_bad: BTreeMap<ChunkserverId, Vec<ShardId>> = BTreeMap::new();
    for ((c, s), seen) in bad {
        if !seen && !crate::shard_index::is_named(&txn, c, &s)? {
            clear_bad.entry(c).or_default().push(s);
        }
    }

    // Ascending: most urgent first.
    let cands = heap.into_sorted_vec();
    let Ok(mut s) = repairs.state.lock() else {
        return Err(redb::Error::Corrupted("planner state poisoned".into()));
    };
    if s.term != Some(term) {
        return Ok(PassResult {
            clear_bad,
            unrecoverable: 0,
        });
    }
    let mut load: HashMap<ChunkserverId, usize> = HashMap::new();
    let mut stripe_targets: HashMap<StripeKey, Vec<(u8, ChunkserverId)>> = HashMap::new();
    for f in s.in_flight.values() {
        *load.entry(f.target).or_insert(0) += 1;
        stripe_targets
            .entry((f.task.version, f.task.stripe))
            .or_default()
            .push((f.task.index, f.target));
    }
    let up: Vec<&ChunkserverInfo> = servers
        .values()
        .filter(|c| c.state == ChunkserverState::Up)
        .collect();
    let mut blocked: Option<(u8, i32)> = None;
    for c in cands {
        let ctx = &c.ctx;
        if blocked.is_some_and(|b| (c.class, c.redundancy) > b) {
            break;
        }
        let skey: ShardKey = (ctx.version, ctx.stripe, c.index);
        if s.finished.contains(&skey) || s.busy.contains_key(&skey) {
            continue;
        }
        let Some(loc) = ctx.manifest.shards.get(usize::from(c.index)) else {
            continue;
        };
        let shard_len = ctx.manifest.len.div_ceil(u64::from(ctx.ec.k.max(1)));
        // Who holds what of this stripe (healthy copies and planned ones).
        let mut holds: HashMap<ChunkserverId, usize> = HashMap::new();
        let mut zones: HashSet<&str> = HashSet::new();
        for (i, l) in ctx.manifest.shards.iter().enumerate() {
            if let (true, Some(cs)) = (ctx.healthy.get(i).copied().unwrap_or(false), l.chunkserver)
            {
                *holds.entry(cs).or_insert(0) += 1;
                if let Some(info) = servers.get(&cs) {
                    zones.insert(info.zone.as_str());
                }
            }
        }
        // The stripe's placement once the tasks in flight commit: what a
        // new target is checked against (as `CommitRepair` will check it).
        let mut planned: Vec<Option<ChunkserverId>> =
            ctx.manifest.shards.iter().map(|l| l.chunkserver).collect();
        for (i, t) in stripe_targets
            .get(&(ctx.version, ctx.stripe))
            .into_iter()
            .flatten()
        {
            *holds.entry(*t).or_insert(0) += 1;
            if let Some(info) = servers.get(t) {
                zones.insert(info.zone.as_str());
            }
            if let Some(l) = planned.get_mut(usize::from(*i)) {
                *l = Some(*t);
            }
        }
        let cap = rules.cap(ctx.ec);
        let in_zone = |locs: &[Option<ChunkserverId>], z: &str| {
            locs.iter()
                .filter(|c| c.and_then(|c| rules.zone(c)) == Some(z))
                .count()
        };
        // Never a chunkserver that holds (or is rebuilding) another shard of
        // the stripe, nor one whose zone would exceed the zone cap: with no
        // such target the stripe stays degraded (status says so) rather than
        // stacking shards, and is repaired once a valid server is Up.
        let index = usize::from(c.index);
        let valid = |i: &ChunkserverInfo| {
            let stacked = planned
                .iter()
                .enumerate()
                .any(|(j, on)| j != index && *on == Some(i.id));
            let mut after = planned.clone();
            if let Some(l) = after.get_mut(index) {
                *l = Some(i.id);
            }
            let n = in_zone(&after, &i.zone);
            !stacked && (n <= cap || n <= in_zone(&planned, &i.zone))
        };
        let mut options: Vec<&&ChunkserverInfo> = up
            .iter()
            .filter(|i| load.get(&i.id).copied().unwrap_or(0) < cfg.per_chunkserver)
            .filter(|i| i.free >= shard_len)
            .filter(|i| valid(i))
            .collect();
        if options.is_empty() {
            if up.iter().any(|i| {
                i.free >= shard_len
                    && valid(i)
                    && load.get(&i.id).copied().unwrap_or(0) >= cfg.per_chunkserver
            }) {
                blocked = Some((c.class, c.redundancy));
            }
            continue;
        }
        options.sort_by_key(|i| {
            let n = holds.get(&i.id).copied().unwrap_or(0);
            (
                n > 0,
                zones.contains(i.zone.as_str()),
                n,
                Reverse(i.free),
                i.id,
            )
        });
        let mut target = None;
        for o in options {
            if !model::gc_contains(&txn, o.id, &loc.shard)? {
                target = Some(o.id);
                break;
            }
        }
        let Some(target) = target else {
            continue;
        };
        let mut sources: Vec<(u8, RepairSource)> = Vec::new();
        for (i, l) in ctx.manifest.shards.iter().enumerate() {
            let same = i == usize::from(c.index);
            if !ctx.healthy.get(i).copied().unwrap_or(false) {
                continue;
            }
            let Some(info) = l.chunkserver.and_then(|cs| servers.get(&cs)) else {
                continue;
            };
            let rank = if same {
                0
            } else if info.state == ChunkserverState::Up {
                1
            } else {
                2
            };
            sources.push((
                rank,
                RepairSource {
                    index: i as u8,
                    shard: l.shard,
                    addr: info.addr.clone(),
                    blake3: l.blake3,
                },
            ));
        }
        sources.sort_by_key(|(r, s)| (*r, s.index));
        s.next_task += 1;
        s.next_seq += 1;
        let (id, seq) = (s.next_task, s.next_seq);
        let task = RepairTask {
            task: id,
            bucket: ctx.bucket.clone(),
            key: ctx.key.clone(),
            version: ctx.version,
            stripe: ctx.stripe,
            stripe_id: ctx.manifest.id,
            ec: ctx.ec,
            shard_len,
            index: c.index,
            shard: loc.shard,
            blake3: loc.blake3,
            from: loc.chunkserver,
            sources: sources.into_iter().map(|(_, s)| s).collect(),
            redundancy: c.redundancy,
        };
        s.records.push_back(RepairRecord {
            seq,
            redundancy: c.redundancy,
            bucket: ctx.bucket.clone(),
            key: ctx.key.clone(),
            stripe: ctx.stripe,
            index: c.index,
            to: target,
            outcome: "dispatched".into(),
        });
        while s.records.len() > MAX_RECORDS {
            s.records.pop_front();
        }
        s.busy.insert(skey, id);
        s.in_flight.insert(
            id,
            InFlight {
                task,
                target,
                deadline: now + cfg.task_timeout,
                sent: None,
                planned: now,
                seq,
            },
        );
        *load.entry(target).or_insert(0) += 1;
        stripe_targets
            .entry((ctx.version, ctx.stripe))
            .or_default()
            .push((c.index, target));
        summary.waiting = summary.waiting.saturating_sub(1);
    }
    summary.active |= !s.in_flight.is_empty() || draining_left;
    summary.last_plan_ms = Some(wall);
    let unrecoverable = summary.unrecoverable;
    s.summary = summary;
    s.last_full = Some(now);
    Ok(PassResult {
        clear_bad,
        unrecoverable,
    })
}

/// The planner worker: leader only; a pass every second while anything is
/// degraded, draining or in flight (or right after a trigger), otherwise
/// when chunkserver states or the queues change, and every 30 s.
pub struct Planner {
    node: Arc<MetaNode>,
    last_unrecoverable: u64,
    passes: u64,
}

impl Planner {
    /// A planner for `node`.
    pub fn new(node: Arc<MetaNode>) -> Self {
        Planner {
            node,
            last_unrecoverable: 0,
            passes: 0,
        }
    }

    /// A cheap summary of what would change a plan: chunkserver states, the
    /// sizes of the bad and repair tables, the number of objects.
    fn fingerprint(txn: &redb::ReadTransaction) -> Result<u64, redb::Error> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for c in model::chunkservers(txn)? {
            (c.id, c.state as u8).hash(&mut h);
        }
        for t in [model::BAD, model::REPAIR, model::OBJECTS] {
            model::table_len(txn, t)?.hash(&mut h);
        }
        Ok(h.finish())
    }
}

impl Worker for Planner {
    fn name(&self) -> String {
        "repair-planner".into()
    }

    fn status(&self) -> String {
        let repairs = self.node.repairs();
        match repairs.state.lock() {
            Ok(s) if s.term.is_some() => format!(
                "{} passes, {} waiting, {} in flight, {} done",
                self.passes,
                s.summary.waiting,
                s.in_flight.len(),
                s.done
            ),
            _ => "not leader".into(),
        }
    }

    fn work(&mut self) -> BoxFuture<'_, Result<WorkerState, String>> {
        Box::pin(async move {
            let node = self.node.clone();
            let m = node.raft().metrics().borrow().clone();
            let repairs = node.repairs();
            if m.current_leader != Some(node.id()) {
                if let Ok(mut s) = repairs.state.lock() {
                    if s.term.is_some() {
                        s.reset(None);
                    }
                }
                return Ok(WorkerState::Throttled(Duration::from_millis(500)));
            }
            let term = m.current_term;
            let due = match repairs.state.lock() {
                Ok(mut s) => {
                    if s.term != Some(term) {
                        s.reset(Some(term));
                    }
                    s.triggered
                        || s.summary.active
                        || s.last_full.is_none_or(|t| t.elapsed() >= FULL_PASS_EVERY)
                }
                Err(_) => true,
            };
            let fp = node
                .read(Self::fingerprint)
                .await
                .map_err(|e| e.to_string())?;
            let changed = repairs
                .state
                .lock()
                .map(|mut s| std::mem::replace(&mut s.fingerprint, fp) != fp)
                .unwrap_or(true);
            if !due && !changed {
                return Ok(WorkerState::Idle);
            }
            let db = node.state_db();
            let r2 = node.repairs_arc();
            let res = tokio::task::spawn_blocking(move || plan_pass(&db, &r2, term))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            self.passes += 1;
            if res.unrecoverable != self.last_unrecoverable {
                if res.unrecoverable > 0 {
                    tracing::error!(
                        stripes = res.unrecoverable,
                        "stripes have fewer than k healthy shards: unrecoverable unless a chunkserver returns"
                    );
                }
                self.last_unrecoverable = res.unrecoverable;
            }
            for (cs, shards) in res.clear_bad {
                node.write(Command::ClearBadShards {
                    chunkserver: cs,
                    shards,
                })
                .await
                .map_err(|e| e.to_string())?;
            }
            Ok(WorkerState::Idle)
        })
    }

    fn wait_for_work(&mut self) -> BoxFuture<'_, ()> {
        let repairs = self.node.repairs_arc();
        Box::pin(async move {
            let _ = tokio::time::timeout(ACTIVE_EVERY, repairs.wake.notified()).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(id: u64, zone: &str) -> ChunkserverInfo {
        ChunkserverInfo {
            id,
            addr: format!("cs{id}"),
            zone: zone.into(),
            capacity: 1,
            free: 1,
            used: 0,
            shard_count: 0,
            last_heartbeat_ms: 0,
            state: ChunkserverState::Up,
        }
    }

    /// Redundancy counts distinct chunkservers within the zone cap, and the
    /// shards breaking the invariant are the ones to move.
    #[test]
    fn redundancy_counts_distinct_failure_domains() {
        let all: Vec<ChunkserverInfo> = (1..=6u64)
            .map(|id| cs(id, &format!("z{}", (id - 1) / 2)))
            .collect();
        let rules = model::PlacementRules::new(&all);
        let ec = EcParams { k: 4, m: 2 };
        let on = |v: &[u64]| -> Vec<Option<ChunkserverId>> {
            v.iter().map(|c| (*c != 0).then_some(*c)).collect()
        };
        assert_eq!(redundancy(&rules, ec, &on(&[1, 2, 3, 4, 5, 6])), 2);
        assert_eq!(redundancy(&rules, ec, &on(&[1, 2, 3, 4, 5, 0])), 1);
        // Two shards on chunkserver 2 count once.
        assert_eq!(redundancy(&rules, ec, &on(&[1, 2, 3, 4, 5, 2])), 1);
        assert_eq!(must_move(&rules, ec, &on(&[1, 2, 3, 4, 5, 2])), vec![5]);
        // All six on one server: readable, but one loss away from lost.
        assert_eq!(redundancy(&rules, ec, &on(&[1, 1, 1, 1, 1, 1])), 0);
        assert_eq!(
            must_move(&rules, ec, &on(&[1, 1, 1, 1, 1, 1])),
            vec![1, 2, 3, 4, 5]
        );
        // Below k: lost, negative.
        assert_eq!(redundancy(&rules, ec, &on(&[1, 2, 3, 0, 0, 0])), -1);
        assert!(must_move(&rules, ec, &on(&[1, 2, 3, 4, 5, 6])).is_empty());
    }
}
