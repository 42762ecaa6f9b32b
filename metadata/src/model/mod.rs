//! The replicated state machine's tables and the deterministic functions
//! that change them (`apply`) and read them (`query`).
//!
//! # Layout
//! One file per table family; every item is re-exported here, so
//! `crate::model::X` names it whichever file holds it:
//! - `apply`: [`apply`], the dispatch of every command, write conditions,
//!   inline-data checks.
//! - `query`: [`query`] and the table walks the leader's workers use.
//! - `listing`: [`list_objects`] (S3 ListObjectsV2 over range scans).
//! - `uploads`: multipart parts and completion.
//! - `membership`: the `chunkservers` table and chunkserver removal.
//! - `placement`: [`PlacementRules`], [`zone_cap`], [`place`].
//! - `audit`: the placement audit, page by page.
//! - `repair`: the repair queue and bad-shard reports (`CommitRepair`).
//! - `gc`: the GC queue and the tombstones of deleted copies.
//! - `intents`: write intents.
//! - `migrate`: [`migrate`], upgrades of files written by older binaries.
//! - `tagging`: object tags (`PutObjectTags`).
//! - `objects`: head and stripe rows of object versions.
//! - `bucket_config`: per-bucket CORS rules, tags, versioning state.
//! - `versions`: the version chain of a key (S3 versioning).
//!
//! # On-disk format (redb, format version 3)
//! Every model table maps raw bytes to raw bytes, so snapshots can dump and
//! load them without knowing their contents:
//! - `buckets`: bucket name (UTF-8) -> JSON [`BucketInfo`]
//! - `objects`: bucket name, NUL, key (UTF-8) -> binary head row (see
//!   `objects`: the manifest without its stripes). Bucket names cannot
//!   contain NUL and keys are validated not to, so one bucket's keys form
//!   one contiguous, key-ordered range.
//! - `object_stripes`: bucket, NUL, key, NUL, version, stripe number ->
//!   binary stripe row (format 3; formats 1 and 2 kept the stripes in a
//!   JSON manifest in `objects`, split once by [`migrate`]).
//! - `chunkservers`: id (u64 big-endian) -> JSON [`ChunkserverInfo`]
//! - `gc`: chunkserver id (u64 BE) ++ shard id (16 bytes) -> queued time
//!   (u64 BE ms, the entry time of the command that queued it): shards
//!   waiting to be deleted from that chunkserver. Rows written before GC
//!   had a minimum delay hold an empty value; [`migrate`] rewrites them as
//!   queued at time 0, i.e. due at once (what they were before).
//! - `gc_due`: chunkserver id ++ queued time (u64 BE) ++ shard id -> empty:
//!   the same rows ordered by queue time per chunkserver, so the rows due
//!   for one chunkserver are one range ([`gc_due`]), never a scan.
//! - `gc_deleted`: chunkserver id ++ shard id -> deletion time (u64 BE):
//!   tombstones of copies a chunkserver confirmed deleting (`GcDone`), kept
//!   [`TOMBSTONE_TTL_MS`]; `gc_deleted_order`: deletion time ++ chunkserver
//!   id ++ shard id -> empty, to forget the oldest. `CommitRepair` refuses a
//!   reused copy that has a tombstone.
//! - `intents`: intent id (16 bytes) -> lease end (u64 BE ms): writes in
//!   progress; `intent_expiry`: lease end ++ intent id -> empty (the
//!   reaper's index); `intent_shards`: chunkserver id ++ shard id -> intent
//!   id (orphan GC's question: "is this shard about to be committed?");
//!   `intent_rows`: intent id ++ chunkserver id ++ shard id -> empty (what
//!   a commit or the reaper drops).
//! - `repair`: object version (16 bytes) ++ stripe number (u64 BE) ++ shard
//!   index (1 byte) -> JSON [`RepairItem`]: shards waiting to be rebuilt.
//!   Dropped when the version is overwritten or deleted, or the shard is
//!   repaired.
//! - `requests`: request id (16 bytes) -> seq (u64 BE) ++ JSON
//!   [`CommandResult`]; `request_order`: seq -> request id. The outcomes of
//!   the last [`DEDUP_WINDOW`] `Once` commands, so retried writes apply once.
//! - `bucket_config`: bucket, NUL, kind (`cors`, `tagging`) -> format
//!   byte ++ postcard (see `bucket_config`): per-bucket S3 configuration,
//!   dropped with the bucket. Added within format 3.
//! - `object_versions`: bucket, NUL, key, NUL, inverted seq -> head row:
//!   noncurrent versions and delete markers; `version_ids`: bucket, NUL,
//!   key, NUL, version id -> row suffix (see `versions`). Added within
//!   format 3: an older file has them empty and its heads are `null`
//!   versions.
//! - `counters`: name (UTF-8) -> u64 BE (e.g. the next chunkserver id).
//! - `audit_log`: seq (u64 BE) -> JSON [`AuditEntry`]: admin actions, the
//!   newest [`AUDIT_LOG_CAP`] (see `audit_log`). Added within format 3.
//! - `keys`: access key id (UTF-8) -> JSON [`AccessKey`], its secret sealed
//!   ([`crate::secrets`]; legacy plaintext in rows of older data dirs
//!   until the leader seals them) and its `expires_ms` only here.
//! - `uploads`: bucket, NUL, key, NUL, upload id (16 bytes) -> JSON
//!   [`UploadInfo`]: multipart uploads in progress, by bucket then key.
//! - `upload_parts`: upload id (16 bytes) ++ part number (u32 BE) -> JSON
//!   [`UploadPart`]: the durable stripes of each uploaded part.
//! - `bad`: chunkserver id (u64 BE) ++ shard id (16 bytes) -> empty: shards
//!   a chunkserver reported corrupt, truncated or missing (scrub or read).
//!   The repair planner counts them as lost; `CommitRepair` drops the entry
//!   once the shard is rebuilt, and the planner clears entries no manifest
//!   or upload names any more (`ClearBadShards`).
//!
//! `keys`, `uploads`, `upload_parts`, `bad`, `gc_due`, `gc_deleted`,
//! `gc_deleted_order`, `intents`, `intent_expiry`, `intent_shards` and
//! `intent_rows` were added within format version 1:
//! the state machine creates every table of [`MODEL_TABLES`] when it opens a
//! file, so an older file simply has them empty; no migration is needed.
//!
//! A new table or a change of encoding bumps [`MODEL_FORMAT_VERSION`] and
//! adds a migration run by the state machine when it opens an older file.
//!
//! `apply` reads no clock and no random source: every time it stores was
//! stamped into the command by its proposer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::shard_index::{self, OwnerRow};
use crate::stats;
use crate::types::*;

mod access_keys;
mod apply;
mod audit;
mod audit_log;
mod bucket_config;
mod gc;
mod intents;
mod listing;
mod membership;
mod migrate;
mod objects;
mod placement;
mod query;
mod repair;
mod tagging;
#[cfg(test)]
mod tests;
mod uploads;
mod versions;

use self::access_keys::*;
pub use self::access_keys::{legacy_secret_hash, legacy_secrets};
pub use self::apply::*;
use self::audit::*;
pub use self::audit_log::AUDIT_LOG;
use self::audit_log::*;
pub use self::bucket_config::BUCKET_CONFIG;
use self::bucket_config::*;
pub use self::gc::*;
pub use self::intents::*;
pub use self::listing::*;
pub use self::membership::*;
pub use self::migrate::*;
pub use self::objects::*;
pub use self::placement::*;
pub use self::query::*;
pub use self::repair::*;
use self::tagging::*;
use self::uploads::*;
pub use self::versions::*;

/// Version of the model tables' encoding.
pub const MODEL_FORMAT_VERSION: u64 = 3;

/// Buckets by name.
pub const BUCKETS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("buckets");
/// Manifests by bucket NUL key.
pub const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");
/// Chunkservers by id.
pub const CHUNKSERVERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("chunkservers");
/// Shards awaiting deletion, by chunkserver.
pub const GC: TableDefinition<&[u8], &[u8]> = TableDefinition::new("gc");
/// Shards to rebuild: object version ++ stripe number ++ shard index -> JSON
/// [`RepairItem`].
pub const REPAIR: TableDefinition<&[u8], &[u8]> = TableDefinition::new("repair");
/// Outcomes of recent `Command::Once` ids: id -> seq (u64 BE) ++ JSON result.
pub const REQUESTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("requests");
/// The same ids by sequence number, to forget the oldest: seq -> id.
pub const REQUEST_ORDER: TableDefinition<&[u8], &[u8]> = TableDefinition::new("request_order");
/// Named counters.
pub const COUNTERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("counters");

/// S3 access keys by id.
pub const KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("keys");
/// Multipart uploads by bucket NUL key NUL upload id.
pub const UPLOADS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("uploads");
/// Uploaded parts by upload id ++ part number.
pub const UPLOAD_PARTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("upload_parts");

/// Shards reported bad: chunkserver id ++ shard id -> empty.
pub const BAD: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bad");

/// GC rows by chunkserver, then queue time.
pub const GC_DUE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("gc_due");
/// Tombstones of deleted copies: chunkserver id ++ shard id -> time.
pub const GC_DELETED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("gc_deleted");
/// Tombstones by deletion time ++ chunkserver id ++ shard id.
pub const GC_DELETED_ORDER: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("gc_deleted_order");
/// Write intents: intent id -> lease end.
pub const INTENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("intents");
/// Write intents by lease end ++ intent id.
pub const INTENT_EXPIRY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("intent_expiry");
/// Shards named by a write intent: chunkserver id ++ shard id -> intent id.
pub const INTENT_SHARDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("intent_shards");
/// The same rows by intent: intent id ++ chunkserver id ++ shard id.
pub const INTENT_ROWS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("intent_rows");

/// Every model table: what a snapshot contains.
pub const MODEL_TABLES: &[TableDefinition<'static, &'static [u8], &'static [u8]>] = &[
    BUCKETS,
    OBJECTS,
    OBJECT_STRIPES,
    CHUNKSERVERS,
    GC,
    REPAIR,
    REQUESTS,
    REQUEST_ORDER,
    COUNTERS,
    KEYS,
    UPLOADS,
    UPLOAD_PARTS,
    BAD,
    GC_DUE,
    GC_DELETED,
    GC_DELETED_ORDER,
    INTENTS,
    INTENT_EXPIRY,
    INTENT_SHARDS,
    INTENT_ROWS,
    shard_index::SHARD_OWNERS,
    shard_index::PLACED,
    stats::BUCKET_STATS,
    BUCKET_CONFIG,
    OBJECT_VERSIONS,
    VERSION_IDS,
    AUDIT_LOG,
];

/// How long a GC tombstone is kept: far longer than a repair report can be
/// delayed behind the delete it races (a heartbeat or two, at most the
/// repair task timeout), short enough that the table stays small.
pub const TOMBSTONE_TTL_MS: u64 = 30 * 60 * 1000;

/// Most shards one `RegisterIntent` may name: keeps log entries small (a
/// writer registers one stripe, or a few, per command).
pub const MAX_INTENT_SHARDS: usize = 4096;

/// S3's largest multipart part number.
pub const MAX_PART_NUMBER: u32 = 10_000;

/// How many recent request ids are remembered. A client retries for about
/// 20 s; this covers far more writes than a cluster commits in that time.
pub const DEDUP_WINDOW: u64 = 200_000;

/// S3's largest page.
pub const MAX_LIST_KEYS: u32 = 1000;

/// GC commands per heartbeat reply: bounds the reply size and the delete
/// burst one chunkserver sees.
pub const GC_BATCH: usize = 1000;

type StoreResult<T> = Result<T, redb::Error>;

fn enc<T: serde::Serialize>(v: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| redb::Error::Corrupted(format!("encode: {e}")))
}

fn dec<T: serde::de::DeserializeOwned>(b: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(b).map_err(|e| redb::Error::Corrupted(format!("decode: {e}")))
}

/// The `objects` key of (bucket, key).
pub fn object_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + 1 + key.len());
    k.extend_from_slice(bucket.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// The `uploads` key of (bucket, key, upload).
pub fn upload_key(bucket: &str, key: &str, upload: &StripeId) -> Vec<u8> {
    let mut k = object_key(bucket, key);
    k.push(0);
    k.extend_from_slice(&upload.0);
    k
}

fn placed_in(stripes: &[StripeManifest]) -> impl Iterator<Item = (ChunkserverId, ShardId)> + '_ {
    stripes
        .iter()
        .flat_map(|s| s.shards.iter())
        .filter_map(|l| l.chunkserver.map(|c| (c, l.shard)))
}

fn split_cs_shard(k: &[u8]) -> Option<(ChunkserverId, ShardId)> {
    if k.len() != 24 {
        return None;
    }
    let mut cs = [0u8; 8];
    cs.copy_from_slice(&k[..8]);
    let mut id = [0u8; 16];
    id.copy_from_slice(&k[8..]);
    Some((u64::from_be_bytes(cs), ShardId(id)))
}

fn u64_from(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}
