//! Per-bucket usage counters, maintained by `model::apply` in the same
//! transaction as every object commit, overwrite and delete, so "how much
//! does this bucket hold" is one row read, never a scan of its objects.
//!
//! # Layout
//! Table `bucket_stats`: bucket name (UTF-8) -> format byte ([`FORMAT`]) ++
//! postcard [`BucketStats`]. A bucket with no objects has no row (or a row
//! of zeros, removed with the bucket).

use std::collections::BTreeMap;

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::types::ObjectManifest;

/// The counters table.
pub const BUCKET_STATS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bucket_stats");

/// Format byte of every value.
pub const FORMAT: u8 = 1;

/// What one bucket holds (live object versions only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketStats {
    /// Objects.
    pub objects: u64,
    /// Logical bytes.
    pub bytes: u64,
    /// Erasure-coded stripes (inline objects have none).
    pub stripes: u64,
}

type StoreResult<T> = Result<T, redb::Error>;

fn encode(s: &BucketStats) -> StoreResult<Vec<u8>> {
    let mut v = vec![FORMAT];
    postcard::to_io(s, &mut v)
        .map_err(|e| redb::Error::Corrupted(format!("encode bucket stats: {e}")))?;
    Ok(v)
}

fn decode(v: &[u8]) -> StoreResult<BucketStats> {
    match v.split_first() {
        Some((&FORMAT, rest)) => postcard::from_bytes(rest)
            .map_err(|e| redb::Error::Corrupted(format!("decode bucket stats: {e}"))),
        Some((f, _)) => Err(redb::Error::Corrupted(format!(
            "bucket stats row has format {f}; this binary reads format {FORMAT}"
        ))),
        None => Err(redb::Error::Corrupted("empty bucket stats row".into())),
    }
}

fn of(m: &ObjectManifest) -> BucketStats {
    BucketStats {
        objects: 1,
        bytes: m.size,
        stripes: m.stripes.len() as u64,
    }
}

/// Records that `bucket`'s live version of one key changed from `old` to
/// `new` (either may be absent: a new key, a delete).
pub fn replace(
    txn: &redb::WriteTransaction,
    bucket: &str,
    old: Option<&ObjectManifest>,
    new: Option<&ObjectManifest>,
) -> StoreResult<()> {
    replace_counts(txn, bucket, old.map(of), new.map(of))
}

/// [`replace`] with the (size, stripe count) of each side, for heads
/// read without their stripes.
pub fn replace_sized(
    txn: &redb::WriteTransaction,
    bucket: &str,
    old: Option<(u64, u64)>,
    new: Option<(u64, u64)>,
) -> StoreResult<()> {
    let as_stats = |(bytes, stripes): (u64, u64)| BucketStats {
        objects: 1,
        bytes,
        stripes,
    };
    replace_counts(txn, bucket, old.map(as_stats), new.map(as_stats))
}

fn replace_counts(
    txn: &redb::WriteTransaction,
    bucket: &str,
    old: Option<BucketStats>,
    new: Option<BucketStats>,
) -> StoreResult<()> {
    let mut t = txn.open_table(BUCKET_STATS)?;
    let mut s = match t.get(bucket.as_bytes())? {
        Some(v) => decode(v.value())?,
        None => BucketStats::default(),
    };
    if let Some(o) = old {
        s.objects = s.objects.saturating_sub(o.objects);
        s.bytes = s.bytes.saturating_sub(o.bytes);
        s.stripes = s.stripes.saturating_sub(o.stripes);
    }
    if let Some(n) = new {
        s.objects = s.objects.saturating_add(n.objects);
        s.bytes = s.bytes.saturating_add(n.bytes);
        s.stripes = s.stripes.saturating_add(n.stripes);
    }
    if s == BucketStats::default() {
        t.remove(bucket.as_bytes())?;
    } else {
        t.insert(bucket.as_bytes(), encode(&s)?.as_slice())?;
    }
    Ok(())
}

/// Forgets a bucket's counters (the bucket is deleted).
pub fn forget(txn: &redb::WriteTransaction, bucket: &str) -> StoreResult<()> {
    txn.open_table(BUCKET_STATS)?.remove(bucket.as_bytes())?;
    Ok(())
}

/// Every bucket's counters (one row per bucket with objects).
pub fn all(txn: &redb::ReadTransaction) -> StoreResult<BTreeMap<String, BucketStats>> {
    let t = match txn.open_table(BUCKET_STATS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = BTreeMap::new();
    for r in t.iter()? {
        let (k, v) = r?;
        out.insert(
            String::from_utf8_lossy(k.value()).into_owned(),
            decode(v.value())?,
        );
    }
    Ok(out)
}
