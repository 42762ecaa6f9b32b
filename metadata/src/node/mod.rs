//! A metadata node: the composition root that opens the Raft stores, starts
//! Raft and the HTTP API, and runs the leader's chunkserver failure
//! detector. Wire-up order lives here in one place: config, storage,
//! network, `Raft::new`, API.
//!
//! # Layout
//! - this file: config, the composition root, group commit and read
//!   batching, and `impl LeaderCtx for MetaNode` (what the planner sees);
//! - `api`: HTTP routing, Raft status and membership, readiness, `/metrics`;
//! - `heartbeat`: heartbeats, inventories, the cluster status;
//! - `workers`: the failure detector and the write-intent reaper.
//!
//! # HTTP API (all `POST`, JSON, a credential required)
//! Every call carries the cluster secret or a role token
//! ([`crate::auth`]); each endpoint, command and query is authorized by the
//! caller's verified role (403 `Forbidden` otherwise, nothing changed).
//! - `/v1/write`: a [`Command`] through Raft -> [`CommandResult`]
//! - `/v1/read[?stale=1]`: a [`Query`] -> [`QueryResult`], linearizable
//!   unless `stale=1`
//! - `/v1/heartbeat`: [`HeartbeatRequest`] -> [`HeartbeatResponse`]
//! - `/v1/status`: this node's [`RaftStatus`]
//! - `/v1/inventory`: an [`InventoryPage`] of a chunkserver (leader only) ->
//!   [`InventoryReply`](crate::orphans::InventoryReply); see
//!   [`crate::orphans`]
//! - `/v1/admin/cluster`: the leader's [`ClusterStatus`] (repair planner,
//!   queues, scrub progress; leader only)
//! - `/v1/admin/workers`: this node's background workers
//!   ([`WorkerInfo`](crate::worker::WorkerInfo) list)
//! - `/v1/admin/init`, `/v1/admin/add-node`, `/v1/admin/remove-node`:
//!   membership changes
//! - `/raft/append`, `/raft/vote`, `/raft/snapshot`: Raft RPCs
//!
//! Without the secret, `GET /metrics` (Prometheus), `/health/live` and
//! `/health/ready` (200 when this node knows a leader, else 503) are
//! served; see [`crate::metrics`].
//!
//! A node that must be the leader and is not answers 421 with the leader's
//! address in the error body; clients retry there.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Request;
use hyper::body::Incoming;
use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::absent::Absent;
use crate::disk::DiskGuard;
use crate::leader::{read_db, LeaderCtx};
use crate::metrics::MetaMetrics;
use crate::model;
use crate::net::{self, HttpClient, ServerOptions};
use crate::orphans::{OrphanConfig, Orphans};
use crate::planner::{Planner, PlannerConfig, Repairs};
use crate::raft::{self, Raft};
use crate::types::*;
use crate::worker::{BoxFuture, WorkerRunner};

mod api;
mod heartbeat;
mod workers;

pub(crate) use crate::leader::now_ms;
pub use crate::leader::ApiError;

/// Settings of a metadata node. Its `Debug` leaves the secret out.
#[derive(Clone)]
pub struct MetaConfig {
    /// This node's Raft id (>= 1).
    pub id: NodeId,
    /// Where its Raft log and state machine live.
    pub data_dir: PathBuf,
    /// The address peers and clients reach it at (its API address).
    pub advertise: String,
    /// Shared secret of the cluster.
    pub secret: String,
    /// Raft heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Raft election timeout range (min).
    pub election_timeout_min: Duration,
    /// Raft election timeout range (max).
    pub election_timeout_max: Duration,
    /// Build a snapshot every this many log entries at least (see
    /// `snapshot_log_ratio`).
    pub snapshot_every: u64,
    /// A snapshot is also held back until the log appended since the last
    /// one reaches this fraction of the last snapshot's size, so a large
    /// state is not rewritten every `snapshot_every` entries; 0 snapshots
    /// every `snapshot_every` entries whatever the sizes.
    pub snapshot_log_ratio: f64,
    /// Log entries kept behind a snapshot (a follower further behind gets
    /// the snapshot).
    pub keep_logs: u64,
    /// A chunkserver silent this long becomes `Suspect` (no new shards).
    pub suspect_after: Duration,
    /// A chunkserver silent this long becomes `Down` (its shards are lost).
    pub down_after: Duration,
    /// Write a chunkserver's stats to the log at most this often.
    pub stats_every: Duration,
    /// Orphan GC: grace period and inventory interval.
    pub orphans: OrphanConfig,
    /// Repair tasks queued or running per target chunkserver.
    pub repair_per_chunkserver: usize,
    /// A repair task not reported within this is forgotten and re-planned.
    pub repair_task_timeout: Duration,
    /// A shard queued for deletion is handed to its chunkserver only this
    /// long after it was queued, so reads and copies already streaming the
    /// old version finish (Garage waits 10 min; Ceph 2 h).
    pub gc_delay: Duration,
    /// Free bytes kept on the data dir's file system: below them the node
    /// refuses writes that would grow its stores ([`crate::disk`]).
    pub disk_reserve: u64,
    /// The key-encryption key S3 secrets are sealed under
    /// (`--secrets-key-file`, the same on every node); without it the node
    /// refuses to store or hand out S3 secrets ([`crate::secrets`]).
    pub secrets_key: Option<crate::secrets::SecretsKey>,
}

/// Default [`MetaConfig::snapshot_log_ratio`]: the log may grow to a
/// quarter of the state before a snapshot, so snapshots cost at most 4
/// bytes written per byte of log, and the log's disk at most a quarter of
/// the state's.
pub const DEFAULT_SNAPSHOT_LOG_RATIO: f64 = 0.25;

/// Default [`MetaConfig::gc_delay`]: 10 minutes, as Garage.
pub const DEFAULT_GC_DELAY: Duration = Duration::from_secs(600);

impl std::fmt::Debug for MetaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaConfig")
            .field("id", &self.id)
            .field("data_dir", &self.data_dir)
            .field("advertise", &self.advertise)
            .field("secret", &"<redacted>")
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("election_timeout_min", &self.election_timeout_min)
            .field("election_timeout_max", &self.election_timeout_max)
            .field("snapshot_every", &self.snapshot_every)
            .field("snapshot_log_ratio", &self.snapshot_log_ratio)
            .field("keep_logs", &self.keep_logs)
            .field("suspect_after", &self.suspect_after)
            .field("down_after", &self.down_after)
            .field("stats_every", &self.stats_every)
            .field("orphans", &self.orphans)
            .field("repair_per_chunkserver", &self.repair_per_chunkserver)
            .field("repair_task_timeout", &self.repair_task_timeout)
            .field("gc_delay", &self.gc_delay)
            .field("disk_reserve", &self.disk_reserve)
            .field("secrets_key", &self.secrets_key)
            .finish()
    }
}

impl MetaConfig {
    /// Defaults suited to a LAN.
    pub fn new(id: NodeId, data_dir: PathBuf, advertise: String, secret: String) -> Self {
        MetaConfig {
            id,
            data_dir,
            advertise,
            secret,
            heartbeat_interval: Duration::from_millis(200),
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
            snapshot_every: 10_000,
            snapshot_log_ratio: DEFAULT_SNAPSHOT_LOG_RATIO,
            keep_logs: 1_000,
            suspect_after: Duration::from_secs(6),
            down_after: Duration::from_secs(30),
            stats_every: Duration::from_secs(5),
            orphans: OrphanConfig::default(),
            repair_per_chunkserver: 4,
            repair_task_timeout: Duration::from_secs(120),
            gc_delay: DEFAULT_GC_DELAY,
            disk_reserve: crate::disk::DEFAULT_RESERVE_MIB << 20,
            secrets_key: None,
        }
    }
}

/// A metadata node could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start metadata node: {0}")]
pub struct StartError(pub String);

/// Body of `/v1/admin/init`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitRequest {
    /// The initial voters and their addresses.
    pub members: BTreeMap<NodeId, String>,
}

/// Body of `/v1/admin/add-node`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddNodeRequest {
    /// The new node's id.
    pub id: NodeId,
    /// Its address.
    pub addr: String,
}

/// Body of `/v1/admin/remove-node`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveNodeRequest {
    /// The node to remove from the voters.
    pub id: NodeId,
}

/// The leader's in-memory view of chunkserver liveness. Not replicated: a
/// new leader starts every clock afresh at its election, which only delays
/// a `Down` verdict by one timeout.
#[derive(Default)]
struct Liveness {
    term: u64,
    since: Option<Instant>,
    last_seen: HashMap<ChunkserverId, Instant>,
    last_stats: HashMap<ChunkserverId, Instant>,
}

/// A running metadata node: Arc handles built once at start-up.
pub struct MetaNode {
    cfg: MetaConfig,
    raft: Raft,
    batcher: tokio::sync::mpsc::Sender<Pending>,
    /// Linearizable reads waiting for the next shared leadership check.
    reads: tokio::sync::mpsc::Sender<ReadWaiter>,
    sm: Arc<redb::Database>,
    liveness: Mutex<Liveness>,
    orphans: Orphans,
    /// Named-but-absent checks in progress.
    absent: Absent,
    /// The background workers, set when serving starts.
    workers: std::sync::OnceLock<WorkerRunner>,
    /// The repair planner's state (leader memory).
    repairs: Arc<Repairs>,
    /// What `/metrics` exports.
    metrics: Arc<MetaMetrics>,
    /// The data dir's free-space reserve.
    disk: DiskGuard,
    /// Verifies callers' credentials (the cluster secret or role tokens).
    authority: crate::auth::Authority,
}

/// A linearizable read waiting for a leadership check.
type ReadWaiter = tokio::sync::oneshot::Sender<Result<(), ApiError>>;

/// Most reads answered by one leadership check.
const MAX_READ_BATCH: usize = 4096;

/// Linearizable reads share leadership checks (read batching, the read-side
/// twin of group commit): one `ensure_linearizable` round (a heartbeat to a
/// quorum, then waiting for the read index to be applied) answers every
/// read that was waiting when the round *started*. A read that arrives
/// during a round waits for the next one, so every check a read relies on
/// began after the read arrived: linearizable, at one quorum round trip per
/// batch instead of per read.
async fn read_barrier_loop(raft: Raft, mut rx: tokio::sync::mpsc::Receiver<ReadWaiter>) {
    while let Some(first) = rx.recv().await {
        let mut waiters = vec![first];
        while waiters.len() < MAX_READ_BATCH {
            match rx.try_recv() {
                Ok(w) => waiters.push(w),
                Err(_) => break,
            }
        }
        let r = match raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(ApiError::NotLeader(f.leader_node.map(|n| n.addr)))
            }
            Err(e) => Err(ApiError::Unavailable(e.to_string())),
        };
        for w in waiters {
            let _ = w.send(r.clone());
        }
    }
}

/// A client write waiting to be proposed, with its encoded size in bytes.
type Pending = (
    Command,
    usize,
    tokio::sync::oneshot::Sender<Result<CommandResult, ApiError>>,
);

/// Most client writes proposed as one log entry.
const MAX_BATCH: usize = 256;

/// Most bytes of client writes (as they arrived, JSON) gathered into one
/// log entry: a single write may be larger (up to the API's body limit),
/// but it is then proposed alone, never joined by others.
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// Proposals in flight at once. While they are, new writes queue up and
/// form the next batch: group commit that grows with load, one fsync per
/// batch instead of one per write.
const PROPOSALS_IN_FLIGHT: usize = 2;

/// Proposes one log entry, stamped with this (the leader's) clock: the time
/// every command of the entry sees in `apply` ([`Command::At`]).
async fn propose(raft: &Raft, cmd: Command) -> Result<CommandResult, ApiError> {
    let cmd = Command::At {
        now_ms: now_ms(),
        inner: Box::new(cmd),
    };
    match raft.client_write(cmd).await {
        Ok(r) => Ok(r.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(ApiError::NotLeader(f.leader_node.map(|n| n.addr)))
        }
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}

/// Collects concurrent client writes into `Command::Batch` entries. Ends
/// when the node (the only sender) is dropped.
async fn batch_loop(
    raft: Raft,
    mut rx: tokio::sync::mpsc::Receiver<Pending>,
    metrics: Arc<MetaMetrics>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(PROPOSALS_IN_FLIGHT));
    // A write that would have overflowed the previous batch starts the next.
    let mut held: Option<Pending> = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match held.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut bytes = first.1;
        let mut batch = vec![(first.0, first.2)];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) if bytes + p.1 > MAX_BATCH_BYTES => {
                    held = Some(p);
                    break;
                }
                Ok(p) => {
                    bytes += p.1;
                    batch.push((p.0, p.2));
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            metrics.batch_size.observe(batch.len() as f64);
            let started = Instant::now();
            if batch.len() == 1 {
                if let Some((cmd, tx)) = batch.pop() {
                    let r = propose(&raft, cmd).await;
                    metrics
                        .commit_latency
                        .observe(started.elapsed().as_secs_f64());
                    let _ = tx.send(r);
                }
                return;
            }
            let (cmds, txs): (Vec<Command>, Vec<_>) = batch.into_iter().unzip();
            let n = cmds.len();
            let r = propose(&raft, Command::Batch { cmds }).await;
            metrics
                .commit_latency
                .observe(started.elapsed().as_secs_f64());
            match r {
                Ok(CommandResult::Batch(results)) if results.len() == n => {
                    for (tx, r) in txs.into_iter().zip(results) {
                        let _ = tx.send(Ok(r));
                    }
                }
                Ok(other) => {
                    let e = ApiError::Internal(format!("batch answered {other:?}"));
                    for tx in txs {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    for tx in txs {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

/// Snapshot cadence by state size: every second, builds a snapshot once at
/// least `every` entries were applied since the last one AND the log this
/// process appended since the last trigger reaches `ratio` times the last
/// snapshot file's size. The cost of snapshots then follows the writes,
/// not the state: a state of S bytes is rewritten once per `ratio * S`
/// bytes of log, instead of once per `every` entries. The byte count
/// starts at 0 when the process starts (entries appended before a restart
/// are not counted: at most one interval is stretched). Ends with Raft.
async fn snapshot_cadence_loop(
    raft: Raft,
    appended: Arc<std::sync::atomic::AtomicU64>,
    snapshot_file: PathBuf,
    every: u64,
    ratio: f64,
) {
    let mut bytes_at_last = 0u64;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let m = raft.metrics().borrow().clone();
        if m.running_state.is_err() {
            return;
        }
        let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
        let snap = m.snapshot.map(|l| l.index).unwrap_or(0);
        if applied.saturating_sub(snap) < every.max(1) {
            continue;
        }
        let now = appended.load(std::sync::atomic::Ordering::Relaxed);
        let state_bytes = tokio::fs::metadata(&snapshot_file)
            .await
            .map(|md| md.len())
            .unwrap_or(0);
        let log_bytes = now.saturating_sub(bytes_at_last);
        if !snapshot_due(applied - snap, every, log_bytes, state_bytes, ratio) {
            continue;
        }
        tracing::info!(
            applied,
            since = applied - snap,
            log_bytes,
            state_bytes,
            "building a snapshot"
        );
        bytes_at_last = now;
        if raft.trigger().snapshot().await.is_err() {
            return;
        }
        // One build at a time: wait until it covers `applied`.
        let _ = raft
            .wait(Some(Duration::from_secs(3600)))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= applied),
                "snapshot built",
            )
            .await;
    }
}

/// Whether a snapshot is due: at least `every` entries since the last one
/// and a log of at least `ratio` times the last snapshot's bytes.
fn snapshot_due(since: u64, every: u64, log_bytes: u64, state_bytes: u64, ratio: f64) -> bool {
    since >= every.max(1) && log_bytes as f64 >= ratio * state_bytes as f64
}

#[cfg(test)]
#[test]
fn snapshot_cadence_follows_the_state_size() {
    // A small state: every `every` entries, as before.
    assert!(snapshot_due(10_000, 10_000, 1 << 20, 1 << 20, 0.25));
    assert!(!snapshot_due(9_999, 10_000, 1 << 30, 1 << 20, 0.25));
    // No snapshot yet: the count alone decides.
    assert!(snapshot_due(10_000, 10_000, 0, 0, 0.25));
    // A 40 GB state waits for 10 GB of log, however many entries.
    let state = 40_000_000_000;
    assert!(!snapshot_due(5_000_000, 10_000, 9_999_999_999, state, 0.25));
    assert!(snapshot_due(5_000_000, 10_000, 10_000_000_000, state, 0.25));
}

impl MetaNode {
    /// Opens the stores and starts Raft (not yet serving).
    pub async fn start(cfg: MetaConfig) -> Result<Arc<MetaNode>, StartError> {
        let err = |what: &str, e: &dyn std::fmt::Display| StartError(format!("{what}: {e}"));
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| err("data dir", &e))?;
        let raft_cfg = openraft::Config {
            cluster_name: "cairn".into(),
            heartbeat_interval: cfg.heartbeat_interval.as_millis() as u64,
            election_timeout_min: cfg.election_timeout_min.as_millis() as u64,
            election_timeout_max: cfg.election_timeout_max.as_millis() as u64,
            // With a ratio, `snapshot_cadence_loop` decides; without, openraft.
            snapshot_policy: if cfg.snapshot_log_ratio > 0.0 {
                openraft::SnapshotPolicy::Never
            } else {
                openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_every)
            },
            max_in_snapshot_log_to_keep: cfg.keep_logs,
            ..Default::default()
        }
        .validate()
        .map_err(|e| err("raft config", &e))?;
        let (log_store, sm_store) = raft::open_stores(&cfg.data_dir)
            .await
            .map_err(|e| err("raft stores", &e))?;
        let sm = sm_store.db();
        let appended = log_store.appended_bytes();
        let network =
            raft::network::NetworkFactory::new(cfg.id, HttpClient::default(), cfg.secret.clone());
        let raft = Raft::new(cfg.id, Arc::new(raft_cfg), network, log_store, sm_store)
            .await
            .map_err(|e| err("raft", &e))?;
        let metrics = Arc::new(MetaMetrics::new());
        let (batcher, rx) = tokio::sync::mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(batch_loop(raft.clone(), rx, metrics.clone()));
        let (reads, rx) = tokio::sync::mpsc::channel(MAX_READ_BATCH * 4);
        tokio::spawn(read_barrier_loop(raft.clone(), rx));
        if cfg.snapshot_log_ratio > 0.0 {
            tokio::spawn(snapshot_cadence_loop(
                raft.clone(),
                appended,
                cfg.data_dir.join(raft::snapshot::SNAPSHOT_FILE),
                cfg.snapshot_every,
                cfg.snapshot_log_ratio,
            ));
        }
        let repairs = Arc::new(Repairs::new(PlannerConfig {
            per_chunkserver: cfg.repair_per_chunkserver.max(1),
            task_timeout: cfg.repair_task_timeout,
            silent_after: cfg.down_after + cfg.stats_every,
        }));
        let disk = DiskGuard::new(&cfg.data_dir, cfg.disk_reserve);
        Ok(Arc::new(MetaNode {
            authority: crate::auth::Authority::new(&cfg.secret),
            disk,
            repairs,
            metrics,
            raft,
            batcher,
            reads,
            sm,
            liveness: Mutex::new(Liveness::default()),
            orphans: Orphans::new(cfg.orphans),
            absent: Absent::default(),
            workers: std::sync::OnceLock::new(),
            cfg,
        }))
    }

    /// The Raft handle.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Serves the API on `listener` until `shutdown`, running the leader's
    /// background workers meanwhile; then shuts Raft down.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let (runner, stop) = WorkerRunner::new();
        let _ = self.workers.set(runner.clone());
        runner.spawn(workers::FailureDetector { node: self.clone() });
        let ctx: Arc<dyn LeaderCtx> = self.clone();
        runner.spawn(Planner::new(ctx, self.repairs.clone()));
        runner.spawn(workers::IntentReaper { node: self.clone() });
        runner.spawn(workers::KeySealer { node: self.clone() });
        let node = self.clone();
        let handler = move |req: Request<Incoming>, _peer: SocketAddr| {
            let node = node.clone();
            async move { node.handle(req).await }
        };
        net::serve(listener, handler, shutdown, ServerOptions::default()).await;
        stop.stop(Duration::from_secs(5)).await;
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }

    /// Initializes a new cluster with `members` (no-op if initialized).
    pub async fn initialize(&self, members: BTreeMap<NodeId, String>) -> Result<(), ApiError> {
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?
        {
            return Ok(());
        }
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .into_iter()
            .map(|(id, addr)| (id, BasicNode { addr }))
            .collect();
        match self.raft.initialize(nodes).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(ApiError::Internal(e.to_string())),
        }
    }

    fn leader_addr(&self) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
    }

    /// This node's Raft id.
    pub fn id(&self) -> NodeId {
        self.cfg.id
    }

    fn is_leader(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.current_leader == Some(self.cfg.id)
    }

    /// Proposes `cmd` and waits until it is committed and applied.
    /// Refused with [`ApiError::StorageFull`] while the data dir is below
    /// its reserve.
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, ApiError> {
        self.disk.check().map_err(ApiError::StorageFull)?;
        propose(&self.raft, cmd).await
    }

    /// Proposes a client's `cmd` through the group-commit batcher.
    async fn client_write(&self, cmd: Command, bytes: usize) -> Result<CommandResult, ApiError> {
        if !self.is_leader() {
            return Err(ApiError::NotLeader(self.leader_addr()));
        }
        self.disk.check().map_err(ApiError::StorageFull)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.batcher
            .send((cmd, bytes, tx))
            .await
            .map_err(|_| ApiError::Unavailable("shutting down".into()))?;
        rx.await
            .map_err(|_| ApiError::Unavailable("write abandoned".into()))?
    }

    /// Waits until this node may serve a linearizable read: joins the next
    /// shared leadership check (see [`read_barrier_loop`]).
    async fn linearize(&self) -> Result<(), ApiError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.reads
            .send(tx)
            .await
            .map_err(|_| ApiError::Unavailable("shutting down".into()))?;
        rx.await
            .map_err(|_| ApiError::Unavailable("shutting down".into()))?
    }

    /// Runs `f` on a read transaction of the state machine, off the reactor.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, redb::Error> + Send + 'static,
    ) -> Result<T, ApiError> {
        read_db(self.sm.clone(), f).await
    }

    /// Answers a query, linearizably unless `stale`, as the cluster secret
    /// would get it (see [`MetaNode::query_as`]).
    pub async fn query(&self, q: Query, stale: bool) -> Result<QueryResult, ApiError> {
        self.query_as(crate::auth::Role::Metadata, q, stale).await
    }

    /// Answers a query for a caller of `role`. S3 secrets leave only in
    /// `GetAccessKey` answers to a role that may read them
    /// ([`crate::auth::may_read_secrets`]), opened with this node's
    /// secrets key, and never for an expired key; every other answer
    /// carrying access keys has their secrets emptied. A secret this node
    /// cannot open (no key file, another key, corrupt) is an error naming
    /// why, never the stored bytes.
    pub async fn query_as(
        &self,
        role: crate::auth::Role,
        q: Query,
        stale: bool,
    ) -> Result<QueryResult, ApiError> {
        if !stale {
            self.linearize().await?;
        }
        let r = self.read(move |txn| model::query(txn, &q)).await?;
        Ok(match r {
            QueryResult::AccessKey(mut k) => {
                if crate::auth::may_read_secrets(role) && !k.expired_at(now_ms()) {
                    k.secret = crate::secrets::open_stored(
                        self.cfg.secrets_key.as_ref(),
                        &k.id,
                        &k.secret,
                    )
                    .map_err(|e| ApiError::Secrets(e.to_string()))?;
                } else {
                    k.secret.clear();
                }
                QueryResult::AccessKey(k)
            }
            QueryResult::AccessKeys(mut keys) => {
                for k in &mut keys {
                    k.secret.clear();
                }
                QueryResult::AccessKeys(keys)
            }
            other => other,
        })
    }

    /// Seals the S3 secrets a client's command carries (`PutAccessKey`,
    /// `RotateAccessKey`, inside any wrapper) under this node's secrets
    /// key, before it is proposed: the log, the state and snapshots only
    /// ever hold the sealed form. Without a key file the command is
    /// refused. A `SealAccessKey` must already carry a sealed secret.
    pub(crate) fn seal_command(&self, cmd: Command) -> Result<Command, ApiError> {
        let kek = || {
            self.cfg
                .secrets_key
                .as_ref()
                .ok_or_else(|| ApiError::Secrets(crate::secrets::SecretsError::NoKey.to_string()))
        };
        let bad = |e: crate::secrets::SecretsError| ApiError::BadRequest(e.to_string());
        Ok(match cmd {
            Command::PutAccessKey { mut key } => {
                key.secret = kek()?.seal(&key.id, &key.secret).map_err(bad)?;
                key.expires_ms = None;
                Command::PutAccessKey { key }
            }
            Command::RotateAccessKey {
                id,
                new_id,
                secret,
                overlap_ms,
            } => Command::RotateAccessKey {
                secret: SecretString(kek()?.seal(&new_id, &secret.0).map_err(bad)?),
                id,
                new_id,
                overlap_ms,
            },
            Command::SealAccessKey {
                id,
                legacy_hash,
                sealed,
            } => {
                if !crate::secrets::is_sealed(&sealed.0) {
                    return Err(ApiError::BadRequest(
                        "SealAccessKey carries no sealed secret".into(),
                    ));
                }
                Command::SealAccessKey {
                    id,
                    legacy_hash,
                    sealed,
                }
            }
            Command::Once { id, inner } => Command::Once {
                id,
                inner: Box::new(self.seal_command(*inner)?),
            },
            Command::WithIntent { intent, inner } => Command::WithIntent {
                intent,
                inner: Box::new(self.seal_command(*inner)?),
            },
            Command::At { now_ms, inner } => Command::At {
                now_ms,
                inner: Box::new(self.seal_command(*inner)?),
            },
            Command::Batch { cmds } => Command::Batch {
                cmds: cmds
                    .into_iter()
                    .map(|c| self.seal_command(c))
                    .collect::<Result<_, _>>()?,
            },
            other => other,
        })
    }
}

/// The planner's view of this node (see [`crate::leader`]).
impl LeaderCtx for MetaNode {
    fn id(&self) -> NodeId {
        self.cfg.id
    }

    fn leading_term(&self) -> Option<u64> {
        let m = self.raft.metrics().borrow().clone();
        (m.current_leader == Some(self.cfg.id)).then_some(m.current_term)
    }

    fn state_db(&self) -> Arc<redb::Database> {
        self.sm.clone()
    }

    fn submit(&self, cmd: Command) -> BoxFuture<'_, Result<CommandResult, ApiError>> {
        Box::pin(self.write(cmd))
    }
}

#[cfg(test)]
#[test]
fn config_debug_shows_neither_the_secret_nor_the_secrets_key() {
    let hex = crate::secrets::SecretsKey::generate_hex();
    let mut cfg = MetaConfig::new(
        1,
        PathBuf::from("/nonexistent"),
        "127.0.0.1:1".into(),
        "a-cluster-secret-of-some-length".into(),
    );
    cfg.secrets_key = crate::secrets::SecretsKey::from_hex(&hex).ok();
    assert!(cfg.secrets_key.is_some());
    let d = format!("{cfg:?}");
    assert!(!d.contains(hex.trim()), "{d}");
    assert!(!d.contains("a-cluster-secret-of-some-length"), "{d}");
}
