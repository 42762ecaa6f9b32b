//! Upgrades of tables written by older binaries.

use super::*;

/// Upgrades tables written by older binaries, in place and idempotently
/// (run when the state machine opens and after a snapshot is installed):
/// GC rows with an empty value (from before GC had a minimum delay) become
/// "queued at time 0", i.e. due at once, as they were, and get their
/// `gc_due` index row. Deterministic: every replica rewrites the same rows.
///
/// Format 1 files have no reverse shard index: [`build_shard_index`] builds
/// it once (the one full walk of every object and part, at upgrade).
/// Formats 1 and 2 kept each object as one JSON manifest row:
/// [`split_json_rows`] rewrites them as a head row and stripe rows, once,
/// before the index is built from them.
pub fn migrate(txn: &redb::WriteTransaction) -> StoreResult<()> {
    split_json_rows(txn)?;
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

/// The `counters` row that marks the index and counters built. Its name
/// changed when the per-chunkserver `placed` counters were added (model
/// format 3): a format 2 state rebuilds the index once, with them.
pub(super) const SHARD_INDEX_BUILT: &[u8] = b"shard_index_placed";

/// Builds the `shard_owners` index and the per-chunkserver `placed`
/// counters from every object and uploaded part, and the `bucket_stats`
/// counters from every object, once per state (a counter marks them
/// built). Deterministic.
pub(super) fn build_shard_index(txn: &redb::WriteTransaction) -> StoreResult<()> {
    let mut counters = txn.open_table(COUNTERS)?;
    if counters.get(SHARD_INDEX_BUILT)?.is_some() {
        return Ok(());
    }
    counters.insert(SHARD_INDEX_BUILT, 1u64.to_be_bytes().as_slice())?;
    drop(counters);
    txn.delete_table(shard_index::SHARD_OWNERS)?;
    txn.open_table(shard_index::SHARD_OWNERS)?;
    txn.delete_table(shard_index::PLACED)?;
    txn.open_table(shard_index::PLACED)?;
    txn.delete_table(stats::BUCKET_STATS)?;
    txn.open_table(stats::BUCKET_STATS)?;
    let objects = txn.open_table(OBJECTS)?;
    let stripes = txn.open_table(OBJECT_STRIPES)?;
    for r in objects.iter()? {
        let (k, _) = r?;
        let Some(m) = get_object(&objects, &stripes, k.value())? else {
            continue;
        };
        let row = OwnerRow::Object(k.value().to_vec());
        shard_index::add(txn, &row, m.version, 0, &m.stripes, m.ec.k)?;
        let raw = k.value();
        let bucket = raw
            .iter()
            .position(|b| *b == 0)
            .map(|p| &raw[..p])
            .unwrap_or(raw);
        stats::replace(txn, &String::from_utf8_lossy(bucket), None, Some(&m))?;
    }
    drop(objects);
    // Noncurrent data versions place shards too (not counted in the
    // bucket's stats, which count current versions).
    let versions = txn.open_table(OBJECT_VERSIONS)?;
    for r in versions.iter()? {
        let (k, v) = r?;
        let head = decode_head(v.value())?;
        if head.meta.delete_marker {
            continue;
        }
        let raw = k.value();
        let Some(object) = raw.get(..raw.len().saturating_sub(9)) else {
            continue;
        };
        let m = all_stripes(&stripes, object, &head)?;
        let row = OwnerRow::Object(object.to_vec());
        shard_index::add(txn, &row, head.manifest.version, 0, &m, head.manifest.ec.k)?;
    }
    drop(versions);
    drop(stripes);
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
        // Parts are not counted in the placed counters: no `k` needed.
        shard_index::add(txn, &row, upload, 0, &p.stripes, 1)?;
    }
    Ok(())
}
