//! The GC queue (`gc`, `gc_due`) and the tombstones of deleted copies
//! (`gc_deleted`, `gc_deleted_order`).

use super::*;

pub(super) fn gc_key(cs: ChunkserverId, shard: &ShardId) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&cs.to_be_bytes());
    k[8..].copy_from_slice(&shard.0);
    k
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

/// Queues shards for deletion at entry time `now`. A shard queued already
/// keeps its first time: it has been unreferenced since then.
pub(super) fn queue_gc(
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

pub(super) fn gc_due_key(cs: ChunkserverId, at: u64, shard: &ShardId) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&cs.to_be_bytes());
    k[8..16].copy_from_slice(&at.to_be_bytes());
    k[16..].copy_from_slice(&shard.0);
    k
}

/// Removes `(cs, shard)` from the GC queue and its time index.
pub(super) fn unqueue_gc(
    txn: &redb::WriteTransaction,
    cs: ChunkserverId,
    shard: &ShardId,
) -> StoreResult<()> {
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

pub(super) fn tombstone_order_key(at: u64, cs: ChunkserverId, shard: &ShardId) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&at.to_be_bytes());
    k[8..16].copy_from_slice(&cs.to_be_bytes());
    k[16..].copy_from_slice(&shard.0);
    k
}

/// Records tombstones for copies `cs` confirmed deleting at `now`, and
/// forgets tombstones older than [`TOMBSTONE_TTL_MS`] (at most a few more
/// than it adds, so the work per command stays bounded).
pub(super) fn record_deleted(
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
pub(super) fn forget_deleted(
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
