//! The reverse index of shard placements: `(chunkserver, shard) -> owner`.
//!
//! Every shard that a committed object version or an uploaded part places
//! on a chunkserver has exactly one row here, written by `model::apply` in
//! the same transaction that writes the manifest or part (so the index is
//! never out of step with the rows it mirrors, on any replica). Questions
//! about one chunkserver's shards become lookups or one key range instead
//! of a scan of every object:
//! - orphan GC: "does anything name this shard on this chunkserver?" is a
//!   point lookup per inventory entry ([`is_named`]);
//! - named-but-absent checks page through one chunkserver's range in shard
//!   id order ([`page`]);
//! - removing a chunkserver checks that its range is empty ([`places_on`]);
//! - the repair planner pages through the shards of a damaged chunkserver
//!   ([`page`]) and finds the owner (row, version, stripe, index) of each,
//!   or of a bad report ([`owner`]), then reads only those manifests; it
//!   notices unregistered ids with one seek per id ([`next_chunkserver`]).
//!
//! # Layout
//! Key: chunkserver id (u64 big-endian) ++ shard id (16 bytes), the layout of
//! the `gc` and `bad` tables, so one chunkserver's rows are one range in
//! shard id order. Value: a format byte ([`FORMAT`]) then the postcard
//! encoding of [`Owner`]. A value with another format byte is refused as
//! corrupt rather than misread.
//!
//! # Invariant
//! A row is removed only by the row that owns it ([`remove`] compares the
//! stored owner), so the order in which one command drops and adds
//! placements (a multipart completion moves parts' stripes into the object)
//! does not matter. Shard ids are random per written shard: two rows never
//! name one `(chunkserver, shard)` (copies rewrite data under new ids).

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::types::{ChunkserverId, ShardId, StripeId, StripeManifest};

/// The index table.
pub const SHARD_OWNERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("shard_owners");

/// Format byte of every value.
pub const FORMAT: u8 = 1;

/// Per-chunkserver counters of the committed object shards placed on it:
/// chunkserver id (u64 BE) -> [`FORMAT`] ++ postcard [`Placed`]. Kept in
/// step with the index rows by [`add`], [`remove`] and [`relocate`], so
/// "how much does this chunkserver hold" is one row read (the rebalancer
/// compares fullness with it; heartbeat `used` lags a move by the GC
/// delay, this does not). Shards of uploads in progress are not counted.
pub const PLACED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("placed_per_chunkserver");

/// What committed object versions place on one chunkserver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed {
    /// Shards.
    pub shards: u64,
    /// Shard bytes (each shard `ceil(stripe length / k)`).
    pub bytes: u64,
}

fn adjust(
    txn: &redb::WriteTransaction,
    cs: ChunkserverId,
    add: bool,
    bytes: u64,
) -> StoreResult<()> {
    let mut t = txn.open_table(PLACED)?;
    let k = cs.to_be_bytes();
    let mut p = match t.get(k.as_slice())? {
        Some(v) => decode_placed(v.value())?,
        None => Placed::default(),
    };
    if add {
        p.shards = p.shards.saturating_add(1);
        p.bytes = p.bytes.saturating_add(bytes);
    } else {
        p.shards = p.shards.saturating_sub(1);
        p.bytes = p.bytes.saturating_sub(bytes);
    }
    if p == Placed::default() {
        t.remove(k.as_slice())?;
    } else {
        let mut v = vec![FORMAT];
        postcard::to_io(&p, &mut v)
            .map_err(|e| redb::Error::Corrupted(format!("encode placed counters: {e}")))?;
        t.insert(k.as_slice(), v.as_slice())?;
    }
    Ok(())
}

fn decode_placed(v: &[u8]) -> StoreResult<Placed> {
    match v.split_first() {
        Some((&FORMAT, rest)) => postcard::from_bytes(rest)
            .map_err(|e| redb::Error::Corrupted(format!("decode placed counters: {e}"))),
        Some((f, _)) => Err(redb::Error::Corrupted(format!(
            "placed counters row has format {f}; this binary reads format {FORMAT}"
        ))),
        None => Err(redb::Error::Corrupted("empty placed counters row".into())),
    }
}

/// Every chunkserver's [`Placed`] counters (one row per chunkserver that
/// holds committed shards).
pub fn placed(
    txn: &redb::ReadTransaction,
) -> StoreResult<std::collections::BTreeMap<ChunkserverId, Placed>> {
    let t = match txn.open_table(PLACED) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Default::default()),
        Err(e) => return Err(e.into()),
    };
    let mut out = std::collections::BTreeMap::new();
    for r in t.iter()? {
        let (k, v) = r?;
        let id = <[u8; 8]>::try_from(k.value())
            .map(u64::from_be_bytes)
            .map_err(|_| redb::Error::Corrupted("placed counters key of bad length".into()))?;
        out.insert(id, decode_placed(v.value())?);
    }
    Ok(out)
}

/// Shard length of a stripe of `len` bytes over `k` data shards.
pub fn shard_len(len: u64, k: u8) -> u64 {
    len.div_ceil(u64::from(k.max(1)))
}

/// Which row names a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OwnerRow {
    /// A committed object version: its `objects` key (bucket NUL key).
    Object(Vec<u8>),
    /// An uploaded part: its `upload_parts` key (upload id ++ part number).
    Part(Vec<u8>),
}

/// Where a placed shard belongs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The row.
    pub row: OwnerRow,
    /// The object version (objects) or upload id (parts).
    pub version: StripeId,
    /// Stripe number within the object (or within the part).
    pub stripe: u64,
    /// Shard index within the stripe.
    pub index: u8,
}

type StoreResult<T> = Result<T, redb::Error>;

/// The key of `(cs, shard)`.
pub fn key(cs: ChunkserverId, shard: &ShardId) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&cs.to_be_bytes());
    k[8..].copy_from_slice(&shard.0);
    k
}

fn split_key(k: &[u8]) -> Option<(ChunkserverId, ShardId)> {
    if k.len() != 24 {
        return None;
    }
    let mut cs = [0u8; 8];
    cs.copy_from_slice(&k[..8]);
    let mut s = [0u8; 16];
    s.copy_from_slice(&k[8..]);
    Some((u64::from_be_bytes(cs), ShardId(s)))
}

/// Encodes an owner as a value.
pub fn encode(o: &Owner) -> StoreResult<Vec<u8>> {
    let mut v = vec![FORMAT];
    postcard::to_io(o, &mut v)
        .map_err(|e| redb::Error::Corrupted(format!("encode shard owner: {e}")))?;
    Ok(v)
}

/// Decodes a value.
pub fn decode(v: &[u8]) -> StoreResult<Owner> {
    match v.split_first() {
        Some((&FORMAT, rest)) => postcard::from_bytes(rest)
            .map_err(|e| redb::Error::Corrupted(format!("decode shard owner: {e}"))),
        Some((f, _)) => Err(redb::Error::Corrupted(format!(
            "shard owner row has format {f}; this binary reads format {FORMAT}"
        ))),
        None => Err(redb::Error::Corrupted("empty shard owner row".into())),
    }
}

/// Indexes every placed shard of `stripes` (numbered from `first`) as owned
/// by `row`, version `version`; `k` is the coding's data shard count (for
/// the [`Placed`] counters of object rows).
pub fn add(
    txn: &redb::WriteTransaction,
    row: &OwnerRow,
    version: StripeId,
    first: u64,
    stripes: &[StripeManifest],
    k: u8,
) -> StoreResult<()> {
    let mut t = txn.open_table(SHARD_OWNERS)?;
    let object = matches!(row, OwnerRow::Object(_));
    let mut counted = Vec::new();
    for (i, s) in stripes.iter().enumerate() {
        for (idx, l) in s.shards.iter().enumerate() {
            let Some(cs) = l.chunkserver else { continue };
            let owner = Owner {
                row: row.clone(),
                version,
                stripe: first + i as u64,
                index: idx as u8,
            };
            let old = t
                .insert(key(cs, &l.shard).as_slice(), encode(&owner)?.as_slice())?
                .map(|v| decode(v.value()))
                .transpose()?;
            let was_object = old.is_some_and(|o| matches!(o.row, OwnerRow::Object(_)));
            if object && !was_object {
                counted.push((cs, true, shard_len(s.len, k)));
            }
        }
    }
    drop(t);
    for (cs, add, bytes) in counted {
        adjust(txn, cs, add, bytes)?;
    }
    Ok(())
}

/// Drops the index rows of every placed shard of `stripes` that `row` owns
/// (`k` as for [`add`]).
pub fn remove(
    txn: &redb::WriteTransaction,
    row: &OwnerRow,
    stripes: &[StripeManifest],
    k: u8,
) -> StoreResult<()> {
    let mut t = txn.open_table(SHARD_OWNERS)?;
    let object = matches!(row, OwnerRow::Object(_));
    let mut counted = Vec::new();
    for s in stripes {
        for l in &s.shards {
            let Some(cs) = l.chunkserver else { continue };
            let key = key(cs, &l.shard);
            let owned = match t.get(key.as_slice())? {
                Some(v) => decode(v.value())?.row == *row,
                None => false,
            };
            if owned {
                t.remove(key.as_slice())?;
                if object {
                    counted.push((cs, false, shard_len(s.len, k)));
                }
            }
        }
    }
    drop(t);
    for (cs, add, bytes) in counted {
        adjust(txn, cs, add, bytes)?;
    }
    Ok(())
}

/// Moves one indexed shard of `bytes` from `from` to `to` (a committed
/// repair or move), keeping its owner.
pub fn relocate(
    txn: &redb::WriteTransaction,
    owner: &Owner,
    shard: &ShardId,
    from: Option<ChunkserverId>,
    to: ChunkserverId,
    bytes: u64,
) -> StoreResult<()> {
    let mut t = txn.open_table(SHARD_OWNERS)?;
    let object = matches!(owner.row, OwnerRow::Object(_));
    let mut counted = Vec::new();
    if let Some(f) = from {
        let k = key(f, shard);
        let owned = match t.get(k.as_slice())? {
            Some(v) => decode(v.value())?.row == owner.row,
            None => false,
        };
        if owned {
            t.remove(k.as_slice())?;
            if object {
                counted.push((f, false));
            }
        }
    }
    let old = t
        .insert(key(to, shard).as_slice(), encode(owner)?.as_slice())?
        .map(|v| decode(v.value()))
        .transpose()?;
    if object && !old.is_some_and(|o| matches!(o.row, OwnerRow::Object(_))) {
        counted.push((to, true));
    }
    drop(t);
    for (cs, add) in counted {
        adjust(txn, cs, add, bytes)?;
    }
    Ok(())
}

fn open_ro(
    txn: &redb::ReadTransaction,
) -> StoreResult<Option<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>> {
    match txn.open_table(SHARD_OWNERS) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The owner of `shard` on `cs`, if a committed row places it there.
pub fn owner(
    txn: &redb::ReadTransaction,
    cs: ChunkserverId,
    shard: &ShardId,
) -> StoreResult<Option<Owner>> {
    let Some(t) = open_ro(txn)? else {
        return Ok(None);
    };
    match t.get(key(cs, shard).as_slice())? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

/// Whether a committed object version or uploaded part places `shard` on
/// `cs`.
pub fn is_named(
    txn: &redb::ReadTransaction,
    cs: ChunkserverId,
    shard: &ShardId,
) -> StoreResult<bool> {
    let Some(t) = open_ro(txn)? else {
        return Ok(false);
    };
    Ok(t.get(key(cs, shard).as_slice())?.is_some())
}

/// The first at most `limit` shards (with their owners) placed on `cs`
/// after shard `after`, in shard id order, and whether they are the last.
pub fn page(
    txn: &redb::ReadTransaction,
    cs: ChunkserverId,
    after: Option<ShardId>,
    limit: usize,
) -> StoreResult<(Vec<(ShardId, Owner)>, bool)> {
    let Some(t) = open_ro(txn)? else {
        return Ok((Vec::new(), true));
    };
    let end = key(cs, &ShardId([0xff; 16]));
    let range = match after {
        Some(a) => {
            let start = key(cs, &a);
            t.range::<&[u8]>((
                std::ops::Bound::Excluded(start.as_slice()),
                std::ops::Bound::Included(end.as_slice()),
            ))?
        }
        None => {
            let start = key(cs, &ShardId([0; 16]));
            t.range::<&[u8]>(start.as_slice()..=end.as_slice())?
        }
    };
    let mut out = Vec::new();
    for r in range {
        let (k, v) = r?;
        if out.len() == limit {
            return Ok((out, false));
        }
        let Some((_, s)) = split_key(k.value()) else {
            return Err(redb::Error::Corrupted(
                "shard owner key of bad length".into(),
            ));
        };
        out.push((s, decode(v.value())?));
    }
    Ok((out, true))
}

/// Whether any committed row places a shard on `cs`.
pub fn places_on(txn: &redb::WriteTransaction, cs: ChunkserverId) -> StoreResult<bool> {
    let t = txn.open_table(SHARD_OWNERS)?;
    let start = key(cs, &ShardId([0; 16]));
    let end = key(cs, &ShardId([0xff; 16]));
    let found = t
        .range::<&[u8]>(start.as_slice()..=end.as_slice())?
        .next()
        .is_some();
    Ok(found)
}

/// Number of index rows (shards placed on chunkservers).
pub fn len(txn: &redb::ReadTransaction) -> StoreResult<u64> {
    use redb::ReadableTableMetadata;
    match open_ro(txn)? {
        Some(t) => Ok(t.len()?),
        None => Ok(0),
    }
}

/// The smallest chunkserver id at or above `from` that the index places a
/// shard on: one seek. Walking the distinct ids this way costs one seek
/// per chunkserver, however many shards each holds (the planner uses it to
/// notice shards on unregistered ids).
pub fn next_chunkserver(
    txn: &redb::ReadTransaction,
    from: ChunkserverId,
) -> StoreResult<Option<ChunkserverId>> {
    let Some(t) = open_ro(txn)? else {
        return Ok(None);
    };
    let start = key(from, &ShardId([0; 16]));
    let first = t.range::<&[u8]>(start.as_slice()..)?.next();
    match first {
        Some(r) => {
            let (k, _) = r?;
            match split_key(k.value()) {
                Some((cs, _)) => Ok(Some(cs)),
                None => Err(redb::Error::Corrupted(
                    "shard owner key of bad length".into(),
                )),
            }
        }
        None => Ok(None),
    }
}
