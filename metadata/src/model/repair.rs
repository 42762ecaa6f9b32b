//! The repair queue and bad-shard reports: `CommitRepair`, queueing
//! unplaced shards, stale reports.

use super::*;

/// Applies `Command::CommitRepair` (see its documentation). Every
/// outcome is decided from the tables alone, so replicas agree.
#[allow(clippy::too_many_arguments)]
pub(super) fn commit_repair(
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
    let ok = object_key(bucket, key);
    // The version the repair is about, current or not: every version's
    // shards are repaired alike.
    let live = load_version_head(txn, &ok, &version)?;
    let item_key = repair_key(&RepairItem {
        bucket: String::new(),
        key: String::new(),
        version,
        stripe,
        index,
        chunkserver: None,
        reason: String::new(),
    });
    let Some(head) = live else {
        txn.open_table(REPAIR)?.remove(item_key.as_slice())?;
        queue_gc(txn, now, std::iter::once((to, *shard)))?;
        return Ok(Err(MetaError::Stale(format!("{bucket}/{key} is gone"))));
    };
    let m = &head.manifest;
    // Only the one stripe row the repair is about is read and rewritten:
    // a repair costs the same in a 5 TiB object as in a 4 MiB one.
    let mut row = if m.version == version {
        get_stripe(&txn.open_table(OBJECT_STRIPES)?, &ok, &version, stripe)?
    } else {
        None
    };
    let matches = row
        .as_ref()
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
        queue_gc(txn, now, std::iter::once((to, *shard)))?;
        return Ok(Err(MetaError::Stale(format!(
            "{bucket}/{key} stripe {stripe} shard {index}: chunkserver {to} deleted its copy"
        ))));
    }
    if !matches {
        // The rebuilt copy is garbage unless the live manifest already
        // places exactly this shard on `to` (a duplicate report of a
        // committed repair).
        let placed = placed_by(txn, &ok, &m.version, to, shard)?;
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
    let old_locs: Vec<Option<ChunkserverId>> = row
        .as_ref()
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
    let mut bytes = 0;
    if let Some(s) = row.as_mut() {
        if let Some(l) = s.shards.get_mut(usize::from(index)) {
            l.chunkserver = Some(to);
        }
        store_stripe(txn, &ok, &version, stripe, s)?;
        bytes = shard_index::shard_len(s.len, m.ec.k);
    }
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
        bytes,
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

/// Whether the live version `version` of `object` places `shard` on `cs`:
/// one lookup in the reverse index, which `apply` keeps in step with the
/// stripe rows.
fn placed_by(
    txn: &redb::WriteTransaction,
    object: &[u8],
    version: &StripeId,
    cs: ChunkserverId,
    shard: &ShardId,
) -> StoreResult<bool> {
    let t = txn.open_table(shard_index::SHARD_OWNERS)?;
    let Some(v) = t.get(shard_index::key(cs, shard).as_slice())? else {
        return Ok(false);
    };
    let o = shard_index::decode(v.value())?;
    Ok(o.version == *version && o.row == OwnerRow::Object(object.to_vec()))
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
pub(super) fn item_shard(
    objects: &impl ReadableTable<&'static [u8], &'static [u8]>,
    stripes: &impl ReadableTable<&'static [u8], &'static [u8]>,
    item: &RepairItem,
    cs: ChunkserverId,
) -> StoreResult<Option<ShardId>> {
    if item.chunkserver != Some(cs) {
        return Ok(None);
    }
    let ok = object_key(&item.bucket, &item.key);
    let Some(head) = get_head(objects, &ok)? else {
        return Ok(None);
    };
    if head.manifest.version != item.version {
        return Ok(None);
    }
    Ok(get_stripe(stripes, &ok, &item.version, item.stripe)?
        .and_then(|s| s.shards.into_iter().nth(usize::from(item.index)))
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
    if let (Some(q), Some(objects), Some(stripes)) = (
        open_ro(txn, REPAIR)?,
        open_ro(txn, OBJECTS)?,
        open_ro(txn, OBJECT_STRIPES)?,
    ) {
        let seen: HashSet<ShardId> = listed.iter().copied().collect();
        for r in q.iter()? {
            let (_, v) = r?;
            let item: RepairItem = dec(v.value())?;
            if let Some(s) = item_shard(&objects, &stripes, &item, cs)?.filter(|s| seen.contains(s))
            {
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
pub(super) fn clear_seen_repairs(
    txn: &redb::WriteTransaction,
    cs: ChunkserverId,
    shards: &[ShardId],
) -> StoreResult<()> {
    let seen: HashSet<ShardId> = shards.iter().copied().collect();
    let objects = txn.open_table(OBJECTS)?;
    let stripes = txn.open_table(OBJECT_STRIPES)?;
    let mut q = txn.open_table(REPAIR)?;
    let mut stale = Vec::new();
    for r in q.iter()? {
        let (k, v) = r?;
        let item: RepairItem = dec(v.value())?;
        if item_shard(&objects, &stripes, &item, cs)?.is_some_and(|s| seen.contains(&s)) {
            stale.push(k.value().to_vec());
        }
    }
    for k in stale {
        q.remove(k.as_slice())?;
    }
    Ok(())
}

/// Forgets the repair-queue items of an object version that is no longer
/// live (overwritten or deleted): they could never be planned again.
pub(super) fn drop_repairs(txn: &redb::WriteTransaction, version: &StripeId) -> StoreResult<()> {
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
pub(super) fn queue_unplaced(
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

pub(super) fn repair_key(item: &RepairItem) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[..16].copy_from_slice(&item.version.0);
    k[16..24].copy_from_slice(&item.stripe.to_be_bytes());
    k[24] = item.index;
    k
}
