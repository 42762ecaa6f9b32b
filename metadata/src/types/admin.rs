//! The admin-facing reports: cluster status, repairs dispatched, bucket
//! usage, Raft status.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;

/// One repair the leader dispatched, for `cairn admin status` and tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairRecord {
    /// Dispatch order (leader-local, from 1).
    pub seq: u64,
    /// Stripe redundancy when planned.
    pub redundancy: i32,
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Stripe number.
    pub stripe: u64,
    /// Shard index.
    pub index: u8,
    /// Target chunkserver.
    pub to: ChunkserverId,
    /// `dispatched` (`dispatched (rebalance)` for a move), `committed`,
    /// `stale` or `failed`.
    pub outcome: String,
}

/// The leader's view of cluster health (`/v1/admin/cluster`, `cairn admin
/// status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// Raft view of the answering node (the leader).
    pub raft: RaftStatus,
    /// Chunkservers.
    pub chunkservers: Vec<ChunkserverInfo>,
    /// Scrub progress by chunkserver (from heartbeats).
    pub scrub: BTreeMap<ChunkserverId, ScrubProgress>,
    /// Objects stored (as of the last planner pass).
    pub objects: u64,
    /// Logical bytes stored.
    pub bytes: u64,
    /// Stripes by remaining redundancy (survivors - k; m = full).
    pub redundancy: BTreeMap<i32, u64>,
    /// Shards waiting for repair.
    pub repair_queue: u64,
    /// Repairs dispatched and not yet reported.
    pub repairs_in_flight: u64,
    /// Repairs committed since this node became leader.
    pub repairs_done: u64,
    /// Repairs committed per second over the last minute.
    pub repair_rate: f64,
    /// Shards queued for deletion (garbage and orphans).
    pub gc_pending: u64,
    /// Orphans found by inventory reconciliation, waiting out the grace
    /// period.
    pub orphans_pending: u64,
    /// When the planner last finished a pass, ms since the epoch.
    pub last_plan_ms: Option<u64>,
    /// Recent dispatches, oldest first (bounded).
    pub recent_repairs: Vec<RepairRecord>,
    /// Shard bytes rebuilt by committed repairs since this node became
    /// leader (the measured repair rate is this over `repair_busy_secs`).
    #[serde(default)]
    pub repaired_bytes: u64,
    /// Seconds during which at least one repair task was running, since
    /// this node became leader (the union of finished tasks' run times).
    #[serde(default)]
    pub repair_busy_secs: f64,
    /// Objects, bytes and erasure-coded stripes per bucket (as of the last
    /// planner pass, from the `bucket_stats` counters; buckets with no
    /// objects are absent).
    #[serde(default)]
    pub buckets: BTreeMap<String, BucketUsage>,
    /// The rebalancer's last round.
    #[serde(default)]
    pub rebalance: RebalanceStatus,
}

/// What the rebalancer saw and did (`cairn admin rebalance status`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RebalanceStatus {
    /// Moves allowed (`cairn admin rebalance start|pause`).
    pub enabled: bool,
    /// Fullness spread tolerated, in percentage points.
    pub threshold_pct: u8,
    /// Fullest minus emptiest `Up` chunkserver, in percentage points
    /// (moves in flight counted done).
    pub spread_pct: f64,
    /// `balanced`, `moving`, `paused`, `waiting for repairs`, `no valid
    /// move` or `idle` (empty before the leader's first round).
    pub state: String,
    /// Moves dispatched and not yet reported.
    pub in_flight: u64,
    /// Moves committed since this node became leader.
    pub moved: u64,
    /// Their shard bytes.
    pub moved_bytes: u64,
    /// Fullness of every `Up` chunkserver, percent: the shard bytes
    /// committed objects place on it over those plus its free bytes.
    pub fullness_pct: BTreeMap<ChunkserverId, f64>,
}

/// What one bucket holds (live versions; kept by `apply`, see
/// `crate::stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketUsage {
    /// Objects.
    pub objects: u64,
    /// Logical bytes.
    pub bytes: u64,
    /// Erasure-coded stripes (inline objects have none).
    pub stripes: u64,
}

/// A metadata node's view of the Raft cluster, for `cairn admin status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftStatus {
    /// This node.
    pub id: NodeId,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Last log index.
    pub last_log_index: Option<u64>,
    /// Last applied index.
    pub last_applied: Option<u64>,
    /// Last log index covered by this node's snapshot.
    #[serde(default)]
    pub snapshot: Option<u64>,
    /// Last log index purged from this node's log.
    #[serde(default)]
    pub purged: Option<u64>,
    /// Voters, with addresses.
    pub voters: BTreeMap<NodeId, String>,
    /// Learners, with addresses.
    pub learners: BTreeMap<NodeId, String>,
    /// This node's data dir space (absent from older nodes, or when
    /// statvfs failed).
    #[serde(default)]
    pub disk: Option<DiskStatus>,
}

/// A metadata node's data dir space against its reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStatus {
    /// Bytes available.
    pub free: u64,
    /// Size of the file system.
    pub capacity: u64,
    /// The reserve: below it writes are refused.
    pub reserve: u64,
    /// `free < reserve`: the node refuses writes (507 `StorageFull`).
    pub full: bool,
}

/// One record of the audit log of admin actions (`cairn admin audit`):
/// kept in the replicated state, newest [`AUDIT_LOG_CAP`] only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Its number, from 1, in log order.
    pub seq: u64,
    /// When (the leader's clock when it proposed the entry), ms since the
    /// epoch.
    pub at_ms: u64,
    /// Who: the verified role token's name (`cluster-secret` for the
    /// cluster secret).
    pub who: String,
    /// The verified role (`admin`, `metadata`).
    pub role: String,
    /// What was done, without any secret (`rotate_access_key CK1 -> CK2`).
    pub what: String,
    /// `ok`, or the refusal.
    pub result: String,
}

/// Most audit records kept: past it the oldest are dropped.
pub const AUDIT_LOG_CAP: u64 = 10_000;
