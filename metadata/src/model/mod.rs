//! The replicated state machine's tables and the deterministic functions
//! that change them (`apply`) and read them (`query`).
//!
//! # On-disk format (redb, format version 1)
//! Every model table maps raw bytes to raw bytes, so snapshots can dump and
//! load them without knowing their contents:
//! - `buckets`: bucket name (UTF-8) -> JSON [`BucketInfo`]
//! - `objects`: bucket name, NUL, key (UTF-8) -> JSON [`ObjectManifest`].
//!   Bucket names cannot contain NUL and keys are validated not to, so one
//!   bucket's keys form one contiguous, key-ordered range.
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
//! - `counters`: name (UTF-8) -> u64 BE (e.g. the next chunkserver id).
//! - `keys`: access key id (UTF-8) -> JSON [`AccessKey`].
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

/// Version of the model tables' encoding.
pub const MODEL_FORMAT_VERSION: u64 = 2;

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
    stats::BUCKET_STATS,
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

fn part_key(upload: &StripeId, number: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(&upload.0);
    k[16..].copy_from_slice(&number.to_be_bytes());
    k
}

/// Removes every part of `upload`, returning them by number.
fn take_parts(txn: &redb::WriteTransaction, upload: &StripeId) -> StoreResult<Vec<UploadPart>> {
    let t = txn.open_table(UPLOAD_PARTS)?;
    let start = part_key(upload, 0);
    let end = part_key(upload, u32::MAX);
    let mut keys = Vec::new();
    let mut parts = Vec::new();
    for r in t.range::<&[u8]>(start.as_slice()..=end.as_slice())? {
        let (k, v) = r?;
        keys.push(k.value().to_vec());
        parts.push(dec::<UploadPart>(v.value())?);
    }
    drop(t);
    let mut t = txn.open_table(UPLOAD_PARTS)?;
    for (k, p) in keys.into_iter().zip(&parts) {
        t.remove(k.as_slice())?;
        shard_index::remove(txn, &OwnerRow::Part(k), &p.stripes)?;
    }
    Ok(parts)
}

fn placed_in(stripes: &[StripeManifest]) -> impl Iterator<Item = (ChunkserverId, ShardId)> + '_ {
    stripes
        .iter()
        .flat_map(|s| s.shards.iter())
        .filter_map(|l| l.chunkserver.map(|c| (c, l.shard)))
}

fn gc_key(cs: ChunkserverId, shard: &ShardId) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&cs.to_be_bytes());
    k[8..].copy_from_slice(&shard.0);
    k
}

/// Applies one command inside the caller's write transaction. A refusal is a
/// `CommandResult::Err` and leaves the tables untouched; an `Err` is a
/// storage failure.
pub fn apply(txn: &redb::WriteTransaction, cmd: &Command) -> StoreResult<CommandResult> {
    apply_at(txn, cmd, 0)
}

/// [`apply`] with the entry's time `now` (ms; 0 when the entry carries
/// none, see [`Command::At`]).
fn apply_at(txn: &redb::WriteTransaction, cmd: &Command, now: u64) -> StoreResult<CommandResult> {
    match cmd {
        Command::Once { id, inner } => return apply_once(txn, id, inner, now),
        Command::Batch { cmds } => {
            let mut out = Vec::with_capacity(cmds.len());
            for c in cmds {
                out.push(apply_at(txn, c, now)?);
            }
            return Ok(CommandResult::Batch(out));
        }
        Command::At { now_ms, inner } => return apply_at(txn, inner, *now_ms),
        _ => {}
    }
    match apply_inner(txn, cmd, now)? {
        Ok(r) => Ok(r),
        Err(e) => Ok(CommandResult::Err(e)),
    }
}

fn apply_once(
    txn: &redb::WriteTransaction,
    id: &StripeId,
    inner: &Command,
    now: u64,
) -> StoreResult<CommandResult> {
    if let Some(v) = txn.open_table(REQUESTS)?.get(id.0.as_slice())? {
        let v = v.value();
        if v.len() >= 8 {
            return dec(&v[8..]);
        }
    }
    // Nested `Once` is flattened: only the outer id counts.
    let inner = match inner {
        Command::Once { inner, .. } => inner.as_ref(),
        c => c,
    };
    let result = match apply_inner(txn, inner, now)? {
        Ok(r) => r,
        Err(e) => CommandResult::Err(e),
    };
    let mut counters = txn.open_table(COUNTERS)?;
    let seq = match counters.get(b"request_seq".as_slice())? {
        Some(v) => u64_from(v.value()),
        None => 0,
    } + 1;
    counters.insert(b"request_seq".as_slice(), seq.to_be_bytes().as_slice())?;
    drop(counters);
    let mut value = seq.to_be_bytes().to_vec();
    value.extend_from_slice(&enc(&result)?);
    let mut requests = txn.open_table(REQUESTS)?;
    let mut order = txn.open_table(REQUEST_ORDER)?;
    requests.insert(id.0.as_slice(), value.as_slice())?;
    order.insert(seq.to_be_bytes().as_slice(), id.0.as_slice())?;
    if seq > DEDUP_WINDOW {
        let old = (seq - DEDUP_WINDOW).to_be_bytes();
        let old_id = order.remove(old.as_slice())?.map(|g| g.value().to_vec());
        if let Some(old_id) = old_id {
            requests.remove(old_id.as_slice())?;
        }
    }
    Ok(result)
}

/// True when `def` (a table keyed by bucket NUL ...) has a row of `bucket`.
fn has_bucket_rows(
    txn: &redb::WriteTransaction,
    def: TableDefinition<&[u8], &[u8]>,
    bucket: &str,
) -> StoreResult<bool> {
    let t = txn.open_table(def)?;
    let start = object_key(bucket, "");
    let mut end = bucket.as_bytes().to_vec();
    end.push(1);
    let found = t
        .range::<&[u8]>(start.as_slice()..end.as_slice())?
        .next()
        .is_some();
    Ok(found)
}

fn apply_inner(
    txn: &redb::WriteTransaction,
    cmd: &Command,
    now: u64,
) -> StoreResult<Result<CommandResult, MetaError>> {
    match cmd {
        Command::Once { inner, .. } => apply_inner(txn, inner, now),
        Command::Batch { .. } => Ok(Err(MetaError::Invalid("nested batch".into()))),
        Command::At { now_ms, inner } => apply_inner(txn, inner, *now_ms),
        Command::RegisterIntent {
            intent,
            shards,
            lease_ms,
        } => register_intent(txn, intent, shards, *lease_ms, now),
        Command::WithIntent { intent, inner } => commit_with_intent(txn, intent, inner, now),
        Command::ExpireIntents { limit } => {
            expire_intents(txn, now, *limit as usize)?;
            Ok(Ok(CommandResult::Ok))
        }
        Command::CreateBucket { bucket } => {
            if let Err(e) = validate_bucket_name(&bucket.name).and_then(|_| bucket.ec.validate()) {
                return Ok(Err(e.into()));
            }
            let mut t = txn.open_table(BUCKETS)?;
            if t.get(bucket.name.as_bytes())?.is_some() {
                return Ok(Err(MetaError::BucketExists(bucket.name.clone())));
            }
            t.insert(bucket.name.as_bytes(), enc(bucket)?.as_slice())?;
            Ok(Ok(CommandResult::Ok))
        }
        Command::DeleteBucket { name } => {
            let mut t = txn.open_table(BUCKETS)?;
            if t.get(name.as_bytes())?.is_none() {
                return Ok(Err(MetaError::NoSuchBucket(name.clone())));
            }
            if has_bucket_rows(txn, UPLOADS, name)? || has_bucket_rows(txn, OBJECTS, name)? {
                return Ok(Err(MetaError::BucketNotEmpty(name.clone())));
            }
            t.remove(name.as_bytes())?;
            drop(t);
            stats::forget(txn, name)?;
            Ok(Ok(CommandResult::Ok))
        }
        Command::PutObject {
            bucket,
            key,
            manifest,
            condition,
        } => {
            if let Err(e) = validate_key(key)
                .and_then(|_| manifest.ec.validate())
                .and_then(|_| validate_inline(manifest))
            {
                return Ok(Err(e.into()));
            }
            if txn.open_table(BUCKETS)?.get(bucket.as_bytes())?.is_none() {
                return Ok(Err(MetaError::NoSuchBucket(bucket.clone())));
            }
            if let Err(e) = PlacementRules::load(txn)?.refuse_write(
                manifest.ec,
                &manifest.stripes,
                true,
                &format!("{bucket}/{key}"),
            ) {
                return Ok(Err(e));
            }
            let mut objects = txn.open_table(OBJECTS)?;
            let ok = object_key(bucket, key);
            let old: Option<ObjectManifest> = match objects.get(ok.as_slice())? {
                Some(v) => Some(dec(v.value())?),
                None => None,
            };
            if let Err(e) = check_condition(condition, old.as_ref(), bucket, key) {
                return Ok(Err(e));
            }
            objects.insert(ok.as_slice(), enc(manifest)?.as_slice())?;
            drop(objects);
            let row = OwnerRow::Object(ok);
            if let Some(old) = &old {
                shard_index::remove(txn, &row, &old.stripes)?;
            }
            shard_index::add(txn, &row, manifest.version, 0, &manifest.stripes)?;
            stats::replace(txn, bucket, old.as_ref(), Some(manifest))?;
            queue_unplaced(txn, bucket, key, manifest)?;
            if let Some(old) = old {
                let keep: HashSet<ShardId> = manifest.placed_shards().map(|(_, s)| s).collect();
                queue_gc(
                    txn,
                    now,
                    old.placed_shards().filter(|(_, s)| !keep.contains(s)),
                )?;
                if old.version != manifest.version {
                    drop_repairs(txn, &old.version)?;
                }
            }
            Ok(Ok(CommandResult::Ok))
        }
        Command::DeleteObject {
            bucket,
            key,
            condition,
        } => {
            if txn.open_table(BUCKETS)?.get(bucket.as_bytes())?.is_none() {
                return Ok(Err(MetaError::NoSuchBucket(bucket.clone())));
            }
            let mut objects = txn.open_table(OBJECTS)?;
            let ok = object_key(bucket, key);
            let old: Option<ObjectManifest> = match objects.get(ok.as_slice())? {
                Some(v) => Some(dec(v.value())?),
                None => None,
            };
            if let Err(e) = check_condition(condition, old.as_ref(), bucket, key) {
                return Ok(Err(e));
            }
            // S3 deletes of a missing key succeed.
            if let Some(old) = old {
                objects.remove(ok.as_slice())?;
                drop(objects);
                shard_index::remove(txn, &OwnerRow::Object(ok), &old.stripes)?;
                stats::replace(txn, bucket, Some(&old), None)?;
                queue_gc(txn, now, old.placed_shards())?;
                drop_repairs(txn, &old.version)?;
            }
            Ok(Ok(CommandResult::Ok))
        }
        Command::RegisterChunkserver {
            addr,
            zone,
            capacity,
            free,
            now_ms,
        } => {
            let mut counters = txn.open_table(COUNTERS)?;
            let next = match counters.get(b"next_chunkserver_id".as_slice())? {
                Some(v) => u64_from(v.value()),
                None => 1,
            };
            counters.insert(
                b"next_chunkserver_id".as_slice(),
                (next + 1).to_be_bytes().as_slice(),
            )?;
            let info = ChunkserverInfo {
                id: next,
                addr: addr.clone(),
                zone: zone.clone(),
                capacity: *capacity,
                free: *free,
                used: 0,
                shard_count: 0,
                last_heartbeat_ms: *now_ms,
                state: ChunkserverState::Up,
            };
            let mut t = txn.open_table(CHUNKSERVERS)?;
            // A process registering anew at an address another id holds
            // replaced it (its whole data dir, `chunkserver-id` included,
            // is gone): the old id is Down at once, its shards lost.
            let mut replaced = Vec::new();
            for r in t.iter()? {
                let (_, v) = r?;
                let old: ChunkserverInfo = dec(v.value())?;
                if old.addr == *addr && old.state != ChunkserverState::Down {
                    replaced.push(old);
                }
            }
            for mut old in replaced {
                old.state = ChunkserverState::Down;
                t.insert(old.id.to_be_bytes().as_slice(), enc(&old)?.as_slice())?;
            }
            t.insert(next.to_be_bytes().as_slice(), enc(&info)?.as_slice())?;
            Ok(Ok(CommandResult::Registered { id: next }))
        }
        Command::ChunkserverStats {
            id,
            addr,
            zone,
            capacity,
            free,
            used,
            shard_count,
            now_ms,
        } => {
            let mut t = txn.open_table(CHUNKSERVERS)?;
            let mut info: ChunkserverInfo = match t.get(id.to_be_bytes().as_slice())? {
                Some(v) => dec(v.value())?,
                None => return Ok(Err(MetaError::NoSuchChunkserver(*id))),
            };
            info.addr = addr.clone();
            info.zone = zone.clone();
            info.capacity = *capacity;
            info.free = *free;
            info.used = *used;
            info.shard_count = *shard_count;
            info.last_heartbeat_ms = *now_ms;
            t.insert(id.to_be_bytes().as_slice(), enc(&info)?.as_slice())?;
            Ok(Ok(CommandResult::Ok))
        }
        Command::SetChunkserverState { id, state } => {
            let mut t = txn.open_table(CHUNKSERVERS)?;
            let mut info: ChunkserverInfo = match t.get(id.to_be_bytes().as_slice())? {
                Some(v) => dec(v.value())?,
                None => return Ok(Err(MetaError::NoSuchChunkserver(*id))),
            };
            info.state = *state;
            t.insert(id.to_be_bytes().as_slice(), enc(&info)?.as_slice())?;
            Ok(Ok(CommandResult::Ok))
        }
        Command::QueueRepair { items } => {
            let mut t = txn.open_table(REPAIR)?;
            for item in items {
                t.insert(repair_key(item).as_slice(), enc(item)?.as_slice())?;
            }
            Ok(Ok(CommandResult::Ok))
        }
        // The proposer (orphan reconciliation, `crate::orphans`) checked
        // that nothing names these shards on this chunkserver.
        Command::QueueGc {
            chunkserver,
            shards,
        } => {
            queue_gc(txn, now, shards.iter().map(|s| (*chunkserver, *s)))?;
            Ok(Ok(CommandResult::Ok))
        }
        Command::ReportBadShards {
            chunkserver,
            shards,
        } => {
            let mut t = txn.open_table(BAD)?;
            for s in shards {
                t.insert(gc_key(*chunkserver, s).as_slice(), [].as_slice())?;
            }
            Ok(Ok(CommandResult::Ok))
        }
        Command::ClearBadShards {
            chunkserver,
            shards,
        } => {
            let mut t = txn.open_table(BAD)?;
            for s in shards {
                t.remove(gc_key(*chunkserver, s).as_slice())?;
            }
            drop(t);
            clear_seen_repairs(txn, *chunkserver, shards)?;
            Ok(Ok(CommandResult::Ok))
        }
        Command::CommitRepair {
            bucket,
            key,
            version,
            stripe,
            index,
            shard,
            from,
            to,
            reused,
        } => commit_repair(
            txn, bucket, key, *version, *stripe, *index, shard, *from, *to, *reused, now,
        ),
        Command::RemoveChunkserver { id } => remove_chunkserver(txn, *id),
        Command::GcDone {
            chunkserver,
            shards,
        } => {
            for s in shards {
                unqueue_gc(txn, *chunkserver, s)?;
            }
            record_deleted(txn, *chunkserver, shards, now)?;
            Ok(Ok(CommandResult::Ok))
        }
        Command::PutAccessKey { key } => {
            if key.id.is_empty() || key.secret.is_empty() {
                return Ok(Err(MetaError::Invalid(
                    "access key id and secret must not be empty".into(),
                )));
            }
            txn.open_table(KEYS)?
                .insert(key.id.as_bytes(), enc(key)?.as_slice())?;
            Ok(Ok(CommandResult::Ok))
        }
        Command::DeleteAccessKey { id } => {
            txn.open_table(KEYS)?.remove(id.as_bytes())?;
            Ok(Ok(CommandResult::Ok))
        }
        Command::CreateUpload { upload } => {
            if let Err(e) = validate_key(&upload.key).and_then(|_| upload.ec.validate()) {
                return Ok(Err(e.into()));
            }
            if txn
                .open_table(BUCKETS)?
                .get(upload.bucket.as_bytes())?
                .is_none()
            {
                return Ok(Err(MetaError::NoSuchBucket(upload.bucket.clone())));
            }
            txn.open_table(UPLOADS)?.insert(
                upload_key(&upload.bucket, &upload.key, &upload.id).as_slice(),
                enc(upload)?.as_slice(),
            )?;
            Ok(Ok(CommandResult::Ok))
        }
        Command::PutPart {
            bucket,
            key,
            upload,
            part,
        } => {
            let n = part.info.number;
            if n == 0 || n > MAX_PART_NUMBER {
                return Ok(Err(MetaError::Invalid(format!(
                    "part number {n} is outside 1..={MAX_PART_NUMBER}"
                ))));
            }
            let info: UploadInfo = match txn
                .open_table(UPLOADS)?
                .get(upload_key(bucket, key, upload).as_slice())?
            {
                Some(v) => dec(v.value())?,
                None => return Ok(Err(MetaError::NoSuchUpload(upload.to_hex()))),
            };
            if let Err(e) = PlacementRules::load(txn)?.refuse_write(
                info.ec,
                &part.stripes,
                true,
                &format!("{bucket}/{key} part {n}"),
            ) {
                return Ok(Err(e));
            }
            let mut t = txn.open_table(UPLOAD_PARTS)?;
            let pk = part_key(upload, n);
            let old: Option<UploadPart> = match t.get(pk.as_slice())? {
                Some(v) => Some(dec(v.value())?),
                None => None,
            };
            t.insert(pk.as_slice(), enc(part)?.as_slice())?;
            drop(t);
            let row = OwnerRow::Part(pk.to_vec());
            if let Some(old) = &old {
                shard_index::remove(txn, &row, &old.stripes)?;
            }
            shard_index::add(txn, &row, *upload, 0, &part.stripes)?;
            if let Some(old) = old {
                let keep: HashSet<ShardId> = placed_in(&part.stripes).map(|(_, s)| s).collect();
                let old: Vec<_> = placed_in(&old.stripes)
                    .filter(|(_, s)| !keep.contains(s))
                    .collect();
                queue_gc(txn, now, old.into_iter())?;
            }
            Ok(Ok(CommandResult::Ok))
        }
        Command::CompleteUpload {
            bucket,
            key,
            upload,
            parts,
            min_part_size,
            etag,
            version,
            checksums,
            now_ms,
            condition,
        } => complete_upload(
            txn,
            now,
            bucket,
            key,
            upload,
            parts,
            *min_part_size,
            etag,
            *version,
            checksums,
            *now_ms,
            condition,
        ),
        Command::AbortUpload {
            bucket,
            key,
            upload,
        } => {
            let removed = txn
                .open_table(UPLOADS)?
                .remove(upload_key(bucket, key, upload).as_slice())?
                .is_some();
            if !removed {
                return Ok(Err(MetaError::NoSuchUpload(upload.to_hex())));
            }
            let parts = take_parts(txn, upload)?;
            queue_gc(txn, now, parts.iter().flat_map(|p| placed_in(&p.stripes)))?;
            Ok(Ok(CommandResult::Ok))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn complete_upload(
    txn: &redb::WriteTransaction,
    now: u64,
    bucket: &str,
    key: &str,
    upload: &StripeId,
    wanted: &[CompletePart],
    min_part_size: u64,
    etag: &str,
    version: StripeId,
    checksums: &std::collections::BTreeMap<String, String>,
    now_ms: u64,
    condition: &PutCondition,
) -> StoreResult<Result<CommandResult, MetaError>> {
    let uk = upload_key(bucket, key, upload);
    let info: UploadInfo = match txn.open_table(UPLOADS)?.get(uk.as_slice())? {
        Some(v) => dec(v.value())?,
        None => return Ok(Err(MetaError::NoSuchUpload(upload.to_hex()))),
    };
    if wanted.is_empty() {
        return Ok(Err(MetaError::Invalid(
            "a multipart upload needs at least one part".into(),
        )));
    }
    // Validate everything before changing anything.
    let mut chosen: Vec<UploadPart> = Vec::with_capacity(wanted.len());
    {
        let t = txn.open_table(UPLOAD_PARTS)?;
        let mut prev = 0u32;
        for w in wanted {
            if w.number <= prev {
                return Ok(Err(MetaError::InvalidPartOrder(format!(
                    "part {} follows part {prev}",
                    w.number
                ))));
            }
            prev = w.number;
        }
        for (i, w) in wanted.iter().enumerate() {
            let part: UploadPart = match t.get(part_key(upload, w.number).as_slice())? {
                Some(v) => dec(v.value())?,
                None => {
                    return Ok(Err(MetaError::InvalidPart(format!(
                        "part {} was not uploaded",
                        w.number
                    ))))
                }
            };
            if w.etag.trim_matches('"') != part.info.etag {
                return Ok(Err(MetaError::InvalidPart(format!(
                    "part {} has ETag {}, not {}",
                    w.number,
                    part.info.etag,
                    w.etag.trim_matches('"')
                ))));
            }
            if i + 1 < wanted.len() && part.info.size < min_part_size {
                return Ok(Err(MetaError::EntityTooSmall(format!(
                    "part {} is {} bytes; every part but the last needs {min_part_size}",
                    w.number, part.info.size
                ))));
            }
            chosen.push(part);
        }
    }
    let mut objects = txn.open_table(OBJECTS)?;
    let ok = object_key(bucket, key);
    let old: Option<ObjectManifest> = match objects.get(ok.as_slice())? {
        Some(v) => Some(dec(v.value())?),
        None => None,
    };
    if let Err(e) = check_condition(condition, old.as_ref(), bucket, key) {
        return Ok(Err(e));
    }
    let size: u64 = chosen.iter().map(|p| p.info.size).sum();
    if size > MAX_OBJECT_SIZE {
        return Ok(Err(MetaError::EntityTooLarge(format!(
            "the parts hold {size} bytes; an object holds at most {MAX_OBJECT_SIZE}"
        ))));
    }
    // Each part's stripes met the full invariant when the part was
    // accepted. Two shards on one chunkserver can only come from an older
    // binary and are refused; a zone cap exceeded because zones were added
    // since the part was written is accepted (refusing would fail an
    // upload the user cannot repair): the mover restores it.
    let rules = PlacementRules::load(txn)?;
    for p in &chosen {
        let what = format!("{bucket}/{key} part {}", p.info.number);
        if let Err(e) = rules.refuse_write(info.ec, &p.stripes, false, &what) {
            return Ok(Err(e));
        }
    }
    let mut stripes = Vec::new();
    let mut part_infos = Vec::with_capacity(chosen.len());
    for p in &chosen {
        let mut info = p.info.clone();
        info.stripes = p.stripes.len() as u32;
        part_infos.push(info);
        stripes.extend(p.stripes.iter().cloned());
    }
    let manifest = ObjectManifest {
        version,
        size,
        etag: etag.to_string(),
        content_type: info.content_type.clone(),
        headers: info.headers.clone(),
        user_meta: info.user_meta.clone(),
        checksums: checksums.clone(),
        created_ms: now_ms,
        ec: info.ec,
        shard_size: info.shard_size,
        stripes,
        parts: part_infos,
        inline: None,
    };
    objects.insert(ok.as_slice(), enc(&manifest)?.as_slice())?;
    drop(objects);
    txn.open_table(UPLOADS)?.remove(uk.as_slice())?;
    let all = take_parts(txn, upload)?;
    let row = OwnerRow::Object(ok);
    if let Some(old) = &old {
        shard_index::remove(txn, &row, &old.stripes)?;
    }
    shard_index::add(txn, &row, manifest.version, 0, &manifest.stripes)?;
    stats::replace(txn, bucket, old.as_ref(), Some(&manifest))?;
    queue_unplaced(txn, bucket, key, &manifest)?;
    let keep: HashSet<ShardId> = manifest.placed_shards().map(|(_, s)| s).collect();
    let mut garbage: Vec<(ChunkserverId, ShardId)> = all
        .iter()
        .flat_map(|p| placed_in(&p.stripes))
        .filter(|(_, s)| !keep.contains(s))
        .collect();
    if let Some(old) = old {
        garbage.extend(old.placed_shards().filter(|(_, s)| !keep.contains(s)));
        drop_repairs(txn, &old.version)?;
    }
    queue_gc(txn, now, garbage.into_iter())?;
    Ok(Ok(CommandResult::Ok))
}

/// Applies `Command::CommitRepair` (see its documentation). Every
/// outcome is decided from the tables alone, so replicas agree.
#[allow(clippy::too_many_arguments)]
fn commit_repair(
    txn: &redb::WriteTransaction,
    bucket: &str,
    key: &str,
    version: StripeId,
    stripe: u64,
    index: u8,
    shard: &ShardId,
    from: Option<ChunkserverId>,
    to: ChunkserverId,
    reused: bool,
    now: u64,
) -> StoreResult<Result<CommandResult, MetaError>> {
    let mut objects = txn.open_table(OBJECTS)?;
    let ok = object_key(bucket, key);
    let live: Option<ObjectManifest> = match objects.get(ok.as_slice())? {
        Some(v) => Some(dec(v.value())?),
        None => None,
    };
    let item_key = repair_key(&RepairItem {
        bucket: String::new(),
        key: String::new(),
        version,
        stripe,
        index,
        chunkserver: None,
        reason: String::new(),
    });
    let Some(mut m) = live else {
        drop(objects);
        txn.open_table(REPAIR)?.remove(item_key.as_slice())?;
        queue_gc(txn, now, std::iter::once((to, *shard)))?;
        return Ok(Err(MetaError::Stale(format!("{bucket}/{key} is gone"))));
    };
    let matches = m.version == version
        && usize::try_from(stripe)
            .ok()
            .and_then(|i| m.stripes.get(i))
            .and_then(|s| s.shards.get(usize::from(index)))
            .is_some_and(|l| l.shard == *shard && l.chunkserver == from);
    // A copy of this shard on `to` that is queued for deletion (e.g. an old
    // stale copy the inventory found unnamed, which the repair then found
    // "already stored") must not become live: the queued delete would
    // remove it. Refuse; the planner rebuilds it again elsewhere.
    let doomed = txn
        .open_table(GC)?
        .get(gc_key(to, shard).as_slice())?
        .is_some();
    if doomed && matches {
        drop(objects);
        return Ok(Err(MetaError::Stale(format!(
            "{bucket}/{key} stripe {stripe} shard {index}: the copy on chunkserver {to} is queued for deletion"
        ))));
    }
    // A copy the target kept because it "already had it", while `to` has
    // confirmed deleting that shard (GcDone, possibly earlier in the same
    // heartbeat): the copy may be gone. Refuse; it is rebuilt elsewhere.
    let deleted = txn
        .open_table(GC_DELETED)?
        .get(gc_key(to, shard).as_slice())?
        .is_some();
    if deleted && reused && matches {
        drop(objects);
        queue_gc(txn, now, std::iter::once((to, *shard)))?;
        return Ok(Err(MetaError::Stale(format!(
            "{bucket}/{key} stripe {stripe} shard {index}: chunkserver {to} deleted its copy"
        ))));
    }
    if !matches {
        // The rebuilt copy is garbage unless the live manifest already
        // places exactly this shard on `to` (a duplicate report of a
        // committed repair).
        let placed = m.placed_shards().any(|(c, s)| c == to && s == *shard);
        drop(objects);
        if m.version != version {
            txn.open_table(REPAIR)?.remove(item_key.as_slice())?;
        }
        if !placed {
            queue_gc(txn, now, std::iter::once((to, *shard)))?;
        }
        return Ok(Err(MetaError::Stale(format!(
            "{bucket}/{key} stripe {stripe} shard {index} changed since the repair was planned"
        ))));
    }
    // The placement invariant: the move may not put a second shard of the
    // stripe on `to`, nor raise `to`'s zone above the zone cap (a stripe
    // that already broke it, written by an older binary, may still be
    // improved one move at a time).
    let rules = PlacementRules::load(txn)?;
    let old_locs: Vec<Option<ChunkserverId>> = usize::try_from(stripe)
        .ok()
        .and_then(|i| m.stripes.get(i))
        .map(|s| s.shards.iter().map(|l| l.chunkserver).collect())
        .unwrap_or_default();
    let mut new_locs = old_locs.clone();
    if let Some(l) = new_locs.get_mut(usize::from(index)) {
        *l = Some(to);
    }
    let in_zone = |locs: &[Option<ChunkserverId>], z: Option<&str>| {
        locs.iter()
            .filter(|c| {
                c.and_then(|c| rules.zone(c))
                    .is_some_and(|cz| Some(cz) == z)
            })
            .count()
    };
    let stacked = new_locs
        .iter()
        .enumerate()
        .any(|(i, c)| i != usize::from(index) && *c == Some(to));
    let zone = rules.zone(to);
    let cap = rules.cap(m.ec);
    let after = in_zone(&new_locs, zone);
    let over = zone.is_some() && after > cap && after > in_zone(&old_locs, zone);
    if stacked || over {
        drop(objects);
        if from != Some(to) {
            queue_gc(txn, now, std::iter::once((to, *shard)))?;
        }
        let why = if stacked {
            format!("chunkserver {to} already holds another shard of the stripe")
        } else {
            format!(
                "zone {:?} of chunkserver {to} would hold {after} shards of the stripe (cap {cap})",
                zone.unwrap_or("")
            )
        };
        return Ok(Err(MetaError::Stale(format!(
            "{bucket}/{key} stripe {stripe} shard {index}: {why}"
        ))));
    }
    if let Some(l) = usize::try_from(stripe)
        .ok()
        .and_then(|i| m.stripes.get_mut(i))
        .and_then(|s| s.shards.get_mut(usize::from(index)))
    {
        l.chunkserver = Some(to);
    }
    objects.insert(ok.as_slice(), enc(&m)?.as_slice())?;
    drop(objects);
    shard_index::relocate(
        txn,
        &shard_index::Owner {
            row: OwnerRow::Object(ok),
            version,
            stripe,
            index,
        },
        shard,
        from,
        to,
    )?;
    txn.open_table(REPAIR)?.remove(item_key.as_slice())?;
    if let Some(f) = from {
        txn.open_table(BAD)?.remove(gc_key(f, shard).as_slice())?;
        if f != to {
            queue_gc(txn, now, std::iter::once((f, *shard)))?;
        }
    }
    txn.open_table(BAD)?.remove(gc_key(to, shard).as_slice())?;
    forget_deleted(txn, to, shard)?;
    Ok(Ok(CommandResult::Ok))
}

/// Forgets a drained or dead chunkserver that no manifest or upload names:
/// its row, its GC queue and its bad reports. The "names nothing" check is
/// one range of the reverse index.
fn remove_chunkserver(
    txn: &redb::WriteTransaction,
    id: ChunkserverId,
) -> StoreResult<Result<CommandResult, MetaError>> {
    let info: ChunkserverInfo = match txn
        .open_table(CHUNKSERVERS)?
        .get(id.to_be_bytes().as_slice())?
    {
        Some(v) => dec(v.value())?,
        None => return Ok(Err(MetaError::NoSuchChunkserver(id))),
    };
    if !matches!(
        info.state,
        ChunkserverState::Draining | ChunkserverState::Down
    ) {
        return Ok(Err(MetaError::Invalid(format!(
            "chunkserver {id} is {:?}: drain it first (cairn admin chunkserver drain {id}), \
             or wait until it is down",
            info.state
        ))));
    }
    if shard_index::places_on(txn, id)? {
        return Ok(Err(MetaError::Invalid(format!(
            "chunkserver {id} still holds shards named by objects or uploads; \
             wait until the drain (or repair) has moved them"
        ))));
    }
    txn.open_table(CHUNKSERVERS)?
        .remove(id.to_be_bytes().as_slice())?;
    let start = gc_key(id, &ShardId([0; 16]));
    let end = gc_key(id, &ShardId([0xff; 16]));
    let due_start = gc_due_key(id, 0, &ShardId([0; 16]));
    let due_end = gc_due_key(id, u64::MAX, &ShardId([0xff; 16]));
    {
        let mut t = txn.open_table(GC_DUE)?;
        let keys: Vec<Vec<u8>> = t
            .range::<&[u8]>(due_start.as_slice()..=due_end.as_slice())?
            .map(|r| r.map(|(k, _)| k.value().to_vec()))
            .collect::<Result<_, _>>()?;
        for k in keys {
            t.remove(k.as_slice())?;
        }
    }
    for def in [GC, BAD, GC_DELETED] {
        let mut t = txn.open_table(def)?;
        let keys: Vec<Vec<u8>> = t
            .range::<&[u8]>(start.as_slice()..=end.as_slice())?
            .map(|r| r.map(|(k, _)| k.value().to_vec()))
            .collect::<Result<_, _>>()?;
        for k in keys {
            t.remove(k.as_slice())?;
        }
    }
    Ok(Ok(CommandResult::Ok))
}

/// Every (chunkserver, shard) reported bad.
pub fn bad_shards(txn: &redb::ReadTransaction) -> StoreResult<HashSet<(ChunkserverId, ShardId)>> {
    let mut out = HashSet::new();
    let Some(t) = open_ro(txn, BAD)? else {
        return Ok(out);
    };
    for r in t.iter()? {
        let (k, _) = r?;
        if let Some(x) = split_cs_shard(k.value()) {
            out.insert(x);
        }
    }
    Ok(out)
}

/// Rows in a model table (redb keeps table lengths: O(1)).
pub fn table_len(
    txn: &redb::ReadTransaction,
    def: TableDefinition<'static, &'static [u8], &'static [u8]>,
) -> StoreResult<u64> {
    match open_ro(txn, def)? {
        Some(t) => Ok(t.len()?),
        None => Ok(0),
    }
}

/// Whether `(cs, shard)` waits in the GC queue.
pub fn gc_contains(
    txn: &redb::ReadTransaction,
    cs: ChunkserverId,
    shard: &ShardId,
) -> StoreResult<bool> {
    match open_ro(txn, GC)? {
        Some(t) => Ok(t.get(gc_key(cs, shard).as_slice())?.is_some()),
        None => Ok(false),
    }
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

/// Calls `f` with every (bucket, key, manifest), in key order.
pub fn for_each_object(
    txn: &redb::ReadTransaction,
    mut f: impl FnMut(&str, &str, ObjectManifest),
) -> StoreResult<()> {
    let Some(t) = open_ro(txn, OBJECTS)? else {
        return Ok(());
    };
    for r in t.iter()? {
        let (k, v) = r?;
        let Ok(k) = std::str::from_utf8(k.value()) else {
            continue;
        };
        let Some((bucket, key)) = k.split_once('\0') else {
            continue;
        };
        f(bucket, key, dec(v.value())?);
    }
    Ok(())
}

/// Calls `f` with the stripes of every uploaded part of every upload in
/// progress.
pub fn for_each_part(
    txn: &redb::ReadTransaction,
    mut f: impl FnMut(&UploadPart),
) -> StoreResult<()> {
    let Some(t) = open_ro(txn, UPLOAD_PARTS)? else {
        return Ok(());
    };
    for r in t.iter()? {
        let (_, v) = r?;
        f(&dec(v.value())?);
    }
    Ok(())
}

/// Every repair-queue item.
pub fn repair_items(txn: &redb::ReadTransaction) -> StoreResult<Vec<RepairItem>> {
    let mut out = Vec::new();
    if let Some(t) = open_ro(txn, REPAIR)? {
        for r in t.iter()? {
            let (_, v) = r?;
            out.push(dec(v.value())?);
        }
    }
    Ok(out)
}

/// The shard whose copy on `cs` repair-queue item `item` is about, if the
/// live version of its object places it there.
fn item_shard(
    objects: &impl ReadableTable<&'static [u8], &'static [u8]>,
    item: &RepairItem,
    cs: ChunkserverId,
) -> StoreResult<Option<ShardId>> {
    if item.chunkserver != Some(cs) {
        return Ok(None);
    }
    let Some(v) = objects.get(object_key(&item.bucket, &item.key).as_slice())? else {
        return Ok(None);
    };
    let m: ObjectManifest = dec(v.value())?;
    if m.version != item.version {
        return Ok(None);
    }
    Ok(m.stripes
        .get(item.stripe as usize)
        .and_then(|s| s.shards.get(usize::from(item.index)))
        .filter(|l| l.chunkserver == Some(cs))
        .map(|l| l.shard))
}

/// Of `listed` (shards an inventory of `cs` lists, so stored there and not
/// found corrupt), those with a stale report: a bad row or a repair-queue
/// item. Costs a lookup per listed shard plus one pass over the repair
/// queue (bounded by damage, not by objects).
pub fn stale_reports(
    txn: &redb::ReadTransaction,
    cs: ChunkserverId,
    listed: &[ShardId],
) -> StoreResult<Vec<ShardId>> {
    let mut out: HashSet<ShardId> = HashSet::new();
    if let Some(t) = open_ro(txn, BAD)? {
        for s in listed {
            if t.get(gc_key(cs, s).as_slice())?.is_some() {
                out.insert(*s);
            }
        }
    }
    if let (Some(q), Some(objects)) = (open_ro(txn, REPAIR)?, open_ro(txn, OBJECTS)?) {
        let seen: HashSet<ShardId> = listed.iter().copied().collect();
        for r in q.iter()? {
            let (_, v) = r?;
            let item: RepairItem = dec(v.value())?;
            if let Some(s) = item_shard(&objects, &item, cs)?.filter(|s| seen.contains(s)) {
                out.insert(s);
            }
        }
    }
    let mut out: Vec<ShardId> = out.into_iter().collect();
    out.sort();
    Ok(out)
}

/// Drops the repair-queue items about the copies on `cs` of `shards`,
/// which were seen healthy there (`Command::ClearBadShards`): a read that
/// could not get them is no verdict once an inventory lists them.
fn clear_seen_repairs(
    txn: &redb::WriteTransaction,
    cs: ChunkserverId,
    shards: &[ShardId],
) -> StoreResult<()> {
    let seen: HashSet<ShardId> = shards.iter().copied().collect();
    let objects = txn.open_table(OBJECTS)?;
    let mut q = txn.open_table(REPAIR)?;
    let mut stale = Vec::new();
    for r in q.iter()? {
        let (k, v) = r?;
        let item: RepairItem = dec(v.value())?;
        if item_shard(&objects, &item, cs)?.is_some_and(|s| seen.contains(&s)) {
            stale.push(k.value().to_vec());
        }
    }
    for k in stale {
        q.remove(k.as_slice())?;
    }
    Ok(())
}

/// The zone cap of a stripe with EC `ec` in a cluster of `zones` counted
/// zones: `max(m, ceil((k + m) / zones))`. With at least `ceil((k+m)/m)`
/// zones, losing a whole zone loses at most m shards.
pub fn zone_cap(ec: EcParams, zones: usize) -> usize {
    usize::from(ec.m).max(ec.total().div_ceil(zones.max(1)))
}

/// The placement invariant every stripe is held to, decided from the
/// `chunkservers` table alone (so every replica decides alike): no two
/// shards of a stripe on one chunkserver, and at most [`zone_cap`] shards
/// of a stripe per zone. The counted zones are the distinct zones of the
/// registered chunkservers that are not `Draining`: a `Down` chunkserver
/// still counts (it may return; removing it is an operator's decision), a
/// draining one does not (its zone may be about to disappear, and counting
/// it would make the drain impossible to finish). Unwritten locations
/// (`chunkserver: None`) count for nothing.
#[derive(Debug, Clone, Default)]
pub struct PlacementRules {
    zone_of: HashMap<ChunkserverId, String>,
    zones: usize,
}

/// One way a stripe breaks the placement invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeViolation {
    /// What is wrong.
    pub kind: ViolationKind,
    /// The chunkserver (same-chunkserver and unknown kinds).
    pub chunkserver: Option<ChunkserverId>,
    /// The zone (zone-cap kind).
    pub zone: Option<String>,
    /// The shard indexes concerned, ascending.
    pub indexes: Vec<u8>,
}

impl StripeViolation {
    /// A sentence for humans and error messages.
    pub fn describe(&self, cap: usize) -> String {
        let idx: Vec<String> = self.indexes.iter().map(|i| i.to_string()).collect();
        let idx = idx.join(", ");
        match self.kind {
            ViolationKind::SameChunkserver => format!(
                "shards {idx} are all on chunkserver {}",
                self.chunkserver.unwrap_or(0)
            ),
            ViolationKind::ZoneCap => format!(
                "shards {idx} are in zone {:?}: more than the zone cap of {cap}",
                self.zone.as_deref().unwrap_or("")
            ),
            ViolationKind::UnknownChunkserver => format!(
                "shards {idx} are on chunkserver {}, which is not registered",
                self.chunkserver.unwrap_or(0)
            ),
            ViolationKind::Index => format!(
                "shards {idx} on chunkserver {} disagree with the reverse shard index",
                self.chunkserver.unwrap_or(0)
            ),
        }
    }
}

impl PlacementRules {
    /// The rules for a cluster of these chunkservers.
    pub fn new(all: &[ChunkserverInfo]) -> Self {
        let zones: HashSet<&str> = all
            .iter()
            .filter(|c| c.state != ChunkserverState::Draining)
            .map(|c| c.zone.as_str())
            .collect();
        PlacementRules {
            zone_of: all.iter().map(|c| (c.id, c.zone.clone())).collect(),
            zones: zones.len().max(1),
        }
    }

    /// The rules as the `chunkservers` table of a write transaction says.
    fn load(txn: &redb::WriteTransaction) -> StoreResult<Self> {
        let mut all = Vec::new();
        for r in txn.open_table(CHUNKSERVERS)?.iter()? {
            let (_, v) = r?;
            all.push(dec::<ChunkserverInfo>(v.value())?);
        }
        Ok(PlacementRules::new(&all))
    }

    /// Counted zones (at least 1).
    pub fn zones(&self) -> usize {
        self.zones
    }

    /// The zone cap for a stripe with EC `ec`.
    pub fn cap(&self, ec: EcParams) -> usize {
        zone_cap(ec, self.zones)
    }

    /// The zone of a registered chunkserver.
    pub fn zone(&self, cs: ChunkserverId) -> Option<&str> {
        self.zone_of.get(&cs).map(String::as_str)
    }

    /// Every way the shards of one stripe (by index) break the invariant:
    /// same-chunkserver and unknown-chunkserver violations by chunkserver
    /// id, then zone-cap violations by zone name.
    pub fn check(&self, ec: EcParams, shards: &[ShardLoc]) -> Vec<StripeViolation> {
        self.check_locs(ec, shards.iter().map(|l| l.chunkserver))
    }

    /// [`PlacementRules::check`] over the chunkserver of each index.
    pub fn check_locs(
        &self,
        ec: EcParams,
        locs: impl Iterator<Item = Option<ChunkserverId>>,
    ) -> Vec<StripeViolation> {
        let cap = self.cap(ec);
        let mut by_cs: BTreeMap<ChunkserverId, Vec<u8>> = BTreeMap::new();
        for (i, c) in locs.enumerate().take(ec.total()) {
            if let Some(c) = c {
                by_cs.entry(c).or_default().push(i as u8);
            }
        }
        let mut out = Vec::new();
        let mut by_zone: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
        for (c, idx) in &by_cs {
            match self.zone(*c) {
                None => out.push(StripeViolation {
                    kind: ViolationKind::UnknownChunkserver,
                    chunkserver: Some(*c),
                    zone: None,
                    indexes: idx.clone(),
                }),
                Some(z) => by_zone.entry(z).or_default().extend(idx.iter().copied()),
            }
            if idx.len() > 1 {
                out.push(StripeViolation {
                    kind: ViolationKind::SameChunkserver,
                    chunkserver: Some(*c),
                    zone: None,
                    indexes: idx.clone(),
                });
            }
        }
        for (z, mut idx) in by_zone {
            if idx.len() > cap {
                idx.sort_unstable();
                out.push(StripeViolation {
                    kind: ViolationKind::ZoneCap,
                    chunkserver: None,
                    zone: Some(z.to_string()),
                    indexes: idx,
                });
            }
        }
        out
    }

    /// The first violation a write may not introduce in any of `stripes`
    /// (`zone_cap`: whether the zone cap is enforced too), as a
    /// `Placement` error. Shards on unregistered chunkservers are the
    /// auditor's business, not a reason to refuse a write.
    fn refuse_write(
        &self,
        ec: EcParams,
        stripes: &[StripeManifest],
        zone_cap: bool,
        what: &str,
    ) -> Result<(), MetaError> {
        for (si, s) in stripes.iter().enumerate() {
            let v = self
                .check(ec, &s.shards)
                .into_iter()
                .find(|v| match v.kind {
                    ViolationKind::SameChunkserver => true,
                    ViolationKind::ZoneCap => zone_cap,
                    ViolationKind::UnknownChunkserver | ViolationKind::Index => false,
                });
            if let Some(v) = v {
                return Err(MetaError::Placement {
                    need: ec.total(),
                    why: format!(
                        "{what} stripe {si} breaks the placement invariant: {}",
                        v.describe(self.cap(ec))
                    ),
                });
            }
        }
        Ok(())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// One page of `Query::AuditPlacement`. The cursor is `o` and the hex of
/// the last object key walked, `p` and the hex of the last upload-part key,
/// or `i` and the hex of the last reverse-index key (`i` alone: its start):
/// objects first, then uploaded parts, each in key order, then the index.
fn audit_page(
    txn: &redb::ReadTransaction,
    cursor: Option<&str>,
    limit: u64,
) -> StoreResult<Result<QueryResult, MetaError>> {
    let bad_cursor = || {
        Ok(Err(MetaError::Invalid(format!(
            "bad audit cursor {:?}",
            cursor.unwrap_or("")
        ))))
    };
    let (in_parts, after) = match cursor {
        None => (false, None),
        Some(c) => {
            let (tag, rest) = c.split_at(c.len().min(1));
            let Some(bytes) = unhex(rest) else {
                return bad_cursor();
            };
            match tag {
                "o" => (false, Some(bytes)),
                "p" => (true, Some(bytes)),
                "i" => {
                    return audit_index_page(txn, Some(bytes), limit);
                }
                _ => return bad_cursor(),
            }
        }
    };
    let rules = PlacementRules::new(&chunkservers(txn)?);
    let mut page = AuditPage::default();
    let push = |page: &mut AuditPage,
                bucket: &str,
                key: &str,
                upload: Option<(StripeId, u32)>,
                row: OwnerRow,
                version: StripeId,
                ec: EcParams,
                stripes: &[StripeManifest]|
     -> StoreResult<()> {
        let cap = rules.cap(ec);
        for (si, s) in stripes.iter().enumerate() {
            let mut found = rules.check(ec, &s.shards);
            for (idx, l) in s.shards.iter().enumerate() {
                let Some(cs) = l.chunkserver else { continue };
                let want = shard_index::Owner {
                    row: row.clone(),
                    version,
                    stripe: si as u64,
                    index: idx as u8,
                };
                if shard_index::owner(txn, cs, &l.shard)?.as_ref() != Some(&want) {
                    found.push(StripeViolation {
                        kind: ViolationKind::Index,
                        chunkserver: Some(cs),
                        zone: None,
                        indexes: vec![idx as u8],
                    });
                }
            }
            for v in found {
                page.violations.push(PlacementViolation {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    upload: upload.map(|u| u.0),
                    part: upload.map(|u| u.1),
                    stripe: si as u64,
                    kind: v.kind,
                    chunkserver: v.chunkserver,
                    zone: v.zone.clone(),
                    indexes: v.indexes.clone(),
                    detail: v.describe(cap),
                });
            }
        }
        page.manifests += 1;
        page.stripes += stripes.len() as u64;
        Ok(())
    };
    if !in_parts {
        let t = open_ro(txn, OBJECTS)?;
        let lower = match &after {
            Some(a) => Bound::Excluded(a.as_slice()),
            None => Bound::Unbounded,
        };
        if let Some(t) = t {
            for r in t.range::<&[u8]>((lower, Bound::Unbounded))? {
                let (k, v) = r?;
                let m: ObjectManifest = dec(v.value())?;
                let raw = k.value();
                let (bucket, key) = match raw.iter().position(|b| *b == 0) {
                    Some(p) => (
                        String::from_utf8_lossy(&raw[..p]).into_owned(),
                        String::from_utf8_lossy(&raw[p + 1..]).into_owned(),
                    ),
                    None => (String::from_utf8_lossy(raw).into_owned(), String::new()),
                };
                let row = OwnerRow::Object(raw.to_vec());
                push(
                    &mut page, &bucket, &key, None, row, m.version, m.ec, &m.stripes,
                )?;
                if page.stripes >= limit {
                    page.next = Some(format!("o{}", hex(raw)));
                    return Ok(Ok(QueryResult::Audit(page)));
                }
            }
        }
    }
    // Parts: the upload row gives the bucket, the key and the EC.
    let mut uploads: HashMap<StripeId, UploadInfo> = HashMap::new();
    if let Some(t) = open_ro(txn, UPLOADS)? {
        for r in t.iter()? {
            let (_, v) = r?;
            let u: UploadInfo = dec(v.value())?;
            uploads.insert(u.id, u);
        }
    }
    let lower = match (in_parts, &after) {
        (true, Some(a)) => Bound::Excluded(a.as_slice()),
        _ => Bound::Unbounded,
    };
    if let Some(t) = open_ro(txn, UPLOAD_PARTS)? {
        for r in t.range::<&[u8]>((lower, Bound::Unbounded))? {
            let (k, v) = r?;
            let p: UploadPart = dec(v.value())?;
            let raw = k.value();
            let mut id = [0u8; 16];
            if let Some(b) = raw.get(..16) {
                id.copy_from_slice(b);
            }
            let id = StripeId(id);
            let Some(u) = uploads.get(&id) else { continue };
            push(
                &mut page,
                &u.bucket,
                &u.key,
                Some((id, p.info.number)),
                OwnerRow::Part(raw.to_vec()),
                id,
                u.ec,
                &p.stripes,
            )?;
            if page.stripes >= limit {
                page.next = Some(format!("p{}", hex(raw)));
                return Ok(Ok(QueryResult::Audit(page)));
            }
        }
    }
    // Then the reverse index itself, from its start, with what is left of
    // the page.
    let rest = limit.saturating_sub(page.stripes);
    if rest == 0 {
        page.next = Some("i".to_string());
        return Ok(Ok(QueryResult::Audit(page)));
    }
    if let Ok(QueryResult::Audit(tail)) = audit_index_page(txn, None, rest)? {
        page.violations.extend(tail.violations);
        page.next = tail.next;
    }
    Ok(Ok(QueryResult::Audit(page)))
}

/// The last phase of the audit: every reverse-index row after `after` must
/// be placed, by the row it names, at its stripe and index. Rows count
/// towards `limit` like stripes.
fn audit_index_page(
    txn: &redb::ReadTransaction,
    after: Option<Vec<u8>>,
    limit: u64,
) -> StoreResult<Result<QueryResult, MetaError>> {
    let mut page = AuditPage::default();
    let Some(t) = open_ro(txn, shard_index::SHARD_OWNERS)? else {
        return Ok(Ok(QueryResult::Audit(page)));
    };
    let objects = open_ro(txn, OBJECTS)?;
    let parts = open_ro(txn, UPLOAD_PARTS)?;
    let lower = match &after {
        Some(a) if !a.is_empty() => Bound::Excluded(a.as_slice()),
        _ => Bound::Unbounded,
    };
    // Decoded rows, so an object's many shards decode it once per page.
    let mut cache: HashMap<Vec<u8>, Option<Vec<StripeManifest>>> = HashMap::new();
    let mut rows = 0u64;
    for r in t.range::<&[u8]>((lower, Bound::Unbounded))? {
        let (k, v) = r?;
        let raw = k.value();
        let Some((cs, shard)) = split_cs_shard(raw) else {
            return Err(redb::Error::Corrupted(
                "shard index key of bad length".into(),
            ));
        };
        let owner = shard_index::decode(v.value())?;
        let (table, row_key, is_part) = match &owner.row {
            shard_index::OwnerRow::Object(k) => (&objects, k, false),
            shard_index::OwnerRow::Part(k) => (&parts, k, true),
        };
        if cache.len() > 4096 {
            cache.clear();
        }
        let cache_key = [[u8::from(is_part)].as_slice(), row_key.as_slice()].concat();
        if !cache.contains_key(&cache_key) {
            let stripes = match table {
                Some(t) => match t.get(row_key.as_slice())? {
                    Some(v) if is_part => Some(dec::<UploadPart>(v.value())?.stripes),
                    Some(v) => Some(dec::<ObjectManifest>(v.value())?.stripes),
                    None => None,
                },
                None => None,
            };
            cache.insert(cache_key.clone(), stripes);
        }
        let placed = cache
            .get(&cache_key)
            .and_then(|s| s.as_ref())
            .and_then(|s| usize::try_from(owner.stripe).ok().and_then(|i| s.get(i)))
            .and_then(|s| s.shards.get(usize::from(owner.index)))
            .is_some_and(|l| l.shard == shard && l.chunkserver == Some(cs));
        if !placed {
            let (bucket, key) = if is_part {
                (String::new(), String::new())
            } else {
                match row_key.iter().position(|b| *b == 0) {
                    Some(p) => (
                        String::from_utf8_lossy(&row_key[..p]).into_owned(),
                        String::from_utf8_lossy(&row_key[p + 1..]).into_owned(),
                    ),
                    None => (String::from_utf8_lossy(row_key).into_owned(), String::new()),
                }
            };
            page.violations.push(PlacementViolation {
                bucket,
                key,
                upload: is_part.then_some(owner.version),
                part: None,
                stripe: owner.stripe,
                kind: ViolationKind::Index,
                chunkserver: Some(cs),
                zone: None,
                indexes: vec![owner.index],
                detail: format!(
                    "the reverse shard index places shard {} on chunkserver {cs}, but its row does not",
                    shard.to_hex()
                ),
            });
        }
        rows += 1;
        if rows >= limit {
            page.next = Some(format!("i{}", hex(raw)));
            return Ok(Ok(QueryResult::Audit(page)));
        }
    }
    Ok(Ok(QueryResult::Audit(page)))
}

/// An inline manifest holds exactly its bytes (bounded) and no stripes.
fn validate_inline(m: &ObjectManifest) -> Result<(), InvalidInput> {
    let Some(inline) = &m.inline else {
        return Ok(());
    };
    if inline.data.len() > MAX_INLINE {
        return Err(InvalidInput(format!(
            "inline data of {} bytes is over {MAX_INLINE}",
            inline.data.len()
        )));
    }
    if inline.data.len() as u64 != m.size || !m.stripes.is_empty() || !m.parts.is_empty() {
        return Err(InvalidInput(
            "an inline manifest holds its whole object and no stripes".into(),
        ));
    }
    if !inline.verify() {
        return Err(InvalidInput("inline data does not match its BLAKE3".into()));
    }
    Ok(())
}

/// Forgets the repair-queue items of an object version that is no longer
/// live (overwritten or deleted): they could never be planned again.
fn drop_repairs(txn: &redb::WriteTransaction, version: &StripeId) -> StoreResult<()> {
    let mut t = txn.open_table(REPAIR)?;
    let mut start = [0u8; 25];
    start[..16].copy_from_slice(&version.0);
    let mut end = [0xffu8; 25];
    end[..16].copy_from_slice(&version.0);
    let keys: Vec<Vec<u8>> = t
        .range::<&[u8]>(start.as_slice()..=end.as_slice())?
        .map(|r| r.map(|(k, _)| k.value().to_vec()))
        .collect::<Result<_, _>>()?;
    for k in keys {
        t.remove(k.as_slice())?;
    }
    Ok(())
}

/// Queues for repair every shard of `m` that no chunkserver holds (a write
/// that could not place every shard), in the transaction that commits it:
/// the planner learns of the degraded stripe by construction, not from a
/// follow-up command the writer may never send.
fn queue_unplaced(
    txn: &redb::WriteTransaction,
    bucket: &str,
    key: &str,
    m: &ObjectManifest,
) -> StoreResult<()> {
    let mut t = txn.open_table(REPAIR)?;
    for (si, s) in m.stripes.iter().enumerate() {
        for (i, l) in s.shards.iter().enumerate() {
            if l.chunkserver.is_some() {
                continue;
            }
            let item = RepairItem {
                bucket: bucket.to_string(),
                key: key.to_string(),
                version: m.version,
                stripe: si as u64,
                index: i as u8,
                chunkserver: None,
                reason: "written degraded".into(),
            };
            t.insert(repair_key(&item).as_slice(), enc(&item)?.as_slice())?;
        }
    }
    Ok(())
}

fn repair_key(item: &RepairItem) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[..16].copy_from_slice(&item.version.0);
    k[16..24].copy_from_slice(&item.stripe.to_be_bytes());
    k[24] = item.index;
    k
}

fn u64_from(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

/// Queues shards for deletion at entry time `now`. A shard queued already
/// keeps its first time: it has been unreferenced since then.
fn queue_gc(
    txn: &redb::WriteTransaction,
    now: u64,
    shards: impl Iterator<Item = (ChunkserverId, ShardId)>,
) -> StoreResult<()> {
    let mut t = txn.open_table(GC)?;
    let mut due = txn.open_table(GC_DUE)?;
    for (cs, s) in shards {
        let k = gc_key(cs, &s);
        if t.get(k.as_slice())?.is_some() {
            continue;
        }
        t.insert(k.as_slice(), now.to_be_bytes().as_slice())?;
        due.insert(gc_due_key(cs, now, &s).as_slice(), [].as_slice())?;
    }
    Ok(())
}

fn gc_due_key(cs: ChunkserverId, at: u64, shard: &ShardId) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&cs.to_be_bytes());
    k[8..16].copy_from_slice(&at.to_be_bytes());
    k[16..].copy_from_slice(&shard.0);
    k
}

/// Removes `(cs, shard)` from the GC queue and its time index.
fn unqueue_gc(txn: &redb::WriteTransaction, cs: ChunkserverId, shard: &ShardId) -> StoreResult<()> {
    let old = txn
        .open_table(GC)?
        .remove(gc_key(cs, shard).as_slice())?
        .map(|v| u64_from(v.value()));
    if let Some(at) = old {
        txn.open_table(GC_DUE)?
            .remove(gc_due_key(cs, at, shard).as_slice())?;
    }
    Ok(())
}

fn tombstone_order_key(at: u64, cs: ChunkserverId, shard: &ShardId) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&at.to_be_bytes());
    k[8..16].copy_from_slice(&cs.to_be_bytes());
    k[16..].copy_from_slice(&shard.0);
    k
}

/// Records tombstones for copies `cs` confirmed deleting at `now`, and
/// forgets tombstones older than [`TOMBSTONE_TTL_MS`] (at most a few more
/// than it adds, so the work per command stays bounded).
fn record_deleted(
    txn: &redb::WriteTransaction,
    cs: ChunkserverId,
    shards: &[ShardId],
    now: u64,
) -> StoreResult<()> {
    let mut t = txn.open_table(GC_DELETED)?;
    let mut order = txn.open_table(GC_DELETED_ORDER)?;
    for s in shards {
        let k = gc_key(cs, s);
        if let Some(old) = t.insert(k.as_slice(), now.to_be_bytes().as_slice())? {
            let old = u64_from(old.value());
            order.remove(tombstone_order_key(old, cs, s).as_slice())?;
        }
        order.insert(tombstone_order_key(now, cs, s).as_slice(), [].as_slice())?;
    }
    let Some(cutoff) = now.checked_sub(TOMBSTONE_TTL_MS) else {
        return Ok(());
    };
    let end = tombstone_order_key(cutoff, 0, &ShardId([0; 16]));
    let old: Vec<Vec<u8>> = order
        .range::<&[u8]>(..end.as_slice())?
        .take(2 * shards.len() + 16)
        .map(|r| r.map(|(k, _)| k.value().to_vec()))
        .collect::<Result<_, _>>()?;
    for k in old {
        order.remove(k.as_slice())?;
        if k.len() == 32 {
            t.remove(&k[8..])?;
        }
    }
    Ok(())
}

/// Drops the tombstone of `(cs, shard)`: a fresh copy lives there now.
fn forget_deleted(
    txn: &redb::WriteTransaction,
    cs: ChunkserverId,
    shard: &ShardId,
) -> StoreResult<()> {
    let old = txn
        .open_table(GC_DELETED)?
        .remove(gc_key(cs, shard).as_slice())?
        .map(|v| u64_from(v.value()));
    if let Some(at) = old {
        txn.open_table(GC_DELETED_ORDER)?
            .remove(tombstone_order_key(at, cs, shard).as_slice())?;
    }
    Ok(())
}

fn intent_expiry_key(expires: u64, intent: &StripeId) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&expires.to_be_bytes());
    k[8..].copy_from_slice(&intent.0);
    k
}

fn intent_row_key(intent: &StripeId, cs: ChunkserverId, shard: &ShardId) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..16].copy_from_slice(&intent.0);
    k[16..24].copy_from_slice(&cs.to_be_bytes());
    k[24..].copy_from_slice(&shard.0);
    k
}

/// Applies `Command::RegisterIntent`.
fn register_intent(
    txn: &redb::WriteTransaction,
    intent: &StripeId,
    shards: &[(ChunkserverId, ShardId)],
    lease_ms: u64,
    now: u64,
) -> StoreResult<Result<CommandResult, MetaError>> {
    if shards.len() > MAX_INTENT_SHARDS {
        return Ok(Err(MetaError::Invalid(format!(
            "an intent registers at most {MAX_INTENT_SHARDS} shards per command, not {}",
            shards.len()
        ))));
    }
    if lease_ms == 0 {
        return Ok(Err(MetaError::Invalid(
            "an intent lease must not be 0".into(),
        )));
    }
    let mut intents = txn.open_table(INTENTS)?;
    let old = intents
        .get(intent.0.as_slice())?
        .map(|v| u64_from(v.value()));
    if let Some(old) = old {
        if now > 0 && old < now {
            return Ok(Err(MetaError::IntentExpired(format!(
                "intent {} expired {} ms ago",
                intent.to_hex(),
                now - old
            ))));
        }
    }
    {
        let named = txn.open_table(INTENT_SHARDS)?;
        for (cs, s) in shards {
            if let Some(v) = named.get(gc_key(*cs, s).as_slice())? {
                if v.value() != intent.0.as_slice() {
                    return Ok(Err(MetaError::Invalid(format!(
                        "shard {} on chunkserver {cs} belongs to another write",
                        s.to_hex()
                    ))));
                }
            }
        }
    }
    let expires = now.saturating_add(lease_ms).max(old.unwrap_or(0));
    let mut expiry = txn.open_table(INTENT_EXPIRY)?;
    if let Some(old) = old {
        expiry.remove(intent_expiry_key(old, intent).as_slice())?;
    }
    expiry.insert(intent_expiry_key(expires, intent).as_slice(), [].as_slice())?;
    intents.insert(intent.0.as_slice(), expires.to_be_bytes().as_slice())?;
    let mut named = txn.open_table(INTENT_SHARDS)?;
    let mut rows = txn.open_table(INTENT_ROWS)?;
    for (cs, s) in shards {
        named.insert(gc_key(*cs, s).as_slice(), intent.0.as_slice())?;
        rows.insert(intent_row_key(intent, *cs, s).as_slice(), [].as_slice())?;
    }
    Ok(Ok(CommandResult::Ok))
}

/// Applies `Command::WithIntent`: checks the intent, applies the commit,
/// drops the intent on success.
fn commit_with_intent(
    txn: &redb::WriteTransaction,
    intent: &StripeId,
    inner: &Command,
    now: u64,
) -> StoreResult<Result<CommandResult, MetaError>> {
    let placed: Vec<(ChunkserverId, ShardId)> = match inner {
        Command::PutObject { manifest, .. } => manifest.placed_shards().collect(),
        Command::PutPart { part, .. } => placed_in(&part.stripes).collect(),
        _ => {
            return Ok(Err(MetaError::Invalid(
                "only PutObject and PutPart commit under a write intent".into(),
            )))
        }
    };
    let lost = |why: String| Ok(Err(MetaError::IntentExpired(why)));
    let expires = txn
        .open_table(INTENTS)?
        .get(intent.0.as_slice())?
        .map(|v| u64_from(v.value()));
    let Some(expires) = expires else {
        return lost(format!(
            "intent {} is unknown or was reaped",
            intent.to_hex()
        ));
    };
    if now > 0 && expires < now {
        return lost(format!(
            "intent {} expired {} ms ago",
            intent.to_hex(),
            now - expires
        ));
    }
    {
        let named = txn.open_table(INTENT_SHARDS)?;
        let gc = txn.open_table(GC)?;
        for (cs, s) in &placed {
            let k = gc_key(*cs, s);
            let ours = named
                .get(k.as_slice())?
                .is_some_and(|v| v.value() == intent.0.as_slice());
            if !ours {
                return lost(format!(
                    "shard {} on chunkserver {cs} is not registered under intent {}",
                    s.to_hex(),
                    intent.to_hex()
                ));
            }
            if gc.get(k.as_slice())?.is_some() {
                return lost(format!(
                    "shard {} on chunkserver {cs} is queued for deletion",
                    s.to_hex()
                ));
            }
        }
    }
    let r = apply_inner(txn, inner, now)?;
    if r.is_ok() {
        drop_intent(txn, intent, usize::MAX)?;
    }
    Ok(r)
}

/// Removes up to `budget` shard rows of `intent`, and the intent itself
/// once none is left; returns the rows removed and whether it is gone.
fn drop_intent(
    txn: &redb::WriteTransaction,
    intent: &StripeId,
    budget: usize,
) -> StoreResult<(usize, bool)> {
    let start = intent_row_key(intent, 0, &ShardId([0; 16]));
    let end = intent_row_key(intent, u64::MAX, &ShardId([0xff; 16]));
    let mut rows = txn.open_table(INTENT_ROWS)?;
    let keys: Vec<Vec<u8>> = rows
        .range::<&[u8]>(start.as_slice()..=end.as_slice())?
        .take(budget.saturating_add(1))
        .map(|r| r.map(|(k, _)| k.value().to_vec()))
        .collect::<Result<_, _>>()?;
    let all = keys.len() <= budget;
    let mut named = txn.open_table(INTENT_SHARDS)?;
    let mut removed = 0;
    for k in keys.iter().take(budget) {
        rows.remove(k.as_slice())?;
        if k.len() == 40 {
            named.remove(&k[16..])?;
        }
        removed += 1;
    }
    if all {
        let old = txn
            .open_table(INTENTS)?
            .remove(intent.0.as_slice())?
            .map(|v| u64_from(v.value()));
        if let Some(old) = old {
            txn.open_table(INTENT_EXPIRY)?
                .remove(intent_expiry_key(old, intent).as_slice())?;
        }
    }
    Ok((removed, all))
}

/// Applies `Command::ExpireIntents`: drops intents whose lease ended
/// before `now`, oldest first, removing at most `limit` shard rows.
fn expire_intents(txn: &redb::WriteTransaction, now: u64, limit: usize) -> StoreResult<()> {
    if now == 0 {
        return Ok(());
    }
    let mut budget = limit.max(1);
    loop {
        let first = {
            let t = txn.open_table(INTENT_EXPIRY)?;
            let end = intent_expiry_key(now, &StripeId([0; 16]));
            let first = t
                .range::<&[u8]>(..end.as_slice())?
                .next()
                .transpose()?
                .map(|(k, _)| k.value().to_vec());
            first
        };
        let Some(k) = first else { return Ok(()) };
        if k.len() != 24 {
            return Ok(());
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&k[8..]);
        let (removed, gone) = drop_intent(txn, &StripeId(id), budget)?;
        budget = budget.saturating_sub(removed);
        if !gone || budget == 0 {
            return Ok(());
        }
    }
}

/// Whether some write intent's lease ended before `now` (the reaper's
/// cheap check before proposing `ExpireIntents`).
pub fn intents_expired(txn: &redb::ReadTransaction, now: u64) -> StoreResult<bool> {
    let Some(t) = open_ro(txn, INTENT_EXPIRY)? else {
        return Ok(false);
    };
    let end = intent_expiry_key(now, &StripeId([0; 16]));
    let found = t.range::<&[u8]>(..end.as_slice())?.next().is_some();
    Ok(found)
}

/// The shards of `shards` on `cs` that a write intent names (live or not
/// yet reaped): orphan GC must leave them alone.
pub fn intent_named(
    txn: &redb::ReadTransaction,
    cs: ChunkserverId,
    shards: impl Iterator<Item = ShardId>,
) -> StoreResult<HashSet<ShardId>> {
    let mut out = HashSet::new();
    let Some(t) = open_ro(txn, INTENT_SHARDS)? else {
        return Ok(out);
    };
    for s in shards {
        if t.get(gc_key(cs, &s).as_slice())?.is_some() {
            out.insert(s);
        }
    }
    Ok(out)
}

/// Upgrades tables written by older binaries, in place and idempotently
/// (run when the state machine opens and after a snapshot is installed):
/// GC rows with an empty value (from before GC had a minimum delay) become
/// "queued at time 0", i.e. due at once, as they were, and get their
/// `gc_due` index row. Deterministic: every replica rewrites the same rows.
///
/// Format 1 files have no reverse shard index: [`build_shard_index`] builds
/// it once (the one full walk of every object and part, at upgrade).
pub fn migrate(txn: &redb::WriteTransaction) -> StoreResult<()> {
    build_shard_index(txn)?;
    let mut counters = txn.open_table(COUNTERS)?;
    if counters.get(b"gc_due_index".as_slice())?.is_some() {
        return Ok(());
    }
    counters.insert(b"gc_due_index".as_slice(), 1u64.to_be_bytes().as_slice())?;
    drop(counters);
    let mut gc = txn.open_table(GC)?;
    let legacy: Vec<Vec<u8>> = gc
        .iter()?
        .filter_map(|r| match r {
            Ok((k, v)) if v.value().len() != 8 => Some(Ok(k.value().to_vec())),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()?;
    let mut due = txn.open_table(GC_DUE)?;
    for k in legacy {
        let Some((cs, s)) = split_cs_shard(&k) else {
            continue;
        };
        gc.insert(k.as_slice(), 0u64.to_be_bytes().as_slice())?;
        due.insert(gc_due_key(cs, 0, &s).as_slice(), [].as_slice())?;
    }
    Ok(())
}

/// Builds the `shard_owners` index from every object and uploaded part,
/// and the `bucket_stats` counters from every object, once per state (a
/// counter marks them built). Deterministic.
fn build_shard_index(txn: &redb::WriteTransaction) -> StoreResult<()> {
    let mut counters = txn.open_table(COUNTERS)?;
    if counters.get(b"shard_index".as_slice())?.is_some() {
        return Ok(());
    }
    counters.insert(b"shard_index".as_slice(), 1u64.to_be_bytes().as_slice())?;
    drop(counters);
    txn.delete_table(shard_index::SHARD_OWNERS)?;
    txn.open_table(shard_index::SHARD_OWNERS)?;
    txn.delete_table(stats::BUCKET_STATS)?;
    txn.open_table(stats::BUCKET_STATS)?;
    let objects = txn.open_table(OBJECTS)?;
    for r in objects.iter()? {
        let (k, v) = r?;
        let m: ObjectManifest = dec(v.value())?;
        let row = OwnerRow::Object(k.value().to_vec());
        shard_index::add(txn, &row, m.version, 0, &m.stripes)?;
        let raw = k.value();
        let bucket = raw
            .iter()
            .position(|b| *b == 0)
            .map(|p| &raw[..p])
            .unwrap_or(raw);
        stats::replace(txn, &String::from_utf8_lossy(bucket), None, Some(&m))?;
    }
    drop(objects);
    let parts = txn.open_table(UPLOAD_PARTS)?;
    for r in parts.iter()? {
        let (k, v) = r?;
        let p: UploadPart = dec(v.value())?;
        let upload = k
            .value()
            .get(..16)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(StripeId)
            .ok_or_else(|| redb::Error::Corrupted("upload part key of bad length".into()))?;
        let row = OwnerRow::Part(k.value().to_vec());
        shard_index::add(txn, &row, upload, 0, &p.stripes)?;
    }
    Ok(())
}

fn check_condition(
    cond: &PutCondition,
    current: Option<&ObjectManifest>,
    bucket: &str,
    key: &str,
) -> Result<(), MetaError> {
    match (cond, current) {
        (PutCondition::None, _) => Ok(()),
        (PutCondition::IfNoneMatch, None) => Ok(()),
        (PutCondition::IfNoneMatch, Some(_)) => Err(MetaError::PreconditionFailed(format!(
            "{bucket}/{key} exists"
        ))),
        (PutCondition::IfMatch(_), None) | (PutCondition::IfVersion(_), None) => {
            Err(MetaError::NoSuchKey {
                bucket: bucket.into(),
                key: key.into(),
            })
        }
        (PutCondition::IfMatch(etag), Some(m)) => {
            let want = etag.trim_matches('"');
            if want == "*" || want == m.etag {
                Ok(())
            } else {
                Err(MetaError::PreconditionFailed(format!(
                    "{bucket}/{key} has ETag {}, not {want}",
                    m.etag
                )))
            }
        }
        (PutCondition::IfVersion(v), Some(m)) => {
            if *v == m.version {
                Ok(())
            } else {
                Err(MetaError::PreconditionFailed(format!(
                    "{bucket}/{key} changed"
                )))
            }
        }
    }
}

/// Answers a read against a consistent snapshot of the tables. Placement
/// (`Allocate`) uses `rand` to spread load: queries are not replicated, so
/// this does not break determinism.
pub fn query(txn: &redb::ReadTransaction, q: &Query) -> StoreResult<QueryResult> {
    Ok(match query_inner(txn, q)? {
        Ok(r) => r,
        Err(e) => QueryResult::Err(e),
    })
}

fn open_ro<'a>(
    txn: &redb::ReadTransaction,
    def: TableDefinition<'a, &'static [u8], &'static [u8]>,
) -> StoreResult<Option<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn get_bucket(txn: &redb::ReadTransaction, name: &str) -> StoreResult<Option<BucketInfo>> {
    let Some(t) = open_ro(txn, BUCKETS)? else {
        return Ok(None);
    };
    match t.get(name.as_bytes())? {
        Some(v) => Ok(Some(dec(v.value())?)),
        None => Ok(None),
    }
}

/// Every chunkserver, by id.
pub fn chunkservers(txn: &redb::ReadTransaction) -> StoreResult<Vec<ChunkserverInfo>> {
    let Some(t) = open_ro(txn, CHUNKSERVERS)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for r in t.iter()? {
        let (_, v) = r?;
        out.push(dec(v.value())?);
    }
    Ok(out)
}

/// Up to `limit` shards queued for deletion from `cs` at or before
/// `queued_before` (ms; the leader passes now minus the GC delay), oldest
/// first: one range of the `gc_due` index, O(limit).
pub fn gc_due(
    txn: &redb::ReadTransaction,
    cs: ChunkserverId,
    limit: usize,
    queued_before: u64,
) -> StoreResult<Vec<ShardId>> {
    let Some(t) = open_ro(txn, GC_DUE)? else {
        return Ok(Vec::new());
    };
    let start = gc_due_key(cs, 0, &ShardId([0; 16]));
    let end = gc_due_key(cs, queued_before, &ShardId([0xff; 16]));
    let mut out = Vec::new();
    for r in t.range::<&[u8]>(start.as_slice()..=end.as_slice())? {
        if out.len() >= limit {
            break;
        }
        let (k, _) = r?;
        let k = k.value();
        if k.len() == 32 {
            let mut id = [0u8; 16];
            id.copy_from_slice(&k[16..]);
            out.push(ShardId(id));
        }
    }
    Ok(out)
}

/// Up to `limit` shards waiting to be deleted from `cs`, due or not.
pub fn gc_pending(
    txn: &redb::ReadTransaction,
    cs: ChunkserverId,
    limit: usize,
) -> StoreResult<Vec<ShardId>> {
    let Some(t) = open_ro(txn, GC)? else {
        return Ok(Vec::new());
    };
    let start = gc_key(cs, &ShardId([0; 16]));
    let end = gc_key(cs, &ShardId([0xff; 16]));
    let mut out = Vec::new();
    for r in t.range::<&[u8]>(start.as_slice()..=end.as_slice())? {
        let (k, _) = r?;
        let k = k.value();
        if k.len() == 24 {
            let mut id = [0u8; 16];
            id.copy_from_slice(&k[8..]);
            out.push(ShardId(id));
        }
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// Number of shards waiting for GC over the whole cluster.
pub fn gc_len(txn: &redb::ReadTransaction) -> StoreResult<u64> {
    match open_ro(txn, GC)? {
        Some(t) => Ok(t.len()?),
        None => Ok(0),
    }
}

fn query_inner(
    txn: &redb::ReadTransaction,
    q: &Query,
) -> StoreResult<Result<QueryResult, MetaError>> {
    match q {
        Query::GetBucket { name } => Ok(match get_bucket(txn, name)? {
            Some(b) => Ok(QueryResult::Bucket(b)),
            None => Err(MetaError::NoSuchBucket(name.clone())),
        }),
        Query::ListBuckets => {
            let mut out = Vec::new();
            if let Some(t) = open_ro(txn, BUCKETS)? {
                for r in t.iter()? {
                    let (_, v) = r?;
                    out.push(dec(v.value())?);
                }
            }
            Ok(Ok(QueryResult::Buckets(out)))
        }
        Query::GetObject { bucket, key } => {
            if get_bucket(txn, bucket)?.is_none() {
                return Ok(Err(MetaError::NoSuchBucket(bucket.clone())));
            }
            let not_found = || MetaError::NoSuchKey {
                bucket: bucket.clone(),
                key: key.clone(),
            };
            let Some(t) = open_ro(txn, OBJECTS)? else {
                return Ok(Err(not_found()));
            };
            Ok(match t.get(object_key(bucket, key).as_slice())? {
                Some(v) => Ok(QueryResult::Object(dec(v.value())?)),
                None => Err(not_found()),
            })
        }
        Query::ListObjects(req) => {
            if get_bucket(txn, &req.bucket)?.is_none() {
                return Ok(Err(MetaError::NoSuchBucket(req.bucket.clone())));
            }
            Ok(list_objects(txn, req)?.map(QueryResult::List))
        }
        Query::ListChunkservers => Ok(Ok(QueryResult::Chunkservers(chunkservers(txn)?))),
        Query::RepairQueue { limit } => {
            let mut out = Vec::new();
            if let Some(t) = open_ro(txn, REPAIR)? {
                for r in t.iter()?.take(*limit) {
                    let (_, v) = r?;
                    out.push(dec(v.value())?);
                }
            }
            Ok(Ok(QueryResult::Repairs(out)))
        }
        Query::GetAccessKey { id } => {
            let Some(t) = open_ro(txn, KEYS)? else {
                return Ok(Err(MetaError::NoSuchAccessKey(id.clone())));
            };
            Ok(match t.get(id.as_bytes())? {
                Some(v) => Ok(QueryResult::AccessKey(dec(v.value())?)),
                None => Err(MetaError::NoSuchAccessKey(id.clone())),
            })
        }
        Query::ListAccessKeys => {
            let mut out = Vec::new();
            if let Some(t) = open_ro(txn, KEYS)? {
                for r in t.iter()? {
                    let (_, v) = r?;
                    out.push(dec(v.value())?);
                }
            }
            Ok(Ok(QueryResult::AccessKeys(out)))
        }
        Query::GetUpload {
            bucket,
            key,
            upload,
        } => {
            let Some(t) = open_ro(txn, UPLOADS)? else {
                return Ok(Err(MetaError::NoSuchUpload(upload.to_hex())));
            };
            Ok(match t.get(upload_key(bucket, key, upload).as_slice())? {
                Some(v) => Ok(QueryResult::Upload(dec(v.value())?)),
                None => Err(MetaError::NoSuchUpload(upload.to_hex())),
            })
        }
        Query::ListParts {
            bucket,
            key,
            upload,
            after,
            max,
        } => {
            let exists = match open_ro(txn, UPLOADS)? {
                Some(t) => t.get(upload_key(bucket, key, upload).as_slice())?.is_some(),
                None => false,
            };
            if !exists {
                return Ok(Err(MetaError::NoSuchUpload(upload.to_hex())));
            }
            let max = (*max).clamp(1, MAX_LIST_KEYS) as usize;
            let mut parts = Vec::new();
            let mut truncated = false;
            if let Some(t) = open_ro(txn, UPLOAD_PARTS)? {
                let start = part_key(upload, after.saturating_add(1));
                let end = part_key(upload, u32::MAX);
                for r in t.range::<&[u8]>(start.as_slice()..=end.as_slice())? {
                    if parts.len() >= max {
                        truncated = true;
                        break;
                    }
                    let (_, v) = r?;
                    let p: UploadPart = dec(v.value())?;
                    let mut info = p.info;
                    info.stripes = p.stripes.len() as u32;
                    parts.push((info, p.created_ms));
                }
            }
            Ok(Ok(QueryResult::Parts { parts, truncated }))
        }
        Query::ListUploads {
            bucket,
            prefix,
            after,
            max,
        } => {
            if get_bucket(txn, bucket)?.is_none() {
                return Ok(Err(MetaError::NoSuchBucket(bucket.clone())));
            }
            let max = (*max).clamp(1, MAX_LIST_KEYS) as usize;
            let mut uploads = Vec::new();
            let mut truncated = false;
            if let Some(t) = open_ro(txn, UPLOADS)? {
                let start: Bound<Vec<u8>> = match after {
                    Some((k, Some(id))) => Bound::Excluded(upload_key(bucket, k, id)),
                    Some((k, None)) => {
                        // Past every upload of key k.
                        let mut b = object_key(bucket, k);
                        b.push(1);
                        Bound::Included(b)
                    }
                    None => Bound::Included(object_key(bucket, prefix)),
                };
                let mut end = object_key(bucket, prefix);
                end.push(0xff);
                let range = t.range::<&[u8]>((
                    match &start {
                        Bound::Included(k) => Bound::Included(k.as_slice()),
                        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
                        Bound::Unbounded => Bound::Unbounded,
                    },
                    Bound::Excluded(end.as_slice()),
                ))?;
                for r in range {
                    let (_, v) = r?;
                    let u: UploadInfo = dec(v.value())?;
                    if !u.key.starts_with(prefix.as_str()) {
                        continue;
                    }
                    if uploads.len() >= max {
                        truncated = true;
                        break;
                    }
                    uploads.push(u);
                }
            }
            Ok(Ok(QueryResult::Uploads { uploads, truncated }))
        }
        Query::Allocate {
            bucket,
            exclude,
            count,
            min,
            placed,
        } => {
            let Some(b) = get_bucket(txn, bucket)? else {
                return Ok(Err(MetaError::NoSuchBucket(bucket.clone())));
            };
            let n = count.unwrap_or(b.ec.total());
            let shard_bytes = u64::from(b.shard_size);
            let all = chunkservers(txn)?;
            let min = min.unwrap_or(n).min(n);
            Ok(place(&all, n, min, b.ec, shard_bytes, exclude, placed).map(QueryResult::Placement))
        }
        Query::AuditPlacement { cursor, stripes } => {
            let limit = stripes
                .unwrap_or(AUDIT_PAGE_STRIPES)
                .clamp(1, AUDIT_PAGE_STRIPES);
            audit_page(txn, cursor.as_deref(), limit)
        }
    }
}

/// Chooses `n` distinct chunkservers (or, when fewer fit, at least `min`)
/// for shards of one stripe of a bucket with EC `ec`: only `Up` servers
/// with room for a shard, none in `exclude` or `placed`, weighted by free
/// space, and no zone holding more than [`PlacementRules::cap`] shards of
/// the stripe, counting the shards already on `placed` (the stripe's other
/// shards when one is re-placed mid-write). The cap is never dropped: when
/// it leaves room for fewer than `n` shards, fewer are returned (at least
/// `min`: a degraded write, queued for repair), otherwise the answer is a
/// `Placement` error saying why.
pub fn place(
    all: &[ChunkserverInfo],
    n: usize,
    min: usize,
    ec: EcParams,
    shard_bytes: u64,
    exclude: &[ChunkserverId],
    placed: &[ChunkserverId],
) -> Result<Vec<ChunkserverInfo>, MetaError> {
    let rules = PlacementRules::new(all);
    let cap = rules.cap(ec);
    let mut per_zone: HashMap<String, usize> = HashMap::new();
    for c in placed {
        if let Some(z) = rules.zone(*c) {
            *per_zone.entry(z.to_string()).or_insert(0) += 1;
        }
    }
    let candidates: Vec<&ChunkserverInfo> = all
        .iter()
        .filter(|c| c.state == ChunkserverState::Up)
        .filter(|c| c.free >= shard_bytes)
        .filter(|c| !exclude.contains(&c.id) && !placed.contains(&c.id))
        .collect();
    // What the zone cap leaves room for: per zone, the free slots under the
    // cap or its candidates, whichever is fewer. A greedy pick that never
    // exceeds the cap always reaches this.
    let mut in_zone: HashMap<&str, usize> = HashMap::new();
    for c in &candidates {
        *in_zone.entry(c.zone.as_str()).or_insert(0) += 1;
    }
    let room: usize = in_zone
        .iter()
        .map(|(z, n)| {
            let used = per_zone.get(*z).copied().unwrap_or(0);
            cap.saturating_sub(used).min(*n)
        })
        .sum();
    let want = n.min(room);
    if want < min.max(1).min(n) || want == 0 {
        let up = all
            .iter()
            .filter(|c| c.state == ChunkserverState::Up)
            .count();
        return Err(MetaError::Placement {
            need: n,
            why: format!(
                "{} usable chunkservers ({} registered, {} up, {} excluded, {} holding other shards of the stripe, others full) in {} zones; with at most {cap} shards of a stripe per zone (of {} counted zones) they take {room}",
                candidates.len(),
                all.len(),
                up,
                exclude.len(),
                placed.len(),
                in_zone.len(),
                rules.zones(),
            ),
        });
    }
    Ok(pick_weighted(&candidates, want, cap, per_zone))
}

fn pick_weighted(
    candidates: &[&ChunkserverInfo],
    n: usize,
    zone_cap: usize,
    mut per_zone: HashMap<String, usize>,
) -> Vec<ChunkserverInfo> {
    use rand::Rng;
    let mut rng = rand::rng();
    let mut pool: Vec<&ChunkserverInfo> = candidates.to_vec();
    let mut out: Vec<ChunkserverInfo> = Vec::with_capacity(n);
    while out.len() < n {
        pool.retain(|c| per_zone.get(c.zone.as_str()).copied().unwrap_or(0) < zone_cap);
        if pool.is_empty() {
            break;
        }
        // Weight by free space in MiB (+1 so an almost full server can still
        // be chosen when nothing else is left).
        let weights: Vec<u64> = pool.iter().map(|c| (c.free >> 20) + 1).collect();
        let total: u64 = weights.iter().sum();
        let mut x = rng.random_range(0..total.max(1));
        let mut idx = 0;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                idx = i;
                break;
            }
            x -= w;
        }
        let c = pool.swap_remove(idx);
        *per_zone.entry(c.zone.clone()).or_insert(0) += 1;
        out.push(c.clone());
    }
    out
}

/// Continuation tokens say whether the last item of a page was a key or a
/// common prefix, so the next page skips exactly what was already returned.
fn encode_token(is_prefix: bool, s: &str) -> String {
    let mut raw = Vec::with_capacity(s.len() + 1);
    raw.push(if is_prefix { b'P' } else { b'K' });
    raw.extend_from_slice(s.as_bytes());
    hex::encode(raw)
}

fn decode_token(t: &str) -> Result<(bool, String), MetaError> {
    let bad = || MetaError::Invalid("invalid continuation token".into());
    let raw = hex::decode(t).map_err(|_| bad())?;
    let (first, rest) = raw.split_first().ok_or_else(bad)?;
    let s = String::from_utf8(rest.to_vec()).map_err(|_| bad())?;
    match first {
        b'P' => Ok((true, s)),
        b'K' => Ok((false, s)),
        _ => Err(bad()),
    }
}

/// Lists one page with S3 ListObjectsV2 semantics, by range scans only:
/// keys rolled up into a common prefix are skipped by seeking past the
/// prefix, so a page costs O(page) reads, not O(bucket).
pub fn list_objects(
    txn: &redb::ReadTransaction,
    req: &ListRequest,
) -> StoreResult<Result<ListPage, MetaError>> {
    let max = req.max_keys.min(MAX_LIST_KEYS) as usize;
    let mut page = ListPage::default();
    let Some(t) = open_ro(txn, OBJECTS)? else {
        return Ok(Ok(page));
    };
    let delimiter = req.delimiter.as_deref().filter(|d| !d.is_empty());
    let bucket_prefix = object_key(&req.bucket, "");
    let full = |s: &str| {
        let mut k = bucket_prefix.clone();
        k.extend_from_slice(s.as_bytes());
        k
    };
    // 0xFF never occurs in UTF-8, so prefix ++ 0xFF sorts after every key
    // that starts with prefix.
    let past = |s: &str| {
        let mut k = full(s);
        k.push(0xff);
        k
    };
    let mut start: Bound<Vec<u8>> = Bound::Included(full(&req.prefix));
    let after = match &req.continuation {
        Some(tok) => match decode_token(tok) {
            Ok(v) => Some(v),
            Err(e) => return Ok(Err(e)),
        },
        None => req.start_after.clone().map(|s| (false, s)),
    };
    if let Some((is_prefix, s)) = after {
        let candidate = if is_prefix {
            Bound::Included(past(&s))
        } else {
            Bound::Excluded(full(&s))
        };
        let candidate_key = match &candidate {
            Bound::Included(k) | Bound::Excluded(k) => k.clone(),
            Bound::Unbounded => Vec::new(),
        };
        if candidate_key >= full(&req.prefix) {
            start = candidate;
        }
    }
    if max == 0 {
        return Ok(Ok(page));
    }
    let end: Vec<u8> = past(&req.prefix);
    let mut last: Option<(bool, String)> = None;
    'outer: loop {
        let range = t.range::<&[u8]>((
            match &start {
                Bound::Included(k) => Bound::Included(k.as_slice()),
                Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
                Bound::Unbounded => Bound::Unbounded,
            },
            Bound::Excluded(end.as_slice()),
        ))?;
        for r in range {
            let (k, v) = r?;
            let kb = k.value();
            let Some(key_bytes) = kb.strip_prefix(bucket_prefix.as_slice()) else {
                break 'outer;
            };
            let Ok(key) = std::str::from_utf8(key_bytes) else {
                continue;
            };
            if !key.starts_with(&req.prefix) {
                break 'outer;
            }
            if page.entries.len() + page.common_prefixes.len() >= max {
                page.truncated = true;
                break 'outer;
            }
            if let Some(d) = delimiter {
                if let Some(pos) = key[req.prefix.len()..].find(d) {
                    let cp = key[..req.prefix.len() + pos + d.len()].to_string();
                    start = Bound::Included(past(&cp));
                    page.common_prefixes.push(cp.clone());
                    last = Some((true, cp));
                    continue 'outer;
                }
            }
            let m: ObjectManifest = dec(v.value())?;
            page.entries.push(ListEntry {
                key: key.to_string(),
                size: m.size,
                etag: m.etag,
                created_ms: m.created_ms,
            });
            last = Some((false, key.to_string()));
        }
        break;
    }
    if page.truncated {
        page.next_continuation = last.map(|(p, s)| encode_token(p, &s));
    }
    Ok(Ok(page))
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    fn db() -> redb::Database {
        match redb::Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())
        {
            Ok(d) => d,
            Err(e) => panic!("in-memory redb: {e}"),
        }
    }

    /// The reverse index and bucket counters `apply` maintained equal the
    /// ones the migration builds from the rows, and the audit finds no index
    /// disagreement.
    fn assert_index_matches(db: &redb::Database) {
        let rows = |txn: &redb::WriteTransaction| -> Vec<(Vec<u8>, Vec<u8>)> {
            let mut out = Vec::new();
            for def in [shard_index::SHARD_OWNERS, stats::BUCKET_STATS] {
                let t = txn.open_table(def).expect("table");
                out.extend(t.iter().expect("iter").map(|r| {
                    let (k, v) = r.expect("row");
                    (k.value().to_vec(), v.value().to_vec())
                }));
            }
            out
        };
        let txn = db.begin_write().expect("begin");
        let kept = rows(&txn);
        txn.open_table(COUNTERS)
            .expect("counters")
            .remove(b"shard_index".as_slice())
            .expect("remove");
        build_shard_index(&txn).expect("rebuild");
        let rebuilt = rows(&txn);
        txn.abort().expect("abort");
        assert_eq!(kept, rebuilt, "maintained index differs from a rebuild");
        let txn = db.begin_read().expect("read");
        let mut cursor: Option<String> = None;
        loop {
            let r = query(
                &txn,
                &Query::AuditPlacement {
                    cursor: cursor.clone(),
                    stripes: Some(3),
                },
            );
            let Ok(QueryResult::Audit(page)) = r else {
                panic!("audit: {r:?}")
            };
            let index: Vec<_> = page
                .violations
                .iter()
                .filter(|v| v.kind == ViolationKind::Index)
                .collect();
            assert!(index.is_empty(), "{index:?}");
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
    }

    fn run(db: &redb::Database, cmd: Command) -> CommandResult {
        let txn = db.begin_write().expect("begin");
        let r = apply(&txn, &cmd).expect("apply");
        txn.commit().expect("commit");
        r
    }

    fn gc(db: &redb::Database, cs: ChunkserverId) -> Vec<ShardId> {
        let txn = db.begin_read().expect("read");
        gc_pending(&txn, cs, 1000).expect("gc")
    }

    fn part(number: u32, size: u64, shard: u8) -> UploadPart {
        UploadPart {
            info: PartInfo {
                number,
                size,
                etag: format!("{shard:032x}"),
                checksums: Default::default(),
                stripes: 1,
            },
            stripes: vec![StripeManifest {
                id: StripeId([shard; 16]),
                len: size,
                shards: vec![ShardLoc {
                    chunkserver: Some(1),
                    shard: ShardId([shard; 16]),
                    blake3: Hash32([0; 32]),
                }],
            }],
            created_ms: 0,
        }
    }

    fn complete(up: StripeId, parts: &[(u32, u8)], min: u64) -> Command {
        Command::CompleteUpload {
            bucket: "bkt".into(),
            key: "k".into(),
            upload: up,
            parts: parts
                .iter()
                .map(|&(number, s)| CompletePart {
                    number,
                    etag: format!("\"{s:032x}\""),
                })
                .collect(),
            min_part_size: min,
            etag: "x-2".into(),
            version: StripeId([9; 16]),
            checksums: Default::default(),
            now_ms: 1,
            condition: PutCondition::None,
        }
    }

    fn stripe_on(servers: &[u64], tag: u8) -> StripeManifest {
        StripeManifest {
            id: StripeId([tag; 16]),
            len: 4,
            shards: servers
                .iter()
                .enumerate()
                .map(|(i, cs)| ShardLoc {
                    chunkserver: Some(*cs),
                    shard: ShardId([tag.wrapping_add(i as u8); 16]),
                    blake3: Hash32([0; 32]),
                })
                .collect(),
        }
    }

    fn object(db: &redb::Database) -> ObjectManifest {
        let txn = db.begin_read().expect("read");
        match query(
            &txn,
            &Query::GetObject {
                bucket: "bkt".into(),
                key: "k".into(),
            },
        ) {
            Ok(QueryResult::Object(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    /// CommitRepair moves a placement only against the planned version and
    /// location; otherwise the rebuilt copy goes to GC (unless the manifest
    /// already places it there). RemoveChunkserver waits until nothing
    /// names the chunkserver.
    /// A chunkserver registering anew at an address another id holds
    /// (its whole data dir was replaced) turns the old id Down at once;
    /// other addresses are untouched.
    #[test]
    fn registering_at_a_taken_address_marks_the_old_id_down() {
        let db = db();
        let reg = |addr: &str| Command::RegisterChunkserver {
            addr: addr.into(),
            zone: "z".into(),
            capacity: 1,
            free: 1,
            now_ms: 0,
        };
        assert_eq!(run(&db, reg("a")), CommandResult::Registered { id: 1 });
        assert_eq!(run(&db, reg("b")), CommandResult::Registered { id: 2 });
        assert_eq!(run(&db, reg("a")), CommandResult::Registered { id: 3 });
        let states: Vec<(ChunkserverId, ChunkserverState)> =
            chunkservers(&db.begin_read().expect("read"))
                .expect("list")
                .into_iter()
                .map(|c| (c.id, c.state))
                .collect();
        assert_eq!(
            states,
            vec![
                (1, ChunkserverState::Down),
                (2, ChunkserverState::Up),
                (3, ChunkserverState::Up)
            ]
        );
    }

    /// Bucket "bkt" (1+1, 4-byte shards), chunkservers 1..=`servers` in one
    /// zone, and a one-stripe manifest on chunkservers 1 and 2 (shards
    /// 0x10.. and 0x11..), not yet put.
    fn one_stripe_object(db: &redb::Database, servers: u64) -> ObjectManifest {
        let bucket = BucketInfo {
            name: "bkt".into(),
            ec: EcParams { k: 1, m: 1 },
            shard_size: 4,
            created_ms: 0,
            owner: String::new(),
        };
        assert_eq!(run(db, Command::CreateBucket { bucket }), CommandResult::Ok);
        for id in 1..=servers {
            let r = run(
                db,
                Command::RegisterChunkserver {
                    addr: format!("cs{id}"),
                    zone: "z".into(),
                    capacity: 1,
                    free: 1,
                    now_ms: 0,
                },
            );
            assert_eq!(r, CommandResult::Registered { id });
        }
        crate::types::ObjectManifest {
            version: StripeId([1; 16]),
            size: 4,
            etag: "e".into(),
            content_type: None,
            headers: Default::default(),
            user_meta: Default::default(),
            checksums: Default::default(),
            created_ms: 0,
            ec: EcParams { k: 1, m: 1 },
            shard_size: 4,
            stripes: vec![stripe_on(&[1, 2], 0x10)],
            parts: Vec::new(),
            inline: None,
        }
    }

    #[test]
    fn commit_repair_is_conditional() {
        let db = db();
        let mut m = one_stripe_object(&db, 3);
        let put = |m: &ObjectManifest| Command::PutObject {
            bucket: "bkt".into(),
            key: "k".into(),
            manifest: m.clone(),
            condition: PutCondition::None,
        };
        assert_eq!(run(&db, put(&m)), CommandResult::Ok);
        let shard = ShardId([0x10; 16]);
        let bad = Command::ReportBadShards {
            chunkserver: 1,
            shards: vec![shard],
        };
        assert_eq!(run(&db, bad), CommandResult::Ok);
        let commit = |version: StripeId, from: Option<u64>, to: u64| Command::CommitRepair {
            bucket: "bkt".into(),
            key: "k".into(),
            version,
            stripe: 0,
            index: 0,
            shard,
            from,
            to,
            reused: false,
        };
        // Planned against cs1, rebuilt on cs3: moves, old copy to GC.
        assert_eq!(run(&db, commit(m.version, Some(1), 3)), CommandResult::Ok);
        assert_eq!(object(&db).stripes[0].shards[0].chunkserver, Some(3));
        assert_eq!(gc(&db, 1), vec![shard]);
        assert!(bad_shards(&db.begin_read().expect("read"))
            .expect("bad")
            .is_empty());
        // The same report again: stale, and the copy on cs3 is kept.
        assert!(matches!(
            run(&db, commit(m.version, Some(1), 3)),
            CommandResult::Err(MetaError::Stale(_))
        ));
        assert!(gc(&db, 3).is_empty());
        // A repair planned against an overwritten version: its copy is GC'd;
        // the overwrite drops the old version's repair-queue items.
        let item = RepairItem {
            bucket: "bkt".into(),
            key: "k".into(),
            version: m.version,
            stripe: 0,
            index: 1,
            chunkserver: Some(2),
            reason: "test".into(),
        };
        let queue = Command::QueueRepair { items: vec![item] };
        assert_eq!(run(&db, queue), CommandResult::Ok);
        m.version = StripeId([2; 16]);
        m.stripes = vec![stripe_on(&[2, 3], 0x20)];
        assert_eq!(run(&db, put(&m)), CommandResult::Ok);
        match query(
            &db.begin_read().expect("read"),
            &Query::RepairQueue { limit: 10 },
        ) {
            Ok(QueryResult::Repairs(r)) => assert!(r.is_empty(), "{r:?}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            run(&db, commit(StripeId([1; 16]), Some(3), 2)),
            CommandResult::Err(MetaError::Stale(_))
        ));
        assert!(gc(&db, 2).contains(&shard));
        // Rebuilt in place (the bad copy was quarantined): nothing to GC.
        let in_place = Command::CommitRepair {
            bucket: "bkt".into(),
            key: "k".into(),
            version: m.version,
            stripe: 0,
            index: 1,
            shard: ShardId([0x21; 16]),
            from: Some(3),
            to: 3,
            reused: false,
        };
        assert_eq!(run(&db, in_place), CommandResult::Ok);
        assert!(!gc(&db, 3).contains(&ShardId([0x21; 16])));
        // A target whose copy of the shard is queued for deletion (a stale
        // copy found unnamed by the inventory) is refused: the queued
        // delete would remove the live copy.
        let doomed = ShardId([0x20; 16]);
        let queue = Command::QueueGc {
            chunkserver: 1,
            shards: vec![doomed],
        };
        assert_eq!(run(&db, queue), CommandResult::Ok);
        let onto_doomed = Command::CommitRepair {
            bucket: "bkt".into(),
            key: "k".into(),
            version: m.version,
            stripe: 0,
            index: 0,
            shard: doomed,
            from: Some(2),
            to: 1,
            reused: false,
        };
        assert!(matches!(
            run(&db, onto_doomed),
            CommandResult::Err(MetaError::Stale(_))
        ));
        assert_eq!(object(&db).stripes[0].shards[0].chunkserver, Some(2));
        // Removal: refused while Up, and while a manifest names it.
        let remove = |id| Command::RemoveChunkserver { id };
        assert!(matches!(
            run(&db, remove(2)),
            CommandResult::Err(MetaError::Invalid(_))
        ));
        let drain = |id| Command::SetChunkserverState {
            id,
            state: ChunkserverState::Draining,
        };
        assert_eq!(run(&db, drain(2)), CommandResult::Ok);
        assert!(matches!(
            run(&db, remove(2)),
            CommandResult::Err(MetaError::Invalid(_))
        ));
        assert_eq!(run(&db, drain(1)), CommandResult::Ok);
        assert_eq!(run(&db, remove(1)), CommandResult::Ok);
        assert!(gc(&db, 1).is_empty(), "its GC entries went with it");
        assert!(matches!(
            run(&db, remove(1)),
            CommandResult::Err(MetaError::NoSuchChunkserver(1))
        ));
        assert_index_matches(&db);
    }

    /// A completion whose parts add up to more than 5 TiB is refused.
    #[test]
    fn multipart_completion_over_5_tib_is_refused() {
        let db = db();
        let bucket = BucketInfo {
            name: "bkt".into(),
            ec: EcParams::default(),
            shard_size: 1 << 20,
            created_ms: 0,
            owner: String::new(),
        };
        assert_eq!(
            run(&db, Command::CreateBucket { bucket }),
            CommandResult::Ok
        );
        let up = StripeId([8; 16]);
        let upload = UploadInfo {
            id: up,
            bucket: "bkt".into(),
            key: "k".into(),
            initiated_ms: 0,
            owner: String::new(),
            content_type: None,
            headers: Default::default(),
            user_meta: Default::default(),
            checksum_algorithm: None,
            checksum_type: None,
            ec: EcParams::default(),
            shard_size: 1 << 20,
        };
        assert_eq!(
            run(&db, Command::CreateUpload { upload }),
            CommandResult::Ok
        );
        for (n, shard) in [(1, 0x1), (2, 0x2)] {
            let cmd = Command::PutPart {
                bucket: "bkt".into(),
                key: "k".into(),
                upload: up,
                part: part(n, 3 << 40, shard),
            };
            assert_eq!(run(&db, cmd), CommandResult::Ok);
        }
        assert!(matches!(
            run(&db, complete(up, &[(1, 0x1), (2, 0x2)], 0)),
            CommandResult::Err(MetaError::EntityTooLarge(_))
        ));
        assert_eq!(
            run(&db, complete(up, &[(1, 0x1)], 0)),
            CommandResult::Ok,
            "one 3 TiB part is within the limit"
        );
        assert_index_matches(&db);
    }

    /// Replaced, unused and aborted parts' shards all reach the GC queue;
    /// a refused completion changes nothing; the completed manifest
    /// concatenates the chosen parts' stripes.
    #[test]
    fn multipart_lifecycle_and_gc() {
        let db = db();
        let bucket = BucketInfo {
            name: "bkt".into(),
            ec: EcParams::default(),
            shard_size: 1 << 20,
            created_ms: 0,
            owner: String::new(),
        };
        assert_eq!(
            run(&db, Command::CreateBucket { bucket }),
            CommandResult::Ok
        );
        let up = StripeId([7; 16]);
        let upload = UploadInfo {
            id: up,
            bucket: "bkt".into(),
            key: "k".into(),
            initiated_ms: 0,
            owner: String::new(),
            content_type: Some("x/y".into()),
            headers: Default::default(),
            user_meta: Default::default(),
            checksum_algorithm: None,
            checksum_type: None,
            ec: EcParams::default(),
            shard_size: 1 << 20,
        };
        assert_eq!(
            run(&db, Command::CreateUpload { upload }),
            CommandResult::Ok
        );
        let put = |p: UploadPart| Command::PutPart {
            bucket: "bkt".into(),
            key: "k".into(),
            upload: up,
            part: p,
        };
        assert_eq!(run(&db, put(part(1, 10, 0xa))), CommandResult::Ok);
        assert_eq!(run(&db, put(part(1, 10, 0xb))), CommandResult::Ok);
        assert_eq!(gc(&db, 1), vec![ShardId([0xa; 16])]);
        assert_eq!(run(&db, put(part(2, 5, 0xc))), CommandResult::Ok);
        assert_eq!(run(&db, put(part(3, 5, 0xd))), CommandResult::Ok);

        assert!(matches!(
            run(&db, complete(up, &[(1, 0xb), (2, 0xc)], 100)),
            CommandResult::Err(MetaError::EntityTooSmall(_))
        ));
        assert!(matches!(
            run(&db, complete(up, &[(2, 0xc), (1, 0xb)], 0)),
            CommandResult::Err(MetaError::InvalidPartOrder(_))
        ));
        assert!(matches!(
            run(&db, complete(up, &[(1, 0xc)], 0)),
            CommandResult::Err(MetaError::InvalidPart(_))
        ));
        assert_eq!(gc(&db, 1).len(), 1, "refusals change nothing");

        assert_eq!(
            run(&db, complete(up, &[(1, 0xb), (2, 0xc)], 0)),
            CommandResult::Ok
        );
        let txn = db.begin_read().expect("read");
        let m = match query(
            &txn,
            &Query::GetObject {
                bucket: "bkt".into(),
                key: "k".into(),
            },
        ) {
            Ok(QueryResult::Object(m)) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(m.size, 15);
        assert_eq!(m.content_type.as_deref(), Some("x/y"));
        assert_eq!(
            m.stripes.iter().map(|s| s.id).collect::<Vec<_>>(),
            vec![StripeId([0xb; 16]), StripeId([0xc; 16])]
        );
        assert_eq!(m.parts.len(), 2);
        drop(txn);
        let pending = gc(&db, 1);
        assert!(pending.contains(&ShardId([0xd; 16])), "unused part 3");
        assert!(!pending.contains(&ShardId([0xb; 16])));
        assert!(matches!(
            run(&db, complete(up, &[(1, 0xb)], 0)),
            CommandResult::Err(MetaError::NoSuchUpload(_))
        ));

        let up2 = StripeId([8; 16]);
        match db.begin_read().map(|t| {
            query(
                &t,
                &Query::ListUploads {
                    bucket: "bkt".into(),
                    prefix: String::new(),
                    after: None,
                    max: 10,
                },
            )
        }) {
            Ok(Ok(QueryResult::Uploads { uploads, .. })) => assert!(uploads.is_empty()),
            other => panic!("{other:?}"),
        }
        let upload = UploadInfo {
            id: up2,
            bucket: "bkt".into(),
            key: "k".into(),
            initiated_ms: 0,
            owner: String::new(),
            content_type: None,
            headers: Default::default(),
            user_meta: Default::default(),
            checksum_algorithm: None,
            checksum_type: None,
            ec: EcParams::default(),
            shard_size: 1 << 20,
        };
        assert_eq!(
            run(&db, Command::CreateUpload { upload }),
            CommandResult::Ok
        );
        let mut p = part(1, 10, 0xe);
        p.info.number = 1;
        assert_eq!(
            run(
                &db,
                Command::PutPart {
                    bucket: "bkt".into(),
                    key: "k".into(),
                    upload: up2,
                    part: p,
                }
            ),
            CommandResult::Ok
        );
        let abort = Command::AbortUpload {
            bucket: "bkt".into(),
            key: "k".into(),
            upload: up2,
        };
        assert_eq!(run(&db, abort.clone()), CommandResult::Ok);
        assert!(gc(&db, 1).contains(&ShardId([0xe; 16])));
        assert!(matches!(
            run(&db, abort),
            CommandResult::Err(MetaError::NoSuchUpload(_))
        ));
        assert_index_matches(&db);
    }

    fn at(now_ms: u64, cmd: Command) -> Command {
        Command::At {
            now_ms,
            inner: Box::new(cmd),
        }
    }

    /// A bucket "bkt" (1+1, 4-byte shards) and chunkservers 1..=3.
    fn small_cluster(db: &redb::Database) {
        let bucket = BucketInfo {
            name: "bkt".into(),
            ec: EcParams { k: 1, m: 1 },
            shard_size: 4,
            created_ms: 0,
            owner: String::new(),
        };
        assert_eq!(run(db, Command::CreateBucket { bucket }), CommandResult::Ok);
        for id in 1..=3u64 {
            let r = run(
                db,
                Command::RegisterChunkserver {
                    addr: format!("cs{id}"),
                    zone: "z".into(),
                    capacity: 1,
                    free: 1,
                    now_ms: 0,
                },
            );
            assert_eq!(r, CommandResult::Registered { id });
        }
    }

    fn manifest(version: u8, stripes: Vec<StripeManifest>) -> ObjectManifest {
        ObjectManifest {
            version: StripeId([version; 16]),
            size: 4,
            etag: "e".into(),
            content_type: None,
            headers: Default::default(),
            user_meta: Default::default(),
            checksums: Default::default(),
            created_ms: 0,
            ec: EcParams { k: 1, m: 1 },
            shard_size: 4,
            stripes,
            parts: Vec::new(),
            inline: None,
        }
    }

    fn put(m: &ObjectManifest) -> Command {
        Command::PutObject {
            bucket: "bkt".into(),
            key: "k".into(),
            manifest: m.clone(),
            condition: PutCondition::None,
        }
    }

    fn due(db: &redb::Database, cs: ChunkserverId, before: u64) -> Vec<ShardId> {
        let txn = db.begin_read().expect("read");
        gc_due(&txn, cs, 1000, before).expect("gc due")
    }

    /// A manifest committed with an unplaced shard queues its repair in the
    /// same transaction; overwriting the object drops it.
    #[test]
    fn unplaced_shards_are_queued_for_repair_on_commit() {
        let db = db();
        let bucket = BucketInfo {
            name: "bkt".into(),
            ec: EcParams { k: 1, m: 1 },
            shard_size: 4,
            created_ms: 0,
            owner: String::new(),
        };
        assert_eq!(
            run(&db, Command::CreateBucket { bucket }),
            CommandResult::Ok
        );
        for id in 1..=2u64 {
            let r = run(
                &db,
                Command::RegisterChunkserver {
                    addr: format!("cs{id}"),
                    zone: format!("z{id}"),
                    capacity: 1,
                    free: 1,
                    now_ms: 0,
                },
            );
            assert_eq!(r, CommandResult::Registered { id });
        }
        let mut stripe = stripe_on(&[1, 2], 0x40);
        stripe.shards[1].chunkserver = None;
        let m = manifest(1, vec![stripe]);
        assert_eq!(run(&db, put(&m)), CommandResult::Ok);
        let items = repair_items(&db.begin_read().expect("read")).expect("items");
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(
            (items[0].version, items[0].stripe, items[0].index),
            (m.version, 0, 1)
        );
        let m2 = manifest(2, vec![stripe_on(&[1, 2], 0x50)]);
        assert_eq!(run(&db, put(&m2)), CommandResult::Ok);
        assert!(repair_items(&db.begin_read().expect("read"))
            .expect("items")
            .is_empty());
        assert_index_matches(&db);
    }

    /// Overwritten shards are queued with the entry's time and handed out
    /// only once they are older than the delay; GcDone clears both rows.
    /// Legacy rows (empty value) are migrated to "due at once".
    #[test]
    fn gc_rows_are_due_after_the_delay() {
        let db = db();
        small_cluster(&db);
        let old = manifest(1, vec![stripe_on(&[1, 2], 0x10)]);
        assert_eq!(run(&db, at(1_000, put(&old))), CommandResult::Ok);
        let new = manifest(2, vec![stripe_on(&[1, 2], 0x20)]);
        assert_eq!(run(&db, at(5_000, put(&new))), CommandResult::Ok);
        assert!(
            due(&db, 1, 4_999).is_empty(),
            "queued at 5000: not due before"
        );
        assert_eq!(due(&db, 1, 5_000), vec![ShardId([0x10; 16])]);
        assert_eq!(gc(&db, 2), vec![ShardId([0x11; 16])]);
        // Queued again later: keeps its first time.
        let requeue = Command::QueueGc {
            chunkserver: 1,
            shards: vec![ShardId([0x10; 16])],
        };
        assert_eq!(run(&db, at(9_000, requeue)), CommandResult::Ok);
        assert_eq!(due(&db, 1, 5_000), vec![ShardId([0x10; 16])]);
        let done = Command::GcDone {
            chunkserver: 1,
            shards: vec![ShardId([0x10; 16])],
        };
        assert_eq!(run(&db, at(10_000, done)), CommandResult::Ok);
        assert!(due(&db, 1, u64::MAX).is_empty());
        assert!(gc(&db, 1).is_empty());

        // A row from an older binary: empty value, no index row.
        let txn = db.begin_write().expect("begin");
        txn.open_table(GC)
            .expect("gc")
            .insert(gc_key(3, &ShardId([0x77; 16])).as_slice(), [].as_slice())
            .expect("insert");
        txn.commit().expect("commit");
        assert!(due(&db, 3, u64::MAX).is_empty());
        let txn = db.begin_write().expect("begin");
        migrate(&txn).expect("migrate");
        txn.commit().expect("commit");
        assert_eq!(due(&db, 3, 0), vec![ShardId([0x77; 16])]);
        assert_index_matches(&db);
    }

    /// Item 7: the chunkserver deleted its (stale) copy and, in the same
    /// heartbeat, reported a repair it satisfied with "the copy already
    /// here". GcDone applied first must not let that repair make the
    /// deleted copy live; a freshly written copy is accepted.
    #[test]
    fn gc_done_then_reused_commit_repair_is_refused() {
        let db = db();
        small_cluster(&db);
        let m = manifest(1, vec![stripe_on(&[1, 2], 0x10)]);
        assert_eq!(run(&db, at(1_000, put(&m))), CommandResult::Ok);
        let shard = ShardId([0x10; 16]);
        // Chunkserver 3 held a stale copy of the shard, queued for GC.
        let stale = Command::QueueGc {
            chunkserver: 3,
            shards: vec![shard],
        };
        assert_eq!(run(&db, at(2_000, stale)), CommandResult::Ok);
        let commit = |reused| Command::CommitRepair {
            bucket: "bkt".into(),
            key: "k".into(),
            version: m.version,
            stripe: 0,
            index: 0,
            shard,
            from: Some(1),
            to: 3,
            reused,
        };
        // Both in one entry, GcDone first (the old heartbeat order).
        let both = Command::Batch {
            cmds: vec![
                Command::GcDone {
                    chunkserver: 3,
                    shards: vec![shard],
                },
                commit(true),
            ],
        };
        match run(&db, at(3_000, both)) {
            CommandResult::Batch(r) => {
                assert_eq!(r[0], CommandResult::Ok);
                assert!(
                    matches!(&r[1], CommandResult::Err(MetaError::Stale(_))),
                    "{:?}",
                    r[1]
                );
            }
            other => panic!("{other:?}"),
        }
        let live = object(&db);
        assert_eq!(live.stripes[0].shards[0].chunkserver, Some(1));
        // The claimed copy is queued for GC, in case it does exist.
        assert!(gc(&db, 3).contains(&shard));
        // A fresh rebuild (written after the delete) commits, and clears
        // the tombstone.
        let done = Command::GcDone {
            chunkserver: 3,
            shards: vec![shard],
        };
        assert_eq!(run(&db, at(4_000, done)), CommandResult::Ok);
        assert_eq!(run(&db, at(5_000, commit(false))), CommandResult::Ok);
        assert_eq!(object(&db).stripes[0].shards[0].chunkserver, Some(3));
        let txn = db.begin_read().expect("read");
        let t = txn.open_table(GC_DELETED).expect("tombstones");
        assert!(t.get(gc_key(3, &shard).as_slice()).expect("get").is_none());
        assert_index_matches(&db);
    }

    fn intent_rows(db: &redb::Database) -> (u64, u64, u64, u64) {
        let txn = db.begin_read().expect("read");
        (
            table_len(&txn, INTENTS).expect("len"),
            table_len(&txn, INTENT_EXPIRY).expect("len"),
            table_len(&txn, INTENT_SHARDS).expect("len"),
            table_len(&txn, INTENT_ROWS).expect("len"),
        )
    }

    /// Write intents: registered shards are named for orphan GC; a commit
    /// under a live intent succeeds and drops it; an expired, unknown or
    /// incomplete intent, or a shard queued for GC, is refused as
    /// retryable; the reaper drops expired intents in bounded steps.
    #[test]
    fn write_intents_guard_commits() {
        let db = db();
        small_cluster(&db);
        let intent = StripeId([0xa1; 16]);
        let m = manifest(1, vec![stripe_on(&[1, 2], 0x10), stripe_on(&[2, 3], 0x20)]);
        let reg = |shards: Vec<(u64, u8)>| Command::RegisterIntent {
            intent,
            shards: shards
                .into_iter()
                .map(|(c, s)| (c, ShardId([s; 16])))
                .collect(),
            lease_ms: 1_000,
        };
        assert_eq!(
            run(&db, at(10_000, reg(vec![(1, 0x10), (2, 0x11)]))),
            CommandResult::Ok
        );
        {
            let txn = db.begin_read().expect("read");
            let named = intent_named(
                &txn,
                1,
                [ShardId([0x10; 16]), ShardId([0x11; 16])].into_iter(),
            )
            .expect("named");
            assert_eq!(named, HashSet::from([ShardId([0x10; 16])]));
        }
        let with = |m: &ObjectManifest| Command::WithIntent {
            intent,
            inner: Box::new(put(m)),
        };
        // The second stripe is not registered yet.
        let r = run(&db, at(10_100, with(&m)));
        assert!(
            matches!(r, CommandResult::Err(MetaError::IntentExpired(_))),
            "{r:?}"
        );
        // Renewal with the second stripe (the lease moves to 10_900 + 1000).
        assert_eq!(
            run(&db, at(10_900, reg(vec![(2, 0x20), (3, 0x21)]))),
            CommandResult::Ok
        );
        assert_eq!(intent_rows(&db), (1, 1, 4, 4));
        // Past the renewed lease: refused, nothing committed.
        let r = run(&db, at(11_901, with(&m)));
        assert!(
            matches!(r, CommandResult::Err(MetaError::IntentExpired(_))),
            "{r:?}"
        );
        // ... and it cannot be renewed any more.
        let r = run(&db, at(11_902, reg(vec![])));
        assert!(
            matches!(r, CommandResult::Err(MetaError::IntentExpired(_))),
            "{r:?}"
        );
        // Within the lease, a shard queued for GC refuses the commit.
        let r = run(
            &db,
            at(
                11_000,
                Command::QueueGc {
                    chunkserver: 3,
                    shards: vec![ShardId([0x21; 16])],
                },
            ),
        );
        assert_eq!(r, CommandResult::Ok);
        let r = run(&db, at(11_100, with(&m)));
        assert!(
            matches!(r, CommandResult::Err(MetaError::IntentExpired(_))),
            "{r:?}"
        );
        assert!(matches!(
            {
                let txn = db.begin_read().expect("read");
                query(
                    &txn,
                    &Query::GetObject {
                        bucket: "bkt".into(),
                        key: "k".into(),
                    },
                )
                .expect("query")
            },
            QueryResult::Err(MetaError::NoSuchKey { .. })
        ));
        // A clean commit of the first stripe only succeeds and drops the
        // whole intent.
        let one = manifest(1, vec![stripe_on(&[1, 2], 0x10)]);
        assert_eq!(run(&db, at(11_200, with(&one))), CommandResult::Ok);
        assert_eq!(intent_rows(&db), (0, 0, 0, 0));
        let r = run(&db, at(11_300, with(&one)));
        assert!(
            matches!(r, CommandResult::Err(MetaError::IntentExpired(_))),
            "{r:?}"
        );

        // Reaping: two expired intents, 3 rows each, 4 rows per step.
        for (i, tag) in [(0xb1u8, 0x40u8), (0xb2, 0x50)] {
            let r = run(
                &db,
                at(
                    20_000,
                    Command::RegisterIntent {
                        intent: StripeId([i; 16]),
                        shards: (0..3).map(|j| (1, ShardId([tag + j; 16]))).collect(),
                        lease_ms: 100,
                    },
                ),
            );
            assert_eq!(r, CommandResult::Ok);
        }
        {
            let txn = db.begin_read().expect("read");
            assert!(!intents_expired(&txn, 20_100).expect("check"));
            assert!(intents_expired(&txn, 20_101).expect("check"));
        }
        assert_eq!(
            run(&db, at(20_050, Command::ExpireIntents { limit: 4 })),
            CommandResult::Ok
        );
        assert_eq!(intent_rows(&db), (2, 2, 6, 6), "nothing expired yet");
        assert_eq!(
            run(&db, at(30_000, Command::ExpireIntents { limit: 4 })),
            CommandResult::Ok
        );
        assert_eq!(intent_rows(&db), (1, 1, 2, 2));
        assert_eq!(
            run(&db, at(30_000, Command::ExpireIntents { limit: 4 })),
            CommandResult::Ok
        );
        assert_eq!(intent_rows(&db), (0, 0, 0, 0));
        assert_index_matches(&db);
    }

    fn cs(id: u64, zone: &str) -> ChunkserverInfo {
        ChunkserverInfo {
            id,
            addr: format!("cs{id}"),
            zone: zone.into(),
            capacity: 1 << 40,
            free: 1 << 30,
            used: 0,
            shard_count: 0,
            last_heartbeat_ms: 0,
            state: ChunkserverState::Up,
        }
    }

    /// Six chunkservers in three zones, a 4+2 bucket "bkt" (zone cap 2).
    fn six_in_three(db: &redb::Database) {
        let bucket = BucketInfo {
            name: "bkt".into(),
            ec: EcParams { k: 4, m: 2 },
            shard_size: 4,
            created_ms: 0,
            owner: String::new(),
        };
        assert_eq!(run(db, Command::CreateBucket { bucket }), CommandResult::Ok);
        for id in 1..=6u64 {
            let r = run(
                db,
                Command::RegisterChunkserver {
                    addr: format!("cs{id}"),
                    zone: format!("z{}", (id - 1) / 2),
                    capacity: 1 << 40,
                    free: 1 << 30,
                    now_ms: 0,
                },
            );
            assert_eq!(r, CommandResult::Registered { id });
        }
    }

    fn manifest_on(servers: &[u64]) -> ObjectManifest {
        ObjectManifest {
            version: StripeId([1; 16]),
            size: 16,
            etag: "e".into(),
            content_type: None,
            headers: Default::default(),
            user_meta: Default::default(),
            checksums: Default::default(),
            created_ms: 0,
            ec: EcParams { k: 4, m: 2 },
            shard_size: 4,
            stripes: vec![stripe_on(servers, 0x10)],
            parts: Vec::new(),
            inline: None,
        }
    }

    /// PutObject and CommitRepair refuse a placement with two shards of a
    /// stripe on one chunkserver or more than the zone cap in one zone;
    /// the refused repair's copy goes to GC. Unwritten shards count for
    /// nothing.
    #[test]
    fn apply_refuses_stacked_placements() {
        let db = db();
        six_in_three(&db);
        let put = |m: ObjectManifest| Command::PutObject {
            bucket: "bkt".into(),
            key: "k".into(),
            manifest: m,
            condition: PutCondition::None,
        };
        // Two shards on chunkserver 1.
        let r = run(&db, put(manifest_on(&[1, 1, 3, 4, 5, 6])));
        assert!(
            matches!(&r, CommandResult::Err(MetaError::Placement { why, .. }) if why.contains("chunkserver 1")),
            "{r:?}"
        );
        // Three shards in zone z0 (chunkservers 1, 2 and a third on 2).
        let mut m = manifest_on(&[1, 2, 3, 4, 5, 6]);
        m.stripes[0].shards[4].chunkserver = Some(1);
        m.stripes[0].shards[5].chunkserver = None;
        assert!(matches!(
            run(&db, put(m)),
            CommandResult::Err(MetaError::Placement { .. })
        ));
        // A degraded write (one unwritten shard) is fine.
        let mut m = manifest_on(&[1, 2, 3, 4, 5, 6]);
        m.stripes[0].shards[0].chunkserver = None;
        assert_eq!(run(&db, put(m.clone())), CommandResult::Ok);
        // Rebuilding shard 0 onto chunkserver 2 (holds shard 1): refused,
        // the copy goes to GC.
        let commit = |to: u64| Command::CommitRepair {
            bucket: "bkt".into(),
            key: "k".into(),
            version: m.version,
            stripe: 0,
            index: 0,
            shard: m.stripes[0].shards[0].shard,
            from: None,
            to,
            reused: false,
        };
        assert!(matches!(
            run(&db, commit(2)),
            CommandResult::Err(MetaError::Stale(_))
        ));
        assert!(gc(&db, 2).contains(&m.stripes[0].shards[0].shard));
        assert_eq!(object(&db).stripes[0].shards[0].chunkserver, None);
        // Onto a seventh chunkserver in zone z1 (already holding 2): refused.
        assert_eq!(
            run(
                &db,
                Command::RegisterChunkserver {
                    addr: "cs7".into(),
                    zone: "z1".into(),
                    capacity: 1 << 40,
                    free: 1 << 30,
                    now_ms: 0,
                }
            ),
            CommandResult::Registered { id: 7 }
        );
        assert!(matches!(
            run(&db, commit(7)),
            CommandResult::Err(MetaError::Stale(_))
        ));
        // An eighth in z0 (holding only shard 1): accepted.
        assert_eq!(
            run(
                &db,
                Command::RegisterChunkserver {
                    addr: "cs8".into(),
                    zone: "z0".into(),
                    capacity: 1 << 40,
                    free: 1 << 30,
                    now_ms: 0,
                }
            ),
            CommandResult::Registered { id: 8 }
        );
        assert_eq!(run(&db, commit(8)), CommandResult::Ok);
        assert_eq!(object(&db).stripes[0].shards[0].chunkserver, Some(8));
        // The audit finds nothing wrong.
        let txn = db.begin_read().expect("read");
        match query(
            &txn,
            &Query::AuditPlacement {
                cursor: None,
                stripes: None,
            },
        ) {
            Ok(QueryResult::Audit(p)) => {
                assert!(p.violations.is_empty(), "{p:?}");
                assert_eq!((p.manifests, p.stripes, p.next), (1, 1, None));
            }
            other => panic!("{other:?}"),
        }
        assert_index_matches(&db);
    }

    /// place() never exceeds the zone cap: with one zone's servers
    /// excluded it places fewer shards (at least `min`) or refuses; a
    /// re-placement counts the stripe's placed shards toward the cap.
    #[test]
    fn place_honours_the_zone_cap() {
        let ec = EcParams { k: 4, m: 2 };
        let all: Vec<ChunkserverInfo> = (1..=6u64)
            .map(|id| cs(id, &format!("z{}", (id - 1) / 2)))
            .collect();
        let zone = |id: u64| (id - 1) / 2;
        for _ in 0..50 {
            let p = place(&all, 6, 5, ec, 4, &[], &[]).expect("place");
            assert_eq!(p.len(), 6);
            for z in 0..3 {
                assert_eq!(p.iter().filter(|c| zone(c.id) == z).count(), 2);
            }
        }
        // Zone z0 unusable (1 and 2 excluded): 4 fit under the cap of 2.
        let p = place(&all, 6, 4, ec, 4, &[1, 2], &[]).expect("degraded");
        assert_eq!(p.len(), 4);
        assert!(matches!(
            place(&all, 6, 5, ec, 4, &[1, 2], &[]),
            Err(MetaError::Placement { .. })
        ));
        // Re-placing one shard: z0 and z1 are full (1, 2, 3, 4 placed),
        // 5 holds another shard: only 6 qualifies.
        for _ in 0..20 {
            let p = place(&all, 1, 1, ec, 4, &[], &[1, 2, 3, 4, 5]).expect("one");
            assert_eq!(p.iter().map(|c| c.id).collect::<Vec<_>>(), vec![6]);
        }
        // Nothing left under the cap: a clear refusal, never a violation.
        assert!(matches!(
            place(&all, 1, 1, ec, 4, &[6], &[1, 2, 3, 4, 5]),
            Err(MetaError::Placement { .. })
        ));
    }

    /// Issue 11 item 3: a bad row or repair-queue item about a copy that an
    /// inventory lists again is stale and cleared with it; reports about
    /// other copies stay.
    #[test]
    fn a_copy_seen_healthy_clears_its_bad_row_and_repair_item() {
        let db = db();
        let m = one_stripe_object(&db, 2);
        let put = Command::PutObject {
            bucket: "bkt".into(),
            key: "k".into(),
            manifest: m,
            condition: PutCondition::None,
        };
        assert_eq!(run(&db, put), CommandResult::Ok);
        let (on1, on2) = (ShardId([0x10; 16]), ShardId([0x11; 16]));
        let item = |index: u8, cs: u64| RepairItem {
            bucket: "bkt".into(),
            key: "k".into(),
            version: StripeId([1; 16]),
            stripe: 0,
            index,
            chunkserver: Some(cs),
            reason: "missing".into(),
        };
        let queue = Command::QueueRepair {
            items: vec![item(0, 1), item(1, 2)],
        };
        assert_eq!(run(&db, queue), CommandResult::Ok);
        let bad = Command::ReportBadShards {
            chunkserver: 1,
            shards: vec![on1],
        };
        assert_eq!(run(&db, bad), CommandResult::Ok);
        let stale = |cs: u64, listed: &[ShardId]| {
            stale_reports(&db.begin_read().expect("read"), cs, listed).expect("stale")
        };
        // cs1 lists its copy (and one nothing reports): stale. cs1 listing
        // cs2's shard says nothing about cs2's copy.
        assert_eq!(stale(1, &[on1, ShardId([9; 16])]), vec![on1]);
        assert_eq!(stale(1, &[on2]), Vec::<ShardId>::new());
        assert_eq!(stale(2, &[on2]), vec![on2]);
        let clear = Command::ClearBadShards {
            chunkserver: 1,
            shards: vec![on1],
        };
        assert_eq!(run(&db, clear), CommandResult::Ok);
        let txn = db.begin_read().expect("read");
        assert!(bad_shards(&txn).expect("bad").is_empty());
        assert_eq!(repair_items(&txn).expect("items"), vec![item(1, 2)]);
        assert!(stale(1, &[on1]).is_empty());
    }
}
