//! The chunkserver-facing API: chunkserver records, heartbeats and their
//! replies, chunkserver commands, repair tasks and reports, inventories,
//! scrub state, and the repair-queue item.

use serde::{Deserialize, Serialize};

use super::*;

/// A chunkserver's life-cycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChunkserverState {
    /// Heartbeating; takes new shards.
    Up,
    /// Missed heartbeats for longer than the suspect timeout; takes no new
    /// shards, still serves reads.
    Suspect,
    /// Missed heartbeats past the down timeout: its shards count as lost.
    Down,
    /// Being emptied by an operator; takes no new shards.
    Draining,
}

/// What the metadata service knows of a chunkserver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkserverInfo {
    /// Its id.
    pub id: ChunkserverId,
    /// Its shard API address (`ip:port`).
    pub addr: String,
    /// Its failure domain.
    pub zone: String,
    /// Bytes of capacity over all its disks.
    pub capacity: u64,
    /// Bytes free for new shards (above the reserve).
    pub free: u64,
    /// Bytes used by shards.
    pub used: u64,
    /// Shards stored.
    pub shard_count: u64,
    /// Last heartbeat written to the log, ms since the epoch (stamped by the
    /// leader).
    pub last_heartbeat_ms: u64,
    /// Life-cycle state.
    pub state: ChunkserverState,
}

/// One shard that needs rebuilding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairItem {
    /// Bucket of the object.
    pub bucket: String,
    /// Key of the object.
    pub key: String,
    /// The object version the report is about: a report about an older
    /// version is dropped when the repair is planned.
    pub version: StripeId,
    /// Stripe number within the object.
    pub stripe: u64,
    /// Shard index within the stripe.
    pub index: u8,
    /// The chunkserver the shard was on, if any.
    pub chunkserver: Option<ChunkserverId>,
    /// Why (missing, corrupt, timeout, never written).
    pub reason: String,
}

/// A chunkserver's periodic report to the metadata service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// Its id, or `None` on first start (the reply assigns one).
    pub id: Option<ChunkserverId>,
    /// Its shard API address.
    pub addr: String,
    /// Failure domain.
    pub zone: String,
    /// Capacity, bytes.
    pub capacity: u64,
    /// Free bytes above the reserve.
    pub free: u64,
    /// Bytes used by shards.
    pub used: u64,
    /// Shards stored.
    pub shard_count: u64,
    /// Shards it found corrupt or missing since the last heartbeat.
    #[serde(default)]
    pub bad_shards: Vec<ShardId>,
    /// Shards it deleted on command since the last heartbeat.
    #[serde(default)]
    pub deleted: Vec<ShardId>,
    /// Repair tasks finished (or failed) since the last heartbeat.
    #[serde(default)]
    pub repairs: Vec<RepairReport>,
    /// Repair tasks still running on it.
    #[serde(default)]
    pub repairs_running: u32,
    /// Its scrubber's progress.
    #[serde(default)]
    pub scrub: Option<ScrubProgress>,
    /// The identity (UUID) of each of its data directories, in
    /// configuration order. A change (a replaced or emptied disk) makes the
    /// leader check that it still holds every shard placed on it.
    #[serde(default)]
    pub data_dirs: Vec<String>,
}

/// A command for a chunkserver, riding on a heartbeat reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkserverCommand {
    /// Delete these shards (garbage).
    Delete {
        /// Shards.
        shards: Vec<ShardId>,
    },
    /// Rebuild one shard from the survivors and store it here.
    Repair(RepairTask),
    /// Post the full shard inventory to `/v1/inventory` (orphan
    /// reconciliation), tagged with this round.
    SendInventory {
        /// Round number, echoed in every page.
        round: u64,
    },
    /// The metadata service places these shards on this chunkserver:
    /// report those it does not hold as bad shards on the next heartbeat
    /// ("named but absent", `cairn_metadata::absent`).
    CheckShards {
        /// Shards to look for.
        shards: Vec<ShardId>,
    },
}

/// One surviving shard a repair may read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairSource {
    /// Shard index within the stripe.
    pub index: u8,
    /// The shard.
    pub shard: ShardId,
    /// Address of the chunkserver holding it.
    pub addr: String,
    /// Its BLAKE3 from the manifest (the fetched copy must match).
    pub blake3: Hash32,
}

/// Rebuild shard `index` of a stripe and store it on the receiving
/// chunkserver under `shard`. The rebuilt payload must hash to `blake3` or
/// it is discarded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairTask {
    /// Leader-assigned task id (echoed in the report).
    pub task: u64,
    /// Bucket of the object.
    pub bucket: String,
    /// Key of the object.
    pub key: String,
    /// The object version planned against.
    pub version: StripeId,
    /// Stripe number within the object.
    pub stripe: u64,
    /// The stripe's id (shard file header).
    pub stripe_id: StripeId,
    /// Erasure coding of the stripe.
    pub ec: EcParams,
    /// Length of every shard of the stripe.
    pub shard_len: u64,
    /// The shard index to rebuild.
    pub index: u8,
    /// The shard's id.
    pub shard: ShardId,
    /// The shard's BLAKE3 from the manifest.
    pub blake3: Hash32,
    /// Where the manifest placed the shard when planned (for the commit).
    pub from: Option<ChunkserverId>,
    /// Every healthy surviving shard of the stripe (the target reads any
    /// k of them).
    pub sources: Vec<RepairSource>,
    /// Remaining redundancy of the stripe when planned (survivors - k).
    pub redundancy: i32,
}

/// The outcome of a [`RepairTask`], reported on the next heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairReport {
    /// The task, as received.
    pub task: RepairTask,
    /// Stored durably and verified.
    pub ok: bool,
    /// Why not.
    #[serde(default)]
    pub error: Option<String>,
    /// The shard was already stored here and verified: no new copy was
    /// written (see [`Command::CommitRepair`]'s `reused`).
    #[serde(default)]
    pub reused: bool,
}

/// One page of a chunkserver's inventory, posted to `/v1/inventory`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryPage {
    /// The chunkserver.
    pub id: ChunkserverId,
    /// The round from [`ChunkserverCommand::SendInventory`].
    pub round: u64,
    /// Shards with their age (ms since the file was written).
    pub shards: Vec<InventoryEntry>,
    /// The last page of this round.
    pub last: bool,
}

/// One shard in an [`InventoryPage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryEntry {
    /// The shard.
    pub shard: ShardId,
    /// Milliseconds since it was written.
    pub age_ms: u64,
}

/// A scrubber's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScrubState {
    /// Walking shards now.
    Running,
    /// Paused by an operator.
    Paused,
    /// Between passes.
    Idle,
}

/// A chunkserver scrubber's progress (heartbeats, `cairn admin scrub
/// status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubProgress {
    /// State.
    pub state: ScrubState,
    /// When the current (or last) pass started, ms since the epoch.
    pub pass_started_ms: u64,
    /// When the last full pass finished, ms since the epoch.
    pub last_full_pass_ms: Option<u64>,
    /// Shards checked in the current pass.
    pub scanned_shards: u64,
    /// Shards stored (the pass's total).
    pub total_shards: u64,
    /// Bytes checked in the current pass.
    pub scanned_bytes: u64,
    /// Bad shards found since start.
    pub bad_found: u64,
    /// Throughput cap, MB/s (0 = none).
    pub max_mbps: u64,
    /// Tranquility: sleep this many times the time spent working.
    pub tranquility: u32,
}

/// A scrub control request for a chunkserver's `/v1/admin/scrub`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubControl {
    /// `start` (a new pass now), `pause`, `resume`, or `status` (no change).
    pub action: String,
    /// New throughput cap, MB/s.
    #[serde(default)]
    pub max_mbps: Option<u64>,
    /// New tranquility factor.
    #[serde(default)]
    pub tranquility: Option<u32>,
}

/// The metadata service's reply to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// The chunkserver's id (assigned on first contact).
    pub id: ChunkserverId,
    /// Work to do.
    pub commands: Vec<ChunkserverCommand>,
}
