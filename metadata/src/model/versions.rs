//! The version chain of a key (S3 versioning).
//!
//! # Layout
//! - `objects` (see `objects`): bucket NUL key -> the head of the key's
//!   current version, present exactly when the key's newest version holds
//!   data (not a delete marker). Listing objects reads only this table, so
//!   a bucket without versioning pays nothing for versions.
//! - `object_versions`: bucket NUL key NUL (u64::MAX - seq) BE -> head row
//!   (format [`ROW_V2`], or [`ROW_V1`] for a version written unversioned):
//!   every other version of the key, older data versions and all delete
//!   markers, newest first within the key's range. Keys cannot contain NUL,
//!   so `objects` and `object_versions` order keys alike and
//!   ListObjectVersions walks both in step.
//! - `version_ids`: bucket NUL key NUL version id (16 bytes) -> the
//!   `object_versions` key suffix (8 bytes), for every row of
//!   `object_versions`; the key's `null` version, when it is one of them,
//!   also under bucket NUL key NUL `null`. GET, DELETE and repair of a
//!   version by id are point lookups.
//! - Stripe rows (`object_stripes`) are keyed by the version: a version
//!   becoming noncurrent moves nothing but its head.
//! - Every data version, current or not, keeps its reverse-index rows
//!   (`shard_index`, owner = the key's `objects` key and the version), so
//!   orphan GC never collects an old version's shard and the repair
//!   planner and the rebalancer find every version alike
//!   ([`find_version_head`]). A version's shards are queued for GC only
//!   when that version is deleted.
//!
//! # Sequence
//! `seq` comes from the `version_seq` counter, taken by every write to a
//! bucket with versioning configured; versions written unversioned have
//! seq 0 and are the `null` version. A key has at most one `null`
//! version. Version ids are the manifest's version (random, chosen by the
//! writer) or, for delete markers, derived from the key and seq
//! (deterministic on every replica).

use std::ops::Bound;

use super::*;

/// Older versions and delete markers: bucket NUL key NUL inverted seq.
pub const OBJECT_VERSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("object_versions");

/// `object_versions` rows by version id: bucket NUL key NUL id -> the row
/// key's last 8 bytes.
pub const VERSION_IDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("version_ids");

/// Name of the counter versions take their seq from.
const VERSION_SEQ: &[u8] = b"version_seq";

/// The `object_versions` key of the version of `object` with `seq`.
fn version_key(object: &[u8], seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(object.len() + 9);
    k.extend_from_slice(object);
    k.push(0);
    k.extend_from_slice(&(u64::MAX - seq).to_be_bytes());
    k
}

/// The `version_ids` key of `v` of `object`.
fn id_key(object: &[u8], v: &VersionRef) -> Vec<u8> {
    let mut k = Vec::with_capacity(object.len() + 17);
    k.extend_from_slice(object);
    k.push(0);
    match v {
        VersionRef::Null => k.extend_from_slice(b"null"),
        VersionRef::Id(id) => k.extend_from_slice(&id.0),
    }
    k
}

/// The bounds of every `object_versions` row of `object`, newest first.
fn chain_bounds(object: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (version_key(object, u64::MAX), version_key(object, 0))
}

/// A head's (size, stripe count), what the bucket stats count.
fn sized(h: &Head) -> (u64, u64) {
    (h.manifest.size, h.stripes)
}

fn next_seq(txn: &redb::WriteTransaction) -> StoreResult<u64> {
    let mut c = txn.open_table(COUNTERS)?;
    let seq = match c.get(VERSION_SEQ)? {
        Some(v) => u64_from(v.value()),
        None => 0,
    } + 1;
    c.insert(VERSION_SEQ, seq.to_be_bytes().as_slice())?;
    Ok(seq)
}

/// The noncurrent version `v` of `object`: its row key and head.
fn find_noncurrent(
    versions: &impl ReadableTable<&'static [u8], &'static [u8]>,
    ids: &impl ReadableTable<&'static [u8], &'static [u8]>,
    object: &[u8],
    v: &VersionRef,
) -> StoreResult<Option<(Vec<u8>, Head)>> {
    let Some(suffix) = ids.get(id_key(object, v).as_slice())? else {
        return Ok(None);
    };
    let mut k = object.to_vec();
    k.push(0);
    k.extend_from_slice(suffix.value());
    let found = versions.get(k.as_slice())?;
    match found {
        Some(row) => {
            let head = decode_head(row.value())?;
            Ok(Some((k, head)))
        }
        None => Err(corrupt(
            "version_ids",
            "names a version row that does not exist",
        )),
    }
}

/// The newest noncurrent version of `object`, if any.
fn newest_noncurrent(
    versions: &impl ReadableTable<&'static [u8], &'static [u8]>,
    object: &[u8],
) -> StoreResult<Option<(Vec<u8>, Head)>> {
    let (lo, hi) = chain_bounds(object);
    let mut r = versions.range::<&[u8]>(lo.as_slice()..=hi.as_slice())?;
    match r.next() {
        Some(x) => {
            let (k, v) = x?;
            Ok(Some((k.value().to_vec(), decode_head(v.value())?)))
        }
        None => Ok(None),
    }
}

/// The head of version `version` (a manifest version id, as the reverse
/// index and repair tasks carry it) of `object`, current or not. Null
/// versions are found by their manifest version too.
pub fn find_version_head(
    objects: &impl ReadableTable<&'static [u8], &'static [u8]>,
    versions: Option<&impl ReadableTable<&'static [u8], &'static [u8]>>,
    ids: Option<&impl ReadableTable<&'static [u8], &'static [u8]>>,
    object: &[u8],
    version: &StripeId,
) -> StoreResult<Option<Head>> {
    if let Some(h) = get_head(objects, object)? {
        if h.manifest.version == *version {
            return Ok(Some(h));
        }
    }
    let (Some(versions), Some(ids)) = (versions, ids) else {
        return Ok(None);
    };
    Ok(
        find_noncurrent(versions, ids, object, &VersionRef::Id(*version))?
            .map(|(_, h)| h)
            .filter(|h| !h.meta.delete_marker),
    )
}

/// [`find_version_head`] inside a write transaction.
pub(super) fn load_version_head(
    txn: &redb::WriteTransaction,
    object: &[u8],
    version: &StripeId,
) -> StoreResult<Option<Head>> {
    let objects = txn.open_table(OBJECTS)?;
    let versions = txn.open_table(OBJECT_VERSIONS)?;
    let ids = txn.open_table(VERSION_IDS)?;
    find_version_head(&objects, Some(&versions), Some(&ids), object, version)
}

/// Adds `head` to the noncurrent rows of `object`.
fn demote(txn: &redb::WriteTransaction, object: &[u8], head: &Head) -> StoreResult<()> {
    let k = version_key(object, head.meta.seq);
    let suffix = k[object.len() + 1..].to_vec();
    txn.open_table(OBJECT_VERSIONS)?
        .insert(k.as_slice(), encode_head_row(head)?.as_slice())?;
    let mut ids = txn.open_table(VERSION_IDS)?;
    ids.insert(
        id_key(object, &VersionRef::Id(head.manifest.version)).as_slice(),
        suffix.as_slice(),
    )?;
    if head.meta.null {
        ids.insert(
            id_key(object, &VersionRef::Null).as_slice(),
            suffix.as_slice(),
        )?;
    }
    Ok(())
}

/// Drops the noncurrent row `k` (holding `head`) of `object`; a data
/// version's stripe rows and index rows go and its shards are queued for
/// GC.
fn drop_noncurrent(
    txn: &redb::WriteTransaction,
    now: u64,
    object: &[u8],
    k: &[u8],
    head: &Head,
) -> StoreResult<()> {
    txn.open_table(OBJECT_VERSIONS)?.remove(k)?;
    let mut ids = txn.open_table(VERSION_IDS)?;
    ids.remove(id_key(object, &VersionRef::Id(head.manifest.version)).as_slice())?;
    if head.meta.null {
        ids.remove(id_key(object, &VersionRef::Null).as_slice())?;
    }
    drop(ids);
    if !head.meta.delete_marker {
        erase_data(txn, now, object, head)?;
    }
    Ok(())
}

/// Drops the stripe rows, index rows and repairs of the data version
/// `head` of `object` and queues its shards for GC.
fn erase_data(
    txn: &redb::WriteTransaction,
    now: u64,
    object: &[u8],
    head: &Head,
) -> StoreResult<()> {
    let stripes = {
        let t = txn.open_table(OBJECT_STRIPES)?;
        all_stripes(&t, object, head)?
    };
    erase_stripes(
        &mut txn.open_table(OBJECT_STRIPES)?,
        object,
        &head.manifest.version,
    )?;
    let row = OwnerRow::Object(object.to_vec());
    shard_index::remove(txn, &row, &stripes, head.manifest.ec.k)?;
    queue_gc(txn, now, placed_in(&stripes))?;
    drop_repairs(txn, &head.manifest.version)?;
    Ok(())
}

/// After the current version of `object` went away: if the newest
/// remaining version holds data, it becomes current (S3: deleting the
/// newest version, or the delete marker on top, brings the previous one
/// back).
fn promote(txn: &redb::WriteTransaction, bucket: &str, object: &[u8]) -> StoreResult<()> {
    if txn.open_table(OBJECTS)?.get(object)?.is_some() {
        return Ok(());
    }
    let newest = newest_noncurrent(&txn.open_table(OBJECT_VERSIONS)?, object)?;
    let Some((k, head)) = newest else {
        return Ok(());
    };
    if head.meta.delete_marker {
        return Ok(());
    }
    txn.open_table(OBJECT_VERSIONS)?.remove(k.as_slice())?;
    let mut ids = txn.open_table(VERSION_IDS)?;
    ids.remove(id_key(object, &VersionRef::Id(head.manifest.version)).as_slice())?;
    if head.meta.null {
        ids.remove(id_key(object, &VersionRef::Null).as_slice())?;
    }
    drop(ids);
    store_head(txn, object, &head)?;
    stats::replace_sized(txn, bucket, None, Some(sized(&head)))?;
    Ok(())
}

/// Drops the key's noncurrent `null` version, if any (a write or delete
/// in a suspended bucket replaces it).
fn drop_null(txn: &redb::WriteTransaction, now: u64, object: &[u8]) -> StoreResult<()> {
    let found = {
        let versions = txn.open_table(OBJECT_VERSIONS)?;
        let ids = txn.open_table(VERSION_IDS)?;
        find_noncurrent(&versions, &ids, object, &VersionRef::Null)?
    };
    if let Some((k, head)) = found {
        drop_noncurrent(txn, now, object, &k, &head)?;
    }
    Ok(())
}

/// Installs `new` as the current version of `bucket/key` (`object` is its
/// `objects` key, `cur` the current head), following the bucket's
/// versioning state: unversioned, or a `null` version replaced while
/// suspended, replaces the current version (its shards queued for GC);
/// otherwise the current version becomes noncurrent and keeps its shards.
/// The caller checked the write's condition and placement.
pub(super) fn install(
    txn: &redb::WriteTransaction,
    now: u64,
    bucket: &str,
    key: &str,
    object: &[u8],
    cur: Option<Head>,
    new: &ObjectManifest,
) -> StoreResult<Result<CommandResult, MetaError>> {
    let state = bucket_versioning(txn, bucket)?;
    if state == Versioning::Enabled {
        let ids = txn.open_table(VERSION_IDS)?;
        let taken = ids
            .get(id_key(object, &VersionRef::Id(new.version)).as_slice())?
            .is_some();
        if taken {
            return Ok(Err(MetaError::Invalid(format!(
                "{bucket}/{key} already has a version {}",
                new.version
            ))));
        }
    }
    let replace = match &cur {
        None => false,
        Some(c) => {
            state == Versioning::Unversioned
                || (state == Versioning::Suspended && c.meta.null)
                || c.manifest.version == new.version
        }
    };
    // Object Lock: nothing locked is replaced, by anyone. (With Object
    // Lock on, versioning stays Enabled, so writes add versions; this
    // guards null versions locked before.)
    if let (true, Some(c)) = (replace, &cur) {
        if let Some(why) = c.meta.lock(now, false) {
            return Ok(Err(MetaError::ObjectLocked(format!(
                "{bucket}/{key} cannot be overwritten: {why}"
            ))));
        }
    }
    if state == Versioning::Suspended {
        let null = {
            let versions = txn.open_table(OBJECT_VERSIONS)?;
            let ids = txn.open_table(VERSION_IDS)?;
            find_noncurrent(&versions, &ids, object, &VersionRef::Null)?
        };
        if let Some(why) = null.and_then(|(_, h)| h.meta.lock(now, false)) {
            return Ok(Err(MetaError::ObjectLocked(format!(
                "the null version of {bucket}/{key} cannot be replaced: {why}"
            ))));
        }
    }
    let retention = object_lock(txn, bucket)?
        .and_then(|c| c.default)
        .map(|d| Retention {
            mode: d.mode,
            until_ms: now.saturating_add(u64::from(d.days) * 86_400_000),
        });
    let meta = match state {
        Versioning::Unversioned => VersionMeta::LEGACY,
        s => VersionMeta {
            seq: next_seq(txn)?,
            null: s == Versioning::Suspended,
            delete_marker: false,
            retention,
            legal_hold: false,
        },
    };
    let row = OwnerRow::Object(object.to_vec());
    let old_sized = cur.as_ref().map(sized);
    if replace {
        let Some(c) = &cur else {
            return Err(corrupt("install", "replace without a current version"));
        };
        let old = {
            let t = txn.open_table(OBJECT_STRIPES)?;
            all_stripes(&t, object, c)?
        };
        store_object(txn, object, Some(&c.manifest.version), new, meta)?;
        shard_index::remove(txn, &row, &old, c.manifest.ec.k)?;
        shard_index::add(txn, &row, new.version, 0, &new.stripes, new.ec.k)?;
        let keep: HashSet<ShardId> = new.placed_shards().map(|(_, s)| s).collect();
        queue_gc(txn, now, placed_in(&old).filter(|(_, s)| !keep.contains(s)))?;
        if c.manifest.version != new.version {
            drop_repairs(txn, &c.manifest.version)?;
        }
    } else {
        if let Some(c) = &cur {
            demote(txn, object, c)?;
        }
        store_object(txn, object, None, new, meta)?;
        shard_index::add(txn, &row, new.version, 0, &new.stripes, new.ec.k)?;
    }
    if state == Versioning::Suspended {
        drop_null(txn, now, object)?;
    }
    stats::replace_sized(
        txn,
        bucket,
        old_sized,
        Some((new.size, new.stripes.len() as u64)),
    )?;
    queue_unplaced(txn, bucket, key, new)?;
    Ok(Ok(match state {
        Versioning::Unversioned => CommandResult::Ok,
        _ => CommandResult::Version(VersionStamp {
            version: meta.version_ref(new.version),
            delete_marker: false,
        }),
    }))
}

/// Applies `DeleteObject` (no version id) to `bucket/key`: unversioned,
/// the current version goes; otherwise a delete marker becomes the newest
/// version (the current one turns noncurrent, or, a `null` version in a
/// suspended bucket, goes).
pub(super) fn delete_current(
    txn: &redb::WriteTransaction,
    now: u64,
    bucket: &str,
    object: &[u8],
    cur: Option<Head>,
) -> StoreResult<Result<CommandResult, MetaError>> {
    let state = bucket_versioning(txn, bucket)?;
    if state == Versioning::Unversioned {
        if let Some(c) = cur {
            txn.open_table(OBJECTS)?.remove(object)?;
            erase_data(txn, now, object, &c)?;
            stats::replace_sized(txn, bucket, Some(sized(&c)), None)?;
        }
        return Ok(Ok(CommandResult::Ok));
    }
    if state == Versioning::Suspended {
        let current_null = cur.as_ref().filter(|c| c.meta.null).map(|c| c.meta);
        let noncurrent_null = {
            let versions = txn.open_table(OBJECT_VERSIONS)?;
            let ids = txn.open_table(VERSION_IDS)?;
            find_noncurrent(&versions, &ids, object, &VersionRef::Null)?.map(|(_, h)| h.meta)
        };
        if let Some(why) = current_null
            .or(noncurrent_null)
            .and_then(|m| m.lock(now, false))
        {
            return Ok(Err(MetaError::ObjectLocked(format!(
                "the null version cannot be replaced by a delete marker: {why}"
            ))));
        }
    }
    if let Some(c) = cur {
        txn.open_table(OBJECTS)?.remove(object)?;
        if state == Versioning::Suspended && c.meta.null {
            erase_data(txn, now, object, &c)?;
        } else {
            demote(txn, object, &c)?;
        }
        stats::replace_sized(txn, bucket, Some(sized(&c)), None)?;
    }
    if state == Versioning::Suspended {
        drop_null(txn, now, object)?;
    }
    let seq = next_seq(txn)?;
    let mut h = blake3::Hasher::new();
    h.update(b"cairn delete marker\0");
    h.update(object);
    h.update(&seq.to_be_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&h.finalize().as_bytes()[..16]);
    let meta = VersionMeta {
        seq,
        null: state == Versioning::Suspended,
        delete_marker: true,
        retention: None,
        legal_hold: false,
    };
    let marker = Head {
        manifest: ObjectManifest {
            version: StripeId(id),
            size: 0,
            etag: String::new(),
            content_type: None,
            headers: BTreeMap::new(),
            user_meta: BTreeMap::new(),
            checksums: BTreeMap::new(),
            created_ms: now,
            ec: EcParams { k: 1, m: 0 },
            shard_size: 0,
            stripes: Vec::new(),
            parts: Vec::new(),
            inline: None,
            tags: BTreeMap::new(),
        },
        stripes: 0,
        meta,
    };
    demote(txn, object, &marker)?;
    Ok(Ok(CommandResult::Version(VersionStamp {
        version: marker.version_ref(),
        delete_marker: true,
    })))
}

/// Applies `DeleteObjectVersion`: removes version `v` of `bucket/key` for
/// good (its shards queued for GC). Deleting a version that does not exist
/// succeeds, as on S3.
pub(super) fn delete_version(
    txn: &redb::WriteTransaction,
    now: u64,
    bucket: &str,
    key: &str,
    v: &VersionRef,
    bypass: bool,
) -> StoreResult<Result<CommandResult, MetaError>> {
    if let Err(e) = validate_key(key) {
        return Ok(Err(e.into()));
    }
    if txn.open_table(BUCKETS)?.get(bucket.as_bytes())?.is_none() {
        return Ok(Err(MetaError::NoSuchBucket(bucket.to_string())));
    }
    let object = object_key(bucket, key);
    let cur = get_head(&txn.open_table(OBJECTS)?, &object)?;
    let locked = |h: &Head| {
        h.meta.lock(now, bypass).map(|why| {
            MetaError::ObjectLocked(format!("version {v} of {bucket}/{key} is protected: {why}"))
        })
    };
    let mut delete_marker = false;
    match cur {
        Some(c) if c.is(v) => {
            if let Some(e) = locked(&c) {
                return Ok(Err(e));
            }
            txn.open_table(OBJECTS)?.remove(object.as_slice())?;
            erase_data(txn, now, &object, &c)?;
            stats::replace_sized(txn, bucket, Some(sized(&c)), None)?;
        }
        _ => {
            let found = {
                let versions = txn.open_table(OBJECT_VERSIONS)?;
                let ids = txn.open_table(VERSION_IDS)?;
                find_noncurrent(&versions, &ids, &object, v)?
            };
            if let Some((k, head)) = found {
                if let Some(e) = locked(&head) {
                    return Ok(Err(e));
                }
                delete_marker = head.meta.delete_marker;
                drop_noncurrent(txn, now, &object, &k, &head)?;
            }
        }
    }
    promote(txn, bucket, &object)?;
    Ok(Ok(CommandResult::Version(VersionStamp {
        version: *v,
        delete_marker,
    })))
}

/// True when `bucket` has noncurrent versions or delete markers (such a
/// bucket is not empty, as on S3).
pub(super) fn has_versions(txn: &redb::WriteTransaction, bucket: &str) -> StoreResult<bool> {
    has_bucket_rows(txn, OBJECT_VERSIONS, bucket)
}

/// Answers `GetVersionPage`: version `v` of `bucket/key` (the newest when
/// `None`), with up to `want` stripes.
pub(super) fn get_version_page(
    txn: &redb::ReadTransaction,
    bucket: &str,
    key: &str,
    v: Option<&VersionRef>,
    want: u32,
) -> StoreResult<Result<QueryResult, MetaError>> {
    if get_bucket(txn, bucket)?.is_none() {
        return Ok(Err(MetaError::NoSuchBucket(bucket.to_string())));
    }
    let versioning = read_versioning(txn, bucket)?;
    let object = object_key(bucket, key);
    let not_found = || match v {
        Some(v) => MetaError::NoSuchVersion {
            bucket: bucket.to_string(),
            key: key.to_string(),
            version: v.to_string(),
        },
        None => MetaError::NoSuchKey {
            bucket: bucket.to_string(),
            key: key.to_string(),
        },
    };
    let cur = match open_ro(txn, OBJECTS)? {
        Some(t) => get_head(&t, &object)?,
        None => None,
    };
    let versions = open_ro(txn, OBJECT_VERSIONS)?;
    let ids = open_ro(txn, VERSION_IDS)?;
    let (head, latest) = match (v, cur) {
        (None, Some(c)) => (c, true),
        (Some(v), Some(c)) if c.is(v) => (c, true),
        (None, None) => {
            let newest = match &versions {
                Some(t) => newest_noncurrent(t, &object)?,
                None => None,
            };
            match newest {
                Some((_, h)) if h.meta.delete_marker => (h, true),
                _ => return Ok(Err(not_found())),
            }
        }
        (Some(v), cur) => {
            let (Some(vt), Some(it)) = (&versions, &ids) else {
                return Ok(Err(not_found()));
            };
            let Some((k, h)) = find_noncurrent(vt, it, &object, v)? else {
                return Ok(Err(not_found()));
            };
            let latest =
                cur.is_none() && newest_noncurrent(vt, &object)?.is_some_and(|(nk, _)| nk == k);
            (h, latest)
        }
    };
    let mut m = head.manifest.clone();
    let want = u64::from(want.min(STRIPE_PAGE_MAX)).min(head.stripes);
    if want > 0 {
        if let Some(st) = open_ro(txn, OBJECT_STRIPES)? {
            m.stripes = stripe_page(&st, &object, &m.version, 0, want as usize)?;
        }
        if (m.stripes.len() as u64) < want {
            return Err(corrupt(
                "object stripe rows",
                format!("{bucket}/{key} lacks some"),
            ));
        }
    }
    Ok(Ok(QueryResult::Version(VersionView {
        manifest: m,
        version: head.version_ref(),
        delete_marker: head.meta.delete_marker,
        latest,
        versioning,
        retention: head.meta.retention,
        legal_hold: head.meta.legal_hold,
    })))
}

/// Where a head is stored (`None`: `objects`; else its `object_versions`
/// key) and the head.
type LockTarget = (Option<Vec<u8>>, Head);

/// The data version `v` of `object` (the current one when `None`) for an
/// Object Lock change: where its head is stored and the head.
fn lock_target(
    txn: &redb::WriteTransaction,
    bucket: &str,
    key: &str,
    object: &[u8],
    v: Option<&VersionRef>,
) -> StoreResult<Result<LockTarget, MetaError>> {
    if txn.open_table(BUCKETS)?.get(bucket.as_bytes())?.is_none() {
        return Ok(Err(MetaError::NoSuchBucket(bucket.to_string())));
    }
    if object_lock(txn, bucket)?.is_none() {
        return Ok(Err(MetaError::Invalid(
            "Bucket is missing Object Lock Configuration".into(),
        )));
    }
    let cur = get_head(&txn.open_table(OBJECTS)?, object)?;
    let found = match (v, cur) {
        (None, Some(c)) => Some((None, c)),
        (Some(v), Some(c)) if c.is(v) => Some((None, c)),
        (Some(v), _) => {
            let versions = txn.open_table(OBJECT_VERSIONS)?;
            let ids = txn.open_table(VERSION_IDS)?;
            find_noncurrent(&versions, &ids, object, v)?.map(|(k, h)| (Some(k), h))
        }
        (None, None) => None,
    };
    match found {
        Some((_, h)) if h.meta.delete_marker => Ok(Err(MetaError::Invalid(
            "a delete marker has no retention or legal hold".into(),
        ))),
        Some(x) => Ok(Ok(x)),
        None => Ok(Err(match v {
            Some(v) => MetaError::NoSuchVersion {
                bucket: bucket.to_string(),
                key: key.to_string(),
                version: v.to_string(),
            },
            None => MetaError::NoSuchKey {
                bucket: bucket.to_string(),
                key: key.to_string(),
            },
        })),
    }
}

/// Rewrites a head found by [`lock_target`] in place.
fn store_lock_target(
    txn: &redb::WriteTransaction,
    object: &[u8],
    at: Option<Vec<u8>>,
    head: &Head,
) -> StoreResult<()> {
    match at {
        None => store_head(txn, object, head),
        Some(k) => {
            txn.open_table(OBJECT_VERSIONS)?
                .insert(k.as_slice(), encode_head_row(head)?.as_slice())?;
            Ok(())
        }
    }
}

/// Applies `PutObjectRetention`.
#[allow(clippy::too_many_arguments)]
pub(super) fn put_retention(
    txn: &redb::WriteTransaction,
    now: u64,
    bucket: &str,
    key: &str,
    v: Option<&VersionRef>,
    new: Option<Retention>,
    bypass: bool,
) -> StoreResult<Result<CommandResult, MetaError>> {
    if let Some(r) = new {
        if r.until_ms > now.saturating_add(u64::from(MAX_RETENTION_DAYS) * 86_400_000) {
            return Ok(Err(MetaError::Invalid(format!(
                "retention longer than {MAX_RETENTION_DAYS} days"
            ))));
        }
    }
    let object = object_key(bucket, key);
    let (at, mut head) = match lock_target(txn, bucket, key, &object, v)? {
        Ok(x) => x,
        Err(e) => return Ok(Err(e)),
    };
    if let Some(old) = head.meta.retention.filter(|r| r.active(now)) {
        let keeps = |n: &Option<Retention>| {
            n.is_some_and(|n| {
                n.until_ms >= old.until_ms
                    && (old.mode == LockMode::Governance || n.mode == LockMode::Compliance)
            })
        };
        if !keeps(&new) {
            let refuse = match old.mode {
                LockMode::Compliance => true,
                LockMode::Governance => !bypass,
            };
            if refuse {
                return Ok(Err(MetaError::ObjectLocked(format!(
                    "{bucket}/{key}: a {:?} retention until {} ms can only be lengthened{}",
                    old.mode,
                    old.until_ms,
                    if old.mode == LockMode::Governance {
                        " (or changed with x-amz-bypass-governance-retention)"
                    } else {
                        ""
                    }
                ))));
            }
        }
    }
    head.meta.retention = new;
    store_lock_target(txn, &object, at, &head)?;
    Ok(Ok(CommandResult::Ok))
}

/// Applies `PutObjectLegalHold`.
pub(super) fn put_legal_hold(
    txn: &redb::WriteTransaction,
    bucket: &str,
    key: &str,
    v: Option<&VersionRef>,
    on: bool,
) -> StoreResult<Result<CommandResult, MetaError>> {
    let object = object_key(bucket, key);
    let (at, mut head) = match lock_target(txn, bucket, key, &object, v)? {
        Ok(x) => x,
        Err(e) => return Ok(Err(e)),
    };
    head.meta.legal_hold = on;
    store_lock_target(txn, &object, at, &head)?;
    Ok(Ok(CommandResult::Ok))
}

/// The head of data version `version` of `object` in a read transaction,
/// current or not (for `ObjectStripes`).
pub(super) fn read_version_head(
    txn: &redb::ReadTransaction,
    object: &[u8],
    version: &StripeId,
) -> StoreResult<Option<Head>> {
    let Some(objects) = open_ro(txn, OBJECTS)? else {
        return Ok(None);
    };
    let versions = open_ro(txn, OBJECT_VERSIONS)?;
    let ids = open_ro(txn, VERSION_IDS)?;
    find_version_head(&objects, versions.as_ref(), ids.as_ref(), object, version)
}

fn entry(key: &str, h: &Head, latest: bool) -> VersionEntry {
    VersionEntry {
        key: key.to_string(),
        version: h.version_ref(),
        latest,
        delete_marker: h.meta.delete_marker,
        size: h.manifest.size,
        etag: h.manifest.etag.clone(),
        created_ms: h.manifest.created_ms,
    }
}

/// The first key of `bucket` at or after the raw bound `from` (an
/// `objects`-style key or a prefix of one) in `objects` or
/// `object_versions`, whichever comes first.
fn next_key(
    objects: Option<&redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
    versions: Option<&redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
    from: &[u8],
    end: &[u8],
    bucket_prefix: &[u8],
) -> StoreResult<Option<Vec<u8>>> {
    let mut best: Option<Vec<u8>> = None;
    if let Some(t) = objects {
        if let Some(r) = t
            .range::<&[u8]>((Bound::Included(from), Bound::Excluded(end)))?
            .next()
        {
            best = Some(r?.0.value().to_vec());
        }
    }
    if let Some(t) = versions {
        if let Some(r) = t
            .range::<&[u8]>((Bound::Included(from), Bound::Excluded(end)))?
            .next()
        {
            let k = r?.0.value().to_vec();
            // bucket NUL key NUL seq: the key ends at the last 9 bytes.
            if k.len() >= bucket_prefix.len() + 9 {
                let k = k[..k.len() - 9].to_vec();
                if best.as_ref().is_none_or(|b| k < *b) {
                    best = Some(k);
                }
            }
        }
    }
    Ok(best)
}

/// Lists one page of ListObjectVersions: keys in order, each key's
/// versions newest first (the current one, then `object_versions`), by
/// range reads only (a common prefix is skipped by one seek).
pub fn list_versions(
    txn: &redb::ReadTransaction,
    req: &ListVersionsRequest,
) -> StoreResult<Result<VersionPage, MetaError>> {
    if get_bucket(txn, &req.bucket)?.is_none() {
        return Ok(Err(MetaError::NoSuchBucket(req.bucket.clone())));
    }
    let max = req.max_keys.min(MAX_LIST_KEYS) as usize;
    let mut page = VersionPage::default();
    let objects = open_ro(txn, OBJECTS)?;
    let versions = open_ro(txn, OBJECT_VERSIONS)?;
    let ids = open_ro(txn, VERSION_IDS)?;
    let delimiter = req.delimiter.as_deref().filter(|d| !d.is_empty());
    let bucket_prefix = object_key(&req.bucket, "");
    let full = |s: &str| {
        let mut k = bucket_prefix.clone();
        k.extend_from_slice(s.as_bytes());
        k
    };
    // Past every key starting with `s` (0xFF never occurs in UTF-8).
    let past = |s: &str| {
        let mut k = full(s);
        k.push(0xff);
        k
    };
    // Past key `s` itself and all its versions: keys cannot hold NUL, so
    // the next key is at least `s` ++ 0x01.
    let after_key = |s: &str| {
        let mut k = full(s);
        k.push(1);
        k
    };
    let end = past(&req.prefix);
    let mut from = full(&req.prefix);
    // Where to resume inside the marker key's chain.
    let mut resume: Option<(String, VersionRef)> = None;
    if let Some(marker) = req.key_marker.as_deref().filter(|m| !m.is_empty()) {
        let candidate = match (&req.version_marker, delimiter) {
            (Some(v), _) => {
                resume = Some((marker.to_string(), *v));
                full(marker)
            }
            (None, Some(d)) if marker.ends_with(d) && marker.starts_with(&req.prefix) => {
                past(marker)
            }
            (None, _) => after_key(marker),
        };
        if candidate > from {
            from = candidate;
        }
    }
    if max == 0 {
        return Ok(Ok(page));
    }
    let count = |p: &VersionPage| p.entries.len() + p.common_prefixes.len();
    while let Some(raw) = next_key(
        objects.as_ref(),
        versions.as_ref(),
        &from,
        &end,
        &bucket_prefix,
    )? {
        let Some(key) = raw
            .strip_prefix(bucket_prefix.as_slice())
            .and_then(|k| std::str::from_utf8(k).ok())
            .map(str::to_string)
        else {
            return Err(corrupt("object key", "not UTF-8 after the bucket"));
        };
        if !key.starts_with(&req.prefix) {
            break;
        }
        if let Some(d) = delimiter {
            if let Some(pos) = key[req.prefix.len()..].find(d) {
                if count(&page) >= max {
                    page.truncated = true;
                    break;
                }
                let cp = key[..req.prefix.len() + pos + d.len()].to_string();
                from = past(&cp);
                page.next_key_marker = Some(cp.clone());
                page.next_version_marker = None;
                page.common_prefixes.push(cp);
                continue;
            }
        }
        // This key's chain: the current version, then the others.
        let cur = match &objects {
            Some(t) => get_head(t, &raw)?,
            None => None,
        };
        let skip_to = resume.take().filter(|(k, _)| *k == key).map(|(_, v)| v);
        let mut chain_from = chain_bounds(&raw).0;
        let mut emit_current = cur.is_some();
        if let Some(v) = skip_to {
            emit_current = false;
            let marker_is_current = cur.as_ref().is_some_and(|c| c.is(&v));
            if !marker_is_current {
                // After the noncurrent version `v` (or nothing left of
                // this key when it no longer exists).
                match (&versions, &ids) {
                    (Some(vt), Some(it)) => match find_noncurrent(vt, it, &raw, &v)? {
                        Some((k, _)) => {
                            chain_from = k;
                            chain_from.push(0);
                        }
                        None => chain_from = chain_bounds(&raw).1,
                    },
                    _ => chain_from = chain_bounds(&raw).1,
                }
                if chain_from == chain_bounds(&raw).1 {
                    from = after_key(&key);
                    continue;
                }
            }
        }
        let mut truncated = false;
        if emit_current {
            if let Some(c) = &cur {
                if count(&page) >= max {
                    page.truncated = true;
                    break;
                }
                page.entries.push(entry(&key, c, true));
                page.next_key_marker = Some(key.clone());
                page.next_version_marker = Some(c.version_ref());
            }
        }
        if let Some(vt) = &versions {
            let hi = chain_bounds(&raw).1;
            let mut first = true;
            for r in vt.range::<&[u8]>(chain_from.as_slice()..=hi.as_slice())? {
                let (_, v) = r?;
                let h = decode_head(v.value())?;
                if count(&page) >= max {
                    truncated = true;
                    break;
                }
                let latest = cur.is_none() && first && skip_to.is_none();
                first = false;
                page.entries.push(entry(&key, &h, latest));
                page.next_key_marker = Some(key.clone());
                page.next_version_marker = Some(h.version_ref());
            }
        }
        if truncated {
            page.truncated = true;
            break;
        }
        from = after_key(&key);
    }
    if !page.truncated {
        page.next_key_marker = None;
        page.next_version_marker = None;
    }
    Ok(Ok(page))
}
