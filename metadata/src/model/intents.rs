//! Write intents (`intents`, `intent_expiry`, `intent_shards`,
//! `intent_rows`): registration, commits under an intent, expiry.

use super::*;

pub(super) fn intent_expiry_key(expires: u64, intent: &StripeId) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&expires.to_be_bytes());
    k[8..].copy_from_slice(&intent.0);
    k
}

pub(super) fn intent_row_key(intent: &StripeId, cs: ChunkserverId, shard: &ShardId) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..16].copy_from_slice(&intent.0);
    k[16..24].copy_from_slice(&cs.to_be_bytes());
    k[24..].copy_from_slice(&shard.0);
    k
}

/// Applies `Command::RegisterIntent`.
pub(super) fn register_intent(
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
pub(super) fn commit_with_intent(
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
pub(super) fn drop_intent(
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
pub(super) fn expire_intents(
    txn: &redb::WriteTransaction,
    now: u64,
    limit: usize,
) -> StoreResult<()> {
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
