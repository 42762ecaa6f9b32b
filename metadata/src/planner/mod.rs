//! The leader's repair planner: finds stripes that lost shards and tells
//! chunkservers to rebuild them, most urgent first.
//!
//! # Finding work
//! A round reads the leader's local state machine (no linearizable read is
//! needed: every repair commits through Raft with a condition) and finds
//! work from the damage alone ([`scan`]): the shards placed on damaged
//! chunkservers (a page of the reverse shard index, resumable), the `bad`
//! table and the repair queue, at most [`scan::PAGE`] rows per round. It
//! never walks the manifests: each row names its stripe, whose manifest is
//! one point read.
//!
//! # What counts as lost
//! A shard is *lost* when its `ShardLoc` names no
//! chunkserver (never written), its chunkserver is `Down` or unknown (or
//! `Draining` and silent for longer than the down timeout), the pair
//! (chunkserver, shard) is in the `bad` table (a scrub or read found it
//! corrupt or missing), or a repair-queue item names it for the manifest's
//! version. `Suspect` counts as healthy: it may come back. A shard on a
//! `Draining` chunkserver is healthy for redundancy but must be *moved*.
//!
//! # Priority
//! A stripe's redundancy ([`redundancy`]) is how many more losses it
//! survives. Within the stripes a round discovered, shards to rebuild are
//! dispatched by redundancy ascending, moves off draining chunkservers
//! last (a failure larger than a page is planned page by page, so priority
//! holds within each page). When the most urgent shard cannot be placed
//! because every possible target is at its concurrency limit, no less
//! urgent shard is dispatched in that round, so a stripe at -2 never
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
//! Everything here is leader memory, reset when the term changes (a new
//! leader starts discovery over). A round costs O(page + chunkservers): a
//! failure touches only the stripes it affects, and a round with nothing
//! damaged reads no manifest. Rounds run every second while anything is
//! degraded, draining, in flight or a discovery cycle is unfinished, and
//! otherwise when chunkserver states, free space (whole percents) or table
//! sizes change, and every 30 s.
//! The context it leads through is [`LeaderCtx`] (`crate::leader`), so
//! this module never imports the node. Shards of multipart uploads still in
//! progress are not repaired (only committed manifests are); their bad
//! reports are kept.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::leader::{read_db, ApiError, LeaderCtx};
use crate::model;
use crate::types::*;
use crate::worker::{BoxFuture, Worker, WorkerState};

mod dispatch;
mod rebalance;
pub mod scan;

/// Dispatch records kept for `cairn admin status` and tests.
pub(crate) const MAX_RECORDS: usize = 10_000;
/// Records returned in a [`ClusterStatus`].
const STATUS_RECORDS: usize = 2_000;
/// Candidate shards kept per pass (the most urgent); the rest wait for the
/// next pass. Bounds the planner's memory whatever the cluster size.
pub(crate) const MAX_CANDIDATES: usize = 8_192;
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
pub(crate) type ShardKey = (StripeId, u64, u8);
/// A stripe of an object version.
pub(crate) type StripeKey = (StripeId, u64);

/// Planner settings (the node builds them from its `MetaConfig`).
#[derive(Debug, Clone, Copy)]
pub struct PlannerConfig {
    /// Tasks queued or running per target chunkserver.
    pub per_chunkserver: usize,
    /// A dispatched task not reported within this is forgotten.
    pub task_timeout: Duration,
    /// A draining chunkserver silent this long counts as down.
    pub silent_after: Duration,
}

pub(crate) struct InFlight {
    task: RepairTask,
    target: ChunkserverId,
    deadline: Instant,
    /// When a heartbeat reply carried it (`None`: waiting for one).
    sent: Option<Instant>,
    /// When the planner dispatched it (for the measured repair rate).
    planned: Instant,
    seq: u64,
    /// A rebalancing move ([`rebalance`]), not a repair.
    rebalance: bool,
}

/// What the last complete discovery cycle saw.
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
pub(crate) struct State {
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
    /// The damage-discovery cycle in progress.
    cycle: scan::Cycle,
    triggered: bool,
    fingerprint: u64,
    last_full: Option<Instant>,
    rebalance: rebalance::Rebalance,
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

    /// A fresh task id.
    fn next_task_id(&mut self) -> u64 {
        self.next_task += 1;
        self.next_task
    }

    /// Records `task` as dispatched to `target` (a repair, or a
    /// rebalancing move): in flight until its report or `timeout`, its
    /// shard busy, a dispatch record for the status.
    fn track(
        &mut self,
        task: RepairTask,
        target: ChunkserverId,
        rebalance: bool,
        timeout: Duration,
        now: Instant,
    ) {
        self.next_seq += 1;
        let seq = self.next_seq;
        let outcome = if rebalance {
            "dispatched (rebalance)"
        } else {
            "dispatched"
        };
        self.records.push_back(RepairRecord {
            seq,
            redundancy: task.redundancy,
            bucket: task.bucket.clone(),
            key: task.key.clone(),
            stripe: task.stripe,
            index: task.index,
            to: target,
            outcome: outcome.into(),
        });
        while self.records.len() > MAX_RECORDS {
            self.records.pop_front();
        }
        self.busy
            .insert((task.version, task.stripe, task.index), task.task);
        self.in_flight.insert(
            task.task,
            InFlight {
                task,
                target,
                deadline: now + timeout,
                sent: None,
                planned: now,
                seq,
                rebalance,
            },
        );
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
            let mut moved = false;
            if ours {
                if let Some(f) = s.in_flight.remove(&task.task) {
                    s.set_outcome(f.seq, outcome.as_str());
                    let bytes = match outcome {
                        Outcome::Committed => f.task.shard_len,
                        Outcome::Stale | Outcome::Failed => 0,
                    };
                    if f.rebalance {
                        // Moves are not repairs: kept out of the measured
                        // repair rate and the repair counts.
                        moved = true;
                        if bytes > 0 {
                            s.rebalance.moved += 1;
                            s.rebalance.moved_bytes += bytes;
                        }
                    } else {
                        s.note_finished(f.planned, now, bytes);
                    }
                }
                if s.busy.get(&key) == Some(&task.task) {
                    s.busy.remove(&key);
                }
                s.finished.insert(key);
            }
            match outcome {
                Outcome::Committed if moved => {}
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
        let (summary, in_flight, done, rate, records, measured, rebalance) = match self.state.lock()
        {
            Ok(s) => {
                let recent = s
                    .commits
                    .iter()
                    .filter(|t| now.duration_since(**t) <= Duration::from_secs(60))
                    .count();
                let skip = s.records.len().saturating_sub(STATUS_RECORDS);
                (
                    s.summary.clone(),
                    s.in_flight.values().filter(|f| !f.rebalance).count() as u64,
                    s.done,
                    recent as f64 / 60.0,
                    s.records.iter().skip(skip).cloned().collect(),
                    (s.repaired_bytes, s.repair_busy.as_secs_f64()),
                    RebalanceStatus {
                        in_flight: s.in_flight.values().filter(|f| f.rebalance).count() as u64,
                        moved: s.rebalance.moved,
                        moved_bytes: s.rebalance.moved_bytes,
                        ..s.rebalance.status.clone()
                    },
                )
            }
            Err(_) => (
                Summary::default(),
                0,
                0,
                0.0,
                Vec::new(),
                (0, 0.0),
                RebalanceStatus::default(),
            ),
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
            rebalance,
        }
    }
}

/// Commits the repairs `cs` reports (one Raft entry for all of them) and
/// records every outcome.
pub async fn handle_reports(
    ctx: &dyn LeaderCtx,
    repairs: &Repairs,
    cs: ChunkserverId,
    reports: &[RepairReport],
) -> Result<(), ApiError> {
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
    let results = match ctx.submit(Command::Batch { cmds }).await? {
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

/// What a round leaves for the async part of the worker (and for tests).
pub(crate) struct RoundResult {
    /// Bad rows no committed row places any more: to clear.
    pub(crate) clear_bad: BTreeMap<ChunkserverId, Vec<ShardId>>,
    /// Unrecoverable stripes of the last complete cycle.
    pub(crate) unrecoverable: u64,
    /// Rows the round read.
    pub(crate) reads: scan::Reads,
    /// The round completed a discovery cycle (and published its summary).
    pub(crate) complete: bool,
    /// Tasks the round dispatched.
    pub(crate) dispatched: u64,
}

impl RoundResult {
    fn empty() -> Self {
        RoundResult {
            clear_bad: BTreeMap::new(),
            unrecoverable: 0,
            reads: scan::Reads::default(),
            complete: false,
            dispatched: 0,
        }
    }
}

/// Drops tasks past their deadline (backing their stripe off) and tasks
/// whose target can no longer finish them; returns the shards still busy
/// and the stripes backing off.
fn expire(
    s: &mut State,
    alive: &HashSet<ChunkserverId>,
    now: Instant,
) -> (HashSet<ShardKey>, HashSet<StripeKey>) {
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
    (s.busy.keys().copied().collect(), backoff)
}

/// One planning round over a read transaction (blocking: run it on the
/// blocking pool): expire tasks, read at most `budget` rows of the damage
/// sources (see [`scan`]), dispatch what they name, and publish the
/// summary when the discovery cycle is complete.
pub(crate) fn plan_round(
    db: &redb::Database,
    repairs: &Repairs,
    term: u64,
    wall: u64,
    budget: usize,
) -> Result<RoundResult, redb::Error> {
    use redb::ReadableDatabase;
    let cfg = repairs.cfg;
    let now = Instant::now();
    let poisoned = || redb::Error::Corrupted("planner state poisoned".into());
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
    // finishing during the round is seen in `finished`.
    let (busy, backoff, mut cycle) = {
        let mut s = repairs.state.lock().map_err(|_| poisoned())?;
        if s.term != Some(term) {
            return Ok(RoundResult::empty());
        }
        let (busy, backoff) = expire(&mut s, &alive, now);
        (busy, backoff, std::mem::take(&mut s.cycle))
    };
    cycle.started_ms.get_or_insert(wall);

    let txn = db.begin_read()?;
    let mut reads = scan::Reads::default();
    let silent_ms = cfg.silent_after.as_millis() as u64;
    let env = scan::Env::new(&txn, wall, silent_ms, &mut reads)?;
    let found = scan::discover(&txn, &env, &mut cycle, budget, &busy, &backoff, &mut reads)?;
    // Published with a complete cycle: per-bucket usage and the histogram
    // from the counters `apply` keeps (one row per bucket) and the cycle.
    let published = if found.complete {
        let stats = crate::stats::all(&txn)?;
        let redundancy = scan::histogram(&txn, &cycle, &stats)?;
        Some((stats, redundancy))
    } else {
        None
    };

    let mut s = repairs.state.lock().map_err(|_| poisoned())?;
    if s.term != Some(term) {
        return Ok(RoundResult::empty());
    }
    let had_cands = !found.cands.is_empty();
    let dispatched = dispatch::dispatch(&txn, &env, cfg, &mut s, found.cands, now)?;
    cycle.waiting = cycle.waiting.saturating_sub(dispatched);
    // Moves only while nothing needs repair (found this round, in this
    // cycle, or in flight).
    let repairs_pending = had_cands
        || cycle.degraded
        || cycle.draining_left
        || s.in_flight.values().any(|f| !f.rebalance);
    let moving = rebalance::plan(&txn, &env, cfg, &mut s, repairs_pending, now)?;
    let in_flight = !s.in_flight.is_empty();
    if let Some((stats, redundancy)) = published {
        let mut summary = Summary {
            redundancy,
            waiting: cycle.waiting,
            unrecoverable: cycle.unrecoverable,
            last_plan_ms: cycle.started_ms,
            ..Summary::default()
        };
        for (b, st) in stats {
            summary.objects += st.objects;
            summary.bytes += st.bytes;
            let u = BucketUsage {
                objects: st.objects,
                bytes: st.bytes,
                stripes: st.stripes,
            };
            summary.buckets.insert(b, u);
        }
        summary.active = cycle.degraded || cycle.draining_left || in_flight || moving;
        s.summary = summary;
        s.cycle = scan::Cycle::default();
    } else {
        // Mid-cycle: keep the last published figures, plan again soon.
        s.summary.active = true;
        s.cycle = cycle;
    }
    s.last_full = Some(now);
    Ok(RoundResult {
        clear_bad: found.clear_bad,
        unrecoverable: s.summary.unrecoverable,
        reads,
        complete: found.complete,
        dispatched,
    })
}

/// The planner worker: leader only; a round every second while anything is
/// degraded, draining, in flight or a discovery cycle is unfinished (or
/// right after a trigger), otherwise when chunkserver states or the queues
/// change, and every 30 s.
pub struct Planner {
    ctx: Arc<dyn LeaderCtx>,
    repairs: Arc<Repairs>,
    last_unrecoverable: u64,
    rounds: u64,
    /// Rows the last round read.
    last_reads: scan::Reads,
}

impl Planner {
    /// A planner leading through `ctx`, keeping its state in `repairs`.
    pub fn new(ctx: Arc<dyn LeaderCtx>, repairs: Arc<Repairs>) -> Self {
        Planner {
            ctx,
            repairs,
            last_unrecoverable: 0,
            rounds: 0,
            last_reads: scan::Reads::default(),
        }
    }

    /// A cheap summary of what would change a plan: chunkserver states and
    /// free space (whole percents), the sizes of the bad and repair tables,
    /// the number of objects (redb keeps table lengths: O(chunkservers)).
    fn fingerprint(txn: &redb::ReadTransaction) -> Result<u64, redb::Error> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for c in model::chunkservers(txn)? {
            // Free space in whole percents of capacity: a chunkserver
            // filling or emptying (the rebalancer's input) wakes a round.
            let free_pct = (u128::from(c.free) * 100)
                .checked_div(u128::from(c.capacity))
                .unwrap_or(0);
            (c.id, c.state as u8, free_pct).hash(&mut h);
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
        match self.repairs.state.lock() {
            Ok(s) if s.term.is_some() => format!(
                "{} rounds, {} waiting, {} in flight, {} done; last round read {} rows, {} manifests",
                self.rounds,
                s.summary.waiting,
                s.in_flight.len(),
                s.done,
                self.last_reads.index_rows + self.last_reads.bad_rows + self.last_reads.items,
                self.last_reads.manifests
            ),
            _ => "not leader".into(),
        }
    }

    fn work(&mut self) -> BoxFuture<'_, Result<WorkerState, String>> {
        Box::pin(async move {
            let repairs = self.repairs.clone();
            let Some(term) = self.ctx.leading_term() else {
                if let Ok(mut s) = repairs.state.lock() {
                    if s.term.is_some() {
                        s.reset(None);
                    }
                }
                return Ok(WorkerState::Throttled(Duration::from_millis(500)));
            };
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
            let db = self.ctx.state_db();
            let fp = read_db(db.clone(), Self::fingerprint)
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
            let wall = self.ctx.now_ms();
            let r2 = repairs.clone();
            let res =
                tokio::task::spawn_blocking(move || plan_round(&db, &r2, term, wall, scan::PAGE))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
            self.rounds += 1;
            self.last_reads = res.reads;
            tracing::debug!(
                reads = ?res.reads,
                dispatched = res.dispatched,
                cycle_complete = res.complete,
                "repair planning round"
            );
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
                self.ctx
                    .submit(Command::ClearBadShards {
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
        let repairs = self.repairs.clone();
        Box::pin(async move {
            let _ = tokio::time::timeout(ACTIVE_EVERY, repairs.wake.notified()).await;
        })
    }
}

#[cfg(test)]
mod tests;
