//! A metadata node: the composition root that opens the Raft stores, starts
//! Raft and the HTTP API, and runs the leader's chunkserver failure
//! detector. Wire-up order lives here in one place: config, storage,
//! network, `Raft::new`, API.
//!
//! # HTTP API (all `POST`, JSON, cluster secret required)
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use redb::ReadableDatabase;

use crate::absent::{self, Absent};
use crate::metrics::{self as ops, MetaMetrics, OpsEndpoint};
use crate::model;
use crate::net::{self, Body, HttpClient, ServerOptions};
use crate::orphans::{self, InventoryReply, OrphanConfig, Orphans};
use crate::planner::{self, Planner, PlannerConfig, Repairs};
use crate::raft::{self, Raft};
use crate::types::*;
use crate::worker::{BoxFuture, Worker, WorkerRunner, WorkerState};

/// Settings of a metadata node.
#[derive(Debug, Clone)]
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
    /// Build a snapshot every this many log entries.
    pub snapshot_every: u64,
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
}

/// Default [`MetaConfig::gc_delay`]: 10 minutes, as Garage.
pub const DEFAULT_GC_DELAY: Duration = Duration::from_secs(600);

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
            keep_logs: 1_000,
            suspect_after: Duration::from_secs(6),
            down_after: Duration::from_secs(30),
            stats_every: Duration::from_secs(5),
            orphans: OrphanConfig::default(),
            repair_per_chunkserver: 4,
            repair_task_timeout: Duration::from_secs(120),
            gc_delay: DEFAULT_GC_DELAY,
        }
    }
}

/// Errors of the metadata API, mapped to HTTP in one place.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// This node is not the leader.
    #[error("not the leader")]
    NotLeader(Option<String>),
    /// No quorum or shutting down.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Bad request.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Storage failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    fn into_response(self) -> Response<Body> {
        match self {
            ApiError::NotLeader(l) => net::error_response_with_leader(
                StatusCode::MISDIRECTED_REQUEST,
                "NotLeader",
                "this node is not the leader",
                l,
            ),
            ApiError::Unavailable(m) => {
                net::error_response(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", &m)
            }
            ApiError::BadRequest(m) => {
                net::error_response(StatusCode::BAD_REQUEST, "BadRequest", &m)
            }
            ApiError::Internal(m) => {
                net::error_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal", &m)
            }
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

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
            max_in_snapshot_log_to_keep: cfg.keep_logs,
            ..Default::default()
        }
        .validate()
        .map_err(|e| err("raft config", &e))?;
        let (log_store, sm_store) = raft::open_stores(&cfg.data_dir)
            .await
            .map_err(|e| err("raft stores", &e))?;
        let sm = sm_store.db();
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
        let repairs = Arc::new(Repairs::new(PlannerConfig {
            per_chunkserver: cfg.repair_per_chunkserver.max(1),
            task_timeout: cfg.repair_task_timeout,
            silent_after: cfg.down_after + cfg.stats_every,
        }));
        Ok(Arc::new(MetaNode {
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
        runner.spawn(FailureDetector { node: self.clone() });
        runner.spawn(Planner::new(self.clone()));
        runner.spawn(IntentReaper { node: self.clone() });
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

    /// The repair planner's shared state.
    pub(crate) fn repairs(&self) -> &Repairs {
        &self.repairs
    }

    pub(crate) fn repairs_arc(&self) -> Arc<Repairs> {
        self.repairs.clone()
    }

    /// The local state machine database (for the planner's scans).
    pub(crate) fn state_db(&self) -> Arc<redb::Database> {
        self.sm.clone()
    }

    fn is_leader(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.current_leader == Some(self.cfg.id)
    }

    /// Proposes `cmd` and waits until it is committed and applied.
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, ApiError> {
        propose(&self.raft, cmd).await
    }

    /// Proposes a client's `cmd` through the group-commit batcher.
    async fn client_write(&self, cmd: Command, bytes: usize) -> Result<CommandResult, ApiError> {
        if !self.is_leader() {
            return Err(ApiError::NotLeader(self.leader_addr()));
        }
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
        let db = self.sm.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(redb::Error::from)?;
            f(&txn)
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// Answers a query, linearizably unless `stale`.
    pub async fn query(&self, q: Query, stale: bool) -> Result<QueryResult, ApiError> {
        if !stale {
            self.linearize().await?;
        }
        self.read(move |txn| model::query(txn, &q)).await
    }

    async fn heartbeat(&self, hb: HeartbeatRequest) -> Result<HeartbeatResponse, ApiError> {
        if !self.is_leader() {
            return Err(ApiError::NotLeader(self.leader_addr()));
        }
        let now = Instant::now();
        let known = match hb.id {
            Some(id) => {
                self.read(move |txn| Ok(model::chunkservers(txn)?.into_iter().find(|c| c.id == id)))
                    .await?
            }
            None => None,
        };
        let Some(info) = known else {
            let r = self
                .write(Command::RegisterChunkserver {
                    addr: hb.addr.clone(),
                    zone: hb.zone.clone(),
                    capacity: hb.capacity,
                    free: hb.free,
                    now_ms: now_ms(),
                })
                .await?;
            let id = match r {
                CommandResult::Registered { id } => id,
                other => return Err(ApiError::Internal(format!("register: {other:?}"))),
            };
            tracing::info!(id, addr = %hb.addr, zone = %hb.zone, "chunkserver registered");
            if let Ok(mut l) = self.liveness.lock() {
                l.last_seen.insert(id, now);
                l.last_stats.insert(id, now);
            }
            return Ok(HeartbeatResponse {
                id,
                commands: Vec::new(),
            });
        };
        let id = info.id;
        let write_stats = match self.liveness.lock() {
            Ok(mut l) => {
                l.last_seen.insert(id, now);
                let due = l
                    .last_stats
                    .get(&id)
                    .is_none_or(|t| now.duration_since(*t) >= self.cfg.stats_every);
                let changed = info.addr != hb.addr || info.zone != hb.zone;
                if due || changed {
                    l.last_stats.insert(id, now);
                }
                due || changed
            }
            Err(_) => true,
        };
        let came_back = matches!(
            info.state,
            ChunkserverState::Suspect | ChunkserverState::Down
        );
        if came_back {
            tracing::info!(id, "chunkserver is back up");
            self.write(Command::SetChunkserverState {
                id,
                state: ChunkserverState::Up,
            })
            .await?;
        }
        if write_stats {
            self.write(Command::ChunkserverStats {
                id,
                addr: hb.addr.clone(),
                zone: hb.zone.clone(),
                capacity: hb.capacity,
                free: hb.free,
                used: hb.used,
                shard_count: hb.shard_count,
                now_ms: now_ms(),
            })
            .await?;
        }
        // Repairs before deletions: a repair this heartbeat reports finished
        // before (or while) the server deleted the same shard must meet the
        // GC row still in place, so `CommitRepair` refuses it; after
        // `GcDone` only a tombstone would tell (see `model::commit_repair`).
        self.repair_heartbeat(id, &hb).await?;
        if !hb.deleted.is_empty() {
            self.write(Command::GcDone {
                chunkserver: id,
                shards: hb.deleted.clone(),
            })
            .await?;
        }
        let done: BTreeSet<ShardId> = hb.deleted.iter().copied().collect();
        let due_before = now_ms().saturating_sub(self.cfg.gc_delay.as_millis() as u64);
        let pending = self
            .read(move |txn| model::gc_due(txn, id, model::GC_BATCH, due_before))
            .await?;
        // Never delete a copy an accepted repair task reads or writes.
        let busy = self.repairs.busy_shards();
        let pending: Vec<ShardId> = pending
            .into_iter()
            .filter(|s| !done.contains(s) && !busy.contains(s))
            .collect();
        let mut commands = Vec::new();
        if !pending.is_empty() {
            commands.push(ChunkserverCommand::Delete { shards: pending });
        }
        let round = self.inventory_due(id);
        if let Some(round) = round {
            commands.push(ChunkserverCommand::SendInventory { round });
        }
        let term = self.raft.metrics().borrow().current_term;
        // Named but absent (`crate::absent`): only chunkservers that report
        // their data-dir identities understand `CheckShards`.
        if !hb.data_dirs.is_empty() {
            if self
                .absent
                .observe(id, term, &hb.data_dirs, came_back || round.is_some())
            {
                tracing::info!(id, "checking that the chunkserver holds its shards");
            }
            if let Some(cursor) = self.absent.cursor(id, term) {
                let (page, done) = self
                    .read(move |txn| absent::placed_page(txn, id, cursor, absent::PAGE))
                    .await?;
                self.absent.advance(id, term, page.last().copied(), done);
                if !page.is_empty() {
                    commands.push(ChunkserverCommand::CheckShards { shards: page });
                }
            }
        }
        commands.extend(
            self.repairs
                .take_tasks(id, term, hb.repairs_running == 0 && hb.repairs.is_empty())
                .into_iter()
                .map(ChunkserverCommand::Repair),
        );
        Ok(HeartbeatResponse { id, commands })
    }

    /// The repair side of a heartbeat: record bad shards, commit finished
    /// repairs, keep the scrub progress.
    async fn repair_heartbeat(
        &self,
        id: ChunkserverId,
        hb: &HeartbeatRequest,
    ) -> Result<(), ApiError> {
        if !hb.bad_shards.is_empty() {
            tracing::warn!(
                id,
                bad = hb.bad_shards.len(),
                "chunkserver reports bad shards"
            );
            self.write(Command::ReportBadShards {
                chunkserver: id,
                shards: hb.bad_shards.clone(),
            })
            .await?;
            self.repairs.trigger();
        }
        if !hb.repairs.is_empty() {
            planner::handle_reports(self, id, &hb.repairs).await?;
        }
        if let Some(p) = &hb.scrub {
            self.repairs.set_scrub(id, p.clone());
        }
        Ok(())
    }

    /// The leader's cluster health view.
    async fn cluster_status(&self) -> Result<ClusterStatus, ApiError> {
        if !self.is_leader() {
            return Err(ApiError::NotLeader(self.leader_addr()));
        }
        let (chunkservers, gc) = self
            .read(|txn| Ok((model::chunkservers(txn)?, model::gc_len(txn)?)))
            .await?;
        let mut st = self.repairs.status(self.status(), chunkservers, gc);
        st.orphans_pending = self.orphans_pending();
        Ok(st)
    }

    /// The inventory round to ask chunkserver `id` for, when due.
    fn inventory_due(&self, id: ChunkserverId) -> Option<u64> {
        let term = self.raft.metrics().borrow().current_term;
        self.orphans.inventory_due(id, term)
    }

    /// Orphans found by inventory reconciliation that are still inside the
    /// grace period (for `ClusterStatus::orphans_pending`).
    pub fn orphans_pending(&self) -> u64 {
        self.orphans.pending()
    }

    /// Checks one inventory page (see [`crate::orphans`]): after the page
    /// arrived, confirm leadership (so every committed write is applied
    /// here), sort its entries on one read transaction, and queue the old
    /// unnamed ones for deletion through the log.
    async fn inventory(&self, page: InventoryPage) -> Result<InventoryReply, ApiError> {
        if !self.is_leader() {
            return Err(ApiError::NotLeader(self.leader_addr()));
        }
        if page.shards.len() > orphans::MAX_PAGE {
            return Err(ApiError::BadRequest(format!(
                "an inventory page holds at most {} shards",
                orphans::MAX_PAGE
            )));
        }
        let id = page.id;
        let known = self
            .read(move |txn| Ok(model::chunkservers(txn)?.iter().any(|c| c.id == id)))
            .await?;
        if !known {
            return Err(ApiError::BadRequest(format!("unknown chunkserver {id}")));
        }
        // A chunkserver posting its inventory is alive, even if the pages
        // delay its next heartbeat.
        if let Ok(mut l) = self.liveness.lock() {
            l.last_seen.insert(id, Instant::now());
        }
        let _scan = self.orphans.scan_permit().await;
        self.linearize().await?;
        let grace_ms = self.orphans.config().grace.as_millis() as u64;
        let entries = page.shards.clone();
        let verdict = self
            .read(move |txn| orphans::check_page(txn, id, &entries, grace_ms))
            .await?;
        for chunk in verdict.orphans.chunks(model::GC_BATCH) {
            tracing::info!(
                chunkserver = id,
                orphans = chunk.len(),
                "queueing orphan shards for deletion"
            );
            match self
                .write(Command::QueueGc {
                    chunkserver: id,
                    shards: chunk.to_vec(),
                })
                .await?
            {
                CommandResult::Ok => {}
                other => return Err(ApiError::Internal(format!("queue gc: {other:?}"))),
            }
        }
        // Seen healthy again: a bad report or repair-queue item for a shard
        // this inventory lists is stale (a quarantined or absent shard is
        // never listed; one listed was stored with a matching BLAKE3, e.g.
        // rebuilt in place, or a read merely failed to reach it).
        let listed: Vec<ShardId> = page.shards.iter().map(|e| e.shard).collect();
        let stale = self
            .read(move |txn| model::stale_reports(txn, id, &listed))
            .await?;
        if !stale.is_empty() {
            tracing::info!(
                chunkserver = id,
                shards = stale.len(),
                "clearing stale bad reports"
            );
            self.write(Command::ClearBadShards {
                chunkserver: id,
                shards: stale,
            })
            .await?;
        }
        self.orphans.record(&page, verdict.pending);
        Ok(InventoryReply {
            queued: verdict.orphans.len() as u64,
            pending: verdict.pending,
        })
    }

    fn status(&self) -> RaftStatus {
        let m = self.raft.metrics().borrow().clone();
        let mem = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = mem.voter_ids().collect();
        let mut v = BTreeMap::new();
        let mut l = BTreeMap::new();
        for (id, n) in mem.nodes() {
            if voters.contains(id) {
                v.insert(*id, n.addr.clone());
            } else {
                l.insert(*id, n.addr.clone());
            }
        }
        RaftStatus {
            id: self.cfg.id,
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|x| x.index),
            snapshot: m.snapshot.map(|x| x.index),
            purged: m.purged.map(|x| x.index),
            voters: v,
            learners: l,
        }
    }

    async fn add_node(&self, req: AddNodeRequest) -> Result<(), ApiError> {
        if !self.is_leader() {
            return Err(ApiError::NotLeader(self.leader_addr()));
        }
        let m = self.raft.metrics().borrow().clone();
        let mut voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        if voters.contains(&req.id) {
            return Ok(());
        }
        // Learner first: it catches up (by log or snapshot) before it
        // votes, then a joint-consensus change makes it a voter.
        self.raft
            .add_learner(req.id, BasicNode { addr: req.addr }, true)
            .await
            .map_err(map_write_err)?;
        voters.insert(req.id);
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(map_write_err)?;
        Ok(())
    }

    async fn remove_node(&self, req: RemoveNodeRequest) -> Result<(), ApiError> {
        if !self.is_leader() {
            return Err(ApiError::NotLeader(self.leader_addr()));
        }
        let m = self.raft.metrics().borrow().clone();
        let mut voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        if !voters.remove(&req.id) {
            return Ok(());
        }
        if voters.is_empty() {
            return Err(ApiError::BadRequest("cannot remove the last voter".into()));
        }
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(map_write_err)?;
        Ok(())
    }

    /// Readiness: this node knows a leader (it is one, or it follows one),
    /// so the requests it gets are answered or redirected.
    fn ready(&self) -> Result<(), String> {
        let m = self.raft.metrics().borrow().clone();
        if let Err(e) = &m.running_state {
            return Err(format!("raft stopped: {e}"));
        }
        match m.current_leader {
            Some(_) => Ok(()),
            None => Err(format!("no known leader (term {})", m.current_term)),
        }
    }

    /// Refreshes the scrape-time values and encodes the registry.
    async fn metrics_reply(&self) -> Response<Body> {
        let mm = &self.metrics;
        mm.process.refresh();
        let m = self.raft.metrics().borrow().clone();
        let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let last = m.last_log_index.unwrap_or(0);
        let applied = m.last_applied.map(|x| x.index).unwrap_or(0);
        let snap = m.snapshot.map(|x| x.index).unwrap_or(0);
        let purged = m.purged.map(|x| x.index).unwrap_or(0);
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        let leading = m.current_leader == Some(self.cfg.id);
        mm.term.set(i(m.current_term));
        mm.leader.set(i(m.current_leader.unwrap_or(0)));
        mm.is_leader.set(i64::from(leading));
        mm.last_log_index.set(i(last));
        mm.applied_index.set(i(applied));
        mm.snapshot_index.set(i(snap));
        mm.log_entries.set(i(last.saturating_sub(purged)));
        mm.entries_since_snapshot
            .set(i(applied.saturating_sub(snap)));
        mm.voters.set(voters.len() as i64);
        if let (true, Some(rep)) = (leading, &m.replication) {
            // The quorum-th highest index held by the voters (the leader
            // holds its whole log).
            let mut held: Vec<u64> = voters
                .iter()
                .map(|v| {
                    if *v == self.cfg.id {
                        last
                    } else {
                        rep.get(v).copied().flatten().map(|l| l.index).unwrap_or(0)
                    }
                })
                .collect();
            held.sort_unstable_by(|a, b| b.cmp(a));
            if let Some(c) = held.get(held.len() / 2) {
                mm.commit_index.set(i(*c));
            }
        } else {
            mm.commit_index.set(0);
        }
        let st = if leading {
            self.cluster_status().await.ok()
        } else {
            None
        };
        mm.set_cluster(st.as_ref());
        ops::encode(&mm.registry)
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        match ops::ops_endpoint(&req) {
            Some(OpsEndpoint::Metrics) => return self.metrics_reply().await,
            Some(OpsEndpoint::Live) => return ops::live(),
            Some(OpsEndpoint::Ready) => return ops::ready(self.ready()),
            None => {}
        }
        if let Some(r) = crate::dashboard::serve(&req) {
            return r;
        }
        let (span, request_id) = net::request_span(req.headers());
        let work = net::with_request_id(request_id, self.handle_api(req));
        tracing::Instrument::instrument(work, span).await
    }

    async fn handle_api(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        if !net::has_secret(req.headers(), &self.cfg.secret) {
            return net::unauthorized();
        }
        if req.method() != Method::POST {
            return net::error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "use POST",
            );
        }
        let path = req.uri().path().to_string();
        let stale = req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "stale=1" || p == "stale=true"));
        // A Raft append may carry a client write of the full body limit
        // plus its envelope: a follower must accept what the leader's own
        // API accepted, or replication would stall on that entry forever.
        let limit = if path.starts_with(raft::network::RAFT_PATH_PREFIX) {
            net::MAX_JSON_BODY + net::RAFT_ENVELOPE
        } else {
            net::MAX_JSON_BODY
        };
        let body = match net::read_body(req.into_body(), limit).await {
            Ok(b) => b,
            Err(net::NetError::TooLarge { limit }) => {
                return net::error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "TooLarge",
                    &format!("body over {limit} bytes"),
                )
            }
            Err(e) => {
                return net::error_response(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string())
            }
        };
        if path.starts_with(raft::network::RAFT_PATH_PREFIX) {
            return raft::network::handle_raft_rpc(&self.raft, &path, body).await;
        }
        fn parse<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, ApiError> {
            serde_json::from_slice(b).map_err(|e| ApiError::BadRequest(format!("bad JSON: {e}")))
        }
        let res: Result<Response<Body>, ApiError> = async {
            Ok(match path.as_str() {
                "/v1/write" => {
                    let cmd: Command = parse(&body)?;
                    net::json_response(StatusCode::OK, &self.client_write(cmd, body.len()).await?)
                }
                "/v1/read" => {
                    let q: Query = parse(&body)?;
                    net::json_response(StatusCode::OK, &self.query(q, stale).await?)
                }
                "/v1/heartbeat" => {
                    let hb: HeartbeatRequest = parse(&body)?;
                    net::json_response(StatusCode::OK, &self.heartbeat(hb).await?)
                }
                "/v1/status" => net::json_response(StatusCode::OK, &self.status()),
                "/v1/admin/cluster" => {
                    net::json_response(StatusCode::OK, &self.cluster_status().await?)
                }
                "/v1/inventory" => {
                    let page: InventoryPage = parse(&body)?;
                    net::json_response(StatusCode::OK, &self.inventory(page).await?)
                }
                "/v1/admin/workers" => {
                    let list = self.workers.get().map(|w| w.list()).unwrap_or_default();
                    net::json_response(StatusCode::OK, &list)
                }
                "/v1/admin/init" => {
                    let r: InitRequest = parse(&body)?;
                    self.initialize(r.members).await?;
                    net::json_response(StatusCode::OK, &self.status())
                }
                "/v1/admin/add-node" => {
                    let r: AddNodeRequest = parse(&body)?;
                    self.add_node(r).await?;
                    net::json_response(StatusCode::OK, &self.status())
                }
                "/v1/admin/remove-node" => {
                    let r: RemoveNodeRequest = parse(&body)?;
                    self.remove_node(r).await?;
                    net::json_response(StatusCode::OK, &self.status())
                }
                _ => net::error_response(StatusCode::NOT_FOUND, "NotFound", "no such endpoint"),
            })
        }
        .await;
        res.unwrap_or_else(ApiError::into_response)
    }
}

fn map_write_err(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> ApiError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            ApiError::NotLeader(f.leader_node.map(|n| n.addr))
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            ApiError::BadRequest(c.to_string())
        }
        e => ApiError::Unavailable(e.to_string()),
    }
}

/// The leader's failure detector: marks silent chunkservers `Suspect`, then
/// `Down`, through the log.
struct FailureDetector {
    node: Arc<MetaNode>,
}

impl Worker for FailureDetector {
    fn name(&self) -> String {
        "chunkserver-failure-detector".into()
    }

    fn work(&mut self) -> BoxFuture<'_, Result<WorkerState, String>> {
        Box::pin(async move {
            let node = &self.node;
            let m = node.raft.metrics().borrow().clone();
            if m.current_leader != Some(node.cfg.id) {
                if let Ok(mut l) = node.liveness.lock() {
                    l.since = None;
                }
                return Ok(WorkerState::Throttled(Duration::from_millis(500)));
            }
            let now = Instant::now();
            let since = match node.liveness.lock() {
                Ok(mut l) => {
                    if l.since.is_none() || l.term != m.current_term {
                        l.since = Some(now);
                        l.term = m.current_term;
                        l.last_seen.clear();
                    }
                    l.since.unwrap_or(now)
                }
                Err(_) => now,
            };
            let all = node
                .read(model::chunkservers)
                .await
                .map_err(|e| e.to_string())?;
            for cs in all {
                let last = node
                    .liveness
                    .lock()
                    .ok()
                    .and_then(|l| l.last_seen.get(&cs.id).copied())
                    .unwrap_or(since);
                let silent = now.duration_since(last);
                let next = match cs.state {
                    ChunkserverState::Up | ChunkserverState::Suspect
                        if silent >= node.cfg.down_after =>
                    {
                        Some(ChunkserverState::Down)
                    }
                    ChunkserverState::Up if silent >= node.cfg.suspect_after => {
                        Some(ChunkserverState::Suspect)
                    }
                    _ => None,
                };
                if let Some(state) = next {
                    tracing::warn!(id = cs.id, ?state, ?silent, "chunkserver silent");
                    node.write(Command::SetChunkserverState { id: cs.id, state })
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            Ok(WorkerState::Throttled(Duration::from_millis(500)))
        })
    }
}

/// Write-intent rows the reaper removes per command: bounds the log entry's
/// work, however large the expired write was.
const REAP_BATCH: u32 = 10_000;

/// The leader's write-intent reaper: when some intent's lease has ended
/// (one range read of the expiry index), proposes `ExpireIntents`, which
/// drops the oldest expired intents and their shard rows, bounded per
/// command. Their uncommitted shards then become ordinary orphans.
struct IntentReaper {
    node: Arc<MetaNode>,
}

impl Worker for IntentReaper {
    fn name(&self) -> String {
        "write-intent-reaper".into()
    }

    fn work(&mut self) -> BoxFuture<'_, Result<WorkerState, String>> {
        Box::pin(async move {
            let node = &self.node;
            if !node.is_leader() {
                return Ok(WorkerState::Throttled(Duration::from_secs(1)));
            }
            let now = now_ms();
            let expired = node
                .read(move |txn| model::intents_expired(txn, now))
                .await
                .map_err(|e| e.to_string())?;
            if !expired {
                return Ok(WorkerState::Throttled(Duration::from_secs(1)));
            }
            tracing::info!("reaping expired write intents");
            node.write(Command::ExpireIntents { limit: REAP_BATCH })
                .await
                .map_err(|e| e.to_string())?;
            Ok(WorkerState::Busy)
        })
    }
}
