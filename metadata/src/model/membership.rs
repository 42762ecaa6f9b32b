//! Chunkserver membership: the `chunkservers` table and removal.

use super::*;

/// Forgets a drained or dead chunkserver that no manifest or upload names:
/// its row, its GC queue and its bad reports. The "names nothing" check is
/// one range of the reverse index.
pub(super) fn remove_chunkserver(
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

/// The `counters` row of the rebalancer's setting: enabled (0 or 1) in the
/// low byte, the threshold in the next.
const REBALANCE_COUNTER: &[u8] = b"rebalance";

/// The rebalancer's replicated setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebalanceSetting {
    /// Whether shards may move.
    pub enabled: bool,
    /// The fullness spread tolerated, in percentage points.
    pub threshold_pct: u8,
}

impl Default for RebalanceSetting {
    fn default() -> Self {
        RebalanceSetting {
            enabled: true,
            threshold_pct: DEFAULT_REBALANCE_THRESHOLD_PCT,
        }
    }
}

/// Applies `Command::SetRebalance`.
pub(super) fn set_rebalance(
    txn: &redb::WriteTransaction,
    enabled: bool,
    threshold_pct: u8,
) -> StoreResult<Result<CommandResult, MetaError>> {
    if !(1..=50).contains(&threshold_pct) {
        return Ok(Err(MetaError::Invalid(format!(
            "rebalance threshold {threshold_pct} is not within 1..=50 percentage points"
        ))));
    }
    let v = u64::from(enabled) | (u64::from(threshold_pct) << 8);
    txn.open_table(COUNTERS)?
        .insert(REBALANCE_COUNTER, v.to_be_bytes().as_slice())?;
    Ok(Ok(CommandResult::Ok))
}

/// The rebalancer's setting (the default when none was set).
pub fn rebalance_setting(txn: &redb::ReadTransaction) -> StoreResult<RebalanceSetting> {
    let Some(t) = open_ro(txn, COUNTERS)? else {
        return Ok(RebalanceSetting::default());
    };
    Ok(match t.get(REBALANCE_COUNTER)? {
        Some(v) => {
            let v = u64_from(v.value());
            RebalanceSetting {
                enabled: v & 1 == 1,
                threshold_pct: ((v >> 8) & 0xff) as u8,
            }
        }
        None => RebalanceSetting::default(),
    })
}
