//! The rebalancer: moves shards from the fullest `Up` chunkserver to
//! emptier ones while their fullness differs by more than a threshold (a
//! chunkserver just added starts empty).
//!
//! # Fullness
//! A chunkserver's fullness is `placed / (placed + free)`: `placed` is the
//! shard bytes committed object versions place on it (the counters
//! `apply` keeps beside the reverse index, [`crate::shard_index::PLACED`]:
//! one row per chunkserver, exact the moment a move commits), `free` what
//! its last heartbeat reported. Heartbeat `used` would not do: a moved
//! shard's old copy stays on the source until the GC delay has passed, so
//! the source would look full for minutes and keep giving shards away.
//! Moves in flight count as done (the source loses, the target gains
//! their bytes), so a round never plans past the balance point.
//!
//! # When
//! Only while nothing needs repair: a round that found damaged stripes,
//! dispatched a repair or has one in flight plans no move (redundancy
//! first). The setting (`Command::SetRebalance`: enabled, threshold in
//! percentage points; on, 10 points, by default) is replicated, so every
//! leader follows the operator's last word.
//!
//! # What moves
//! Pages of the fullest not yet exhausted chunkserver's shards (any one
//! fuller than the emptiest may give; its range of the reverse
//! index, resumed where the last round stopped), at most
//! [`MAX_IN_FLIGHT`] moves in flight. A source read to its end without a
//! valid move (the invariant can pin its shards: a server added to a zone
//! can only take shards that zone already holds) is skipped for the next
//! fullest; when every source is exhausted the rebalancer reports `no
//! valid move` and does not page again until the fullness picture (ids,
//! whole percents) changes. A shard moves only when its whole
//! stripe is healthy (every shard on an `Up` chunkserver, no bad report,
//! no repair item, no task in flight), to the emptiest `Up` chunkserver
//! that (a) holds no other shard of the stripe, (b) keeps the stripe's
//! zone within the zone cap, (c) has room, (d) is below its task limit,
//! (e) has no copy of the shard waiting for GC, and (f) stays emptier than
//! the source after the move (no ping-pong). A move is a repair task whose
//! first source is the shard's own copy (the target copies it, no decode)
//! and commits like one: `CommitRepair` moves the placement only if the
//! manifest still names that shard on the source, and re-checks the
//! placement invariant; the old copy goes to GC.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::scan::{self, Env};
use super::{PlannerConfig, State};
use crate::model;
use crate::shard_index::{self, OwnerRow};
use crate::types::*;

/// Moves in flight at once, over all chunkservers (a throttle: moving
/// data is never urgent).
pub(super) const MAX_IN_FLIGHT: usize = 8;
/// Index rows of the source read per round.
const PAGE: usize = 512;

/// Where the rebalancer stands (leader memory, reset with the term).
#[derive(Debug, Clone, Default)]
pub(super) struct Rebalance {
    /// The source being paged and the last shard read from it.
    cursor: Option<(ChunkserverId, Option<ShardId>)>,
    /// Sources read to their end without a valid move since the last move
    /// (the placement invariant can pin a full server's shards: then the
    /// next fullest gives instead).
    exhausted: std::collections::BTreeSet<ChunkserverId>,
    /// The fullness picture (ids and whole percents) at which every
    /// source was exhausted: not swept again until it changes, so a
    /// cluster the invariant keeps unbalanced is not paged round after
    /// round.
    stuck_at: Option<Vec<(ChunkserverId, u64)>>,
    /// Moves committed this term, and their bytes.
    pub(super) moved: u64,
    pub(super) moved_bytes: u64,
    /// The last round's view.
    pub(super) status: RebalanceStatus,
}

fn fullness(placed: u64, free: u64) -> f64 {
    let total = placed.saturating_add(free);
    if total == 0 {
        0.0
    } else {
        placed as f64 * 100.0 / total as f64
    }
}

/// One round: publishes the status and dispatches moves when the spread
/// is over the threshold and `repairs_pending` is false. Returns whether
/// it wants another round soon (moves left to plan or in flight).
pub(super) fn plan(
    txn: &redb::ReadTransaction,
    env: &Env,
    cfg: PlannerConfig,
    s: &mut State,
    repairs_pending: bool,
    now: Instant,
) -> Result<bool, redb::Error> {
    let setting = model::rebalance_setting(txn)?;
    let placed = shard_index::placed(txn)?;
    // (placed, free) of every Up chunkserver, moves in flight counted done.
    let mut fill: BTreeMap<ChunkserverId, (u64, u64)> = env
        .servers
        .values()
        .filter(|c| c.state == ChunkserverState::Up)
        .map(|c| (c.id, (placed.get(&c.id).map_or(0, |p| p.bytes), c.free)))
        .collect();
    let mut in_flight = 0usize;
    for f in s.in_flight.values().filter(|f| f.rebalance) {
        in_flight += 1;
        let len = f.task.shard_len;
        if let Some(src) = f.task.from.and_then(|c| fill.get_mut(&c)) {
            src.0 = src.0.saturating_sub(len);
        }
        if let Some(t) = fill.get_mut(&f.target) {
            t.0 = t.0.saturating_add(len);
            t.1 = t.1.saturating_sub(len);
        }
    }
    let spread = |fill: &BTreeMap<ChunkserverId, (u64, u64)>| {
        let f: Vec<f64> = fill.values().map(|(p, fr)| fullness(*p, *fr)).collect();
        let max = f.iter().copied().fold(f64::MIN, f64::max);
        let min = f.iter().copied().fold(f64::MAX, f64::min);
        if f.len() < 2 {
            0.0
        } else {
            max - min
        }
    };
    let threshold = f64::from(setting.threshold_pct);
    let publish = |s: &mut State, fill: &BTreeMap<ChunkserverId, (u64, u64)>, state: &str| {
        let r = &mut s.rebalance;
        r.status = RebalanceStatus {
            enabled: setting.enabled,
            threshold_pct: setting.threshold_pct,
            spread_pct: spread(fill),
            state: state.to_string(),
            in_flight: s.in_flight.values().filter(|f| f.rebalance).count() as u64,
            moved: r.moved,
            moved_bytes: r.moved_bytes,
            fullness_pct: fill
                .iter()
                .map(|(id, (p, f))| (*id, fullness(*p, *f)))
                .collect(),
        };
    };
    if !setting.enabled {
        publish(s, &fill, "paused");
        return Ok(false);
    }
    if spread(&fill) <= threshold {
        let state = if in_flight > 0 { "moving" } else { "balanced" };
        publish(s, &fill, state);
        return Ok(in_flight > 0);
    }
    if repairs_pending {
        publish(s, &fill, "waiting for repairs");
        return Ok(false);
    }
    let mut budget = MAX_IN_FLIGHT.saturating_sub(in_flight);
    if budget == 0 {
        publish(s, &fill, "moving");
        return Ok(true);
    }
    let picture: Vec<(ChunkserverId, u64)> = fill
        .iter()
        .map(|(id, (p, f))| (*id, fullness(*p, *f) as u64))
        .collect();
    if s.rebalance.stuck_at.as_ref() == Some(&picture) {
        publish(s, &fill, "no valid move");
        return Ok(in_flight > 0);
    }
    s.rebalance.stuck_at = None;
    // The fullest chunkserver not yet exhausted is the source: any that
    // is fuller than the emptiest (the invariant may pin the fullest
    // ones; a less full one may still give, and every move must leave the
    // target emptier than the source, so moves always narrow the gap).
    let min = fill
        .values()
        .map(|(p, f)| fullness(*p, *f))
        .fold(f64::MAX, f64::min);
    let mut by_fullness: Vec<(f64, ChunkserverId)> = fill
        .iter()
        .map(|(id, (p, f))| (fullness(*p, *f), *id))
        .filter(|(f, id)| *f > min && !s.rebalance.exhausted.contains(id))
        .collect();
    by_fullness.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let Some(&(_, source)) = by_fullness.first() else {
        // Every source swept without a valid move: wait for the picture
        // to change (a chunkserver added, data written or deleted).
        s.rebalance.exhausted.clear();
        s.rebalance.stuck_at = Some(picture);
        publish(s, &fill, "no valid move");
        return Ok(in_flight > 0);
    };
    let after = match s.rebalance.cursor {
        Some((cs, after)) if cs == source => after,
        _ => None,
    };
    let (page, done) = shard_index::page(txn, source, after, PAGE)?;
    let heads = match (
        scan::open_ro(txn, model::OBJECTS)?,
        scan::open_ro(txn, model::OBJECT_STRIPES)?,
    ) {
        (Some(o), Some(st)) => Some((o, st)),
        _ => None,
    };
    let versions_t = scan::open_ro(txn, model::OBJECT_VERSIONS)?;
    let ids_t = scan::open_ro(txn, model::VERSION_IDS)?;
    let bad_t = scan::open_ro(txn, model::BAD)?;
    let items_t = scan::open_ro(txn, model::REPAIR)?;
    let mut load: HashMap<ChunkserverId, usize> = HashMap::new();
    for f in s.in_flight.values() {
        *load.entry(f.target).or_insert(0) += 1;
    }
    let mut last = after;
    let mut planned = 0u64;
    let mut stopped = false;
    for (shard, owner) in page {
        if budget == 0 || spread(&fill) <= threshold {
            stopped = true;
            break;
        }
        last = Some(shard);
        let OwnerRow::Object(row) = &owner.row else {
            continue;
        };
        let Some((objects, stripes)) = &heads else {
            break;
        };
        // Any version of the key, current or not, moves alike.
        let Some(head) = model::find_version_head(
            objects,
            versions_t.as_ref(),
            ids_t.as_ref(),
            row,
            &owner.version,
        )?
        else {
            continue;
        };
        let m = &head.manifest;
        if m.version != owner.version {
            continue;
        }
        let Some(st) = model::get_stripe(stripes, row, &m.version, owner.stripe)? else {
            continue;
        };
        let index = usize::from(owner.index);
        let total = m.ec.total();
        if st.shards.get(index).map(|l| (l.chunkserver, l.shard)) != Some((Some(source), shard))
            || st.shards.len() != total
        {
            continue;
        }
        // No task on the stripe, and every shard healthy.
        if (0..total).any(|i| s.busy.contains_key(&(m.version, owner.stripe, i as u8))) {
            continue;
        }
        let mut healthy = true;
        for (i, l) in st.shards.iter().enumerate() {
            let up = l
                .chunkserver
                .and_then(|c| env.servers.get(&c))
                .is_some_and(|c| c.state == ChunkserverState::Up);
            let bad = match (&bad_t, l.chunkserver) {
                (Some(t), Some(c)) => t.get(shard_index::key(c, &l.shard).as_slice())?.is_some(),
                _ => false,
            };
            let item = match &items_t {
                Some(t) => t
                    .get(scan::item_key(&m.version, owner.stripe, i as u8).as_slice())?
                    .is_some(),
                None => false,
            };
            if !up || bad || item {
                healthy = false;
                break;
            }
        }
        if !healthy {
            continue;
        }
        let len = shard_index::shard_len(st.len, m.ec.k);
        let (sp, sf) = fill.get(&source).copied().unwrap_or((0, 0));
        let source_after = fullness(sp.saturating_sub(len), sf);
        let locs: Vec<Option<ChunkserverId>> = st.shards.iter().map(|l| l.chunkserver).collect();
        let cap = env.rules.cap(m.ec);
        let in_zone = |locs: &[Option<ChunkserverId>], z: Option<&str>| {
            locs.iter()
                .filter(|c| {
                    c.and_then(|c| env.rules.zone(c))
                        .is_some_and(|cz| Some(cz) == z)
                })
                .count()
        };
        let mut options: Vec<(f64, ChunkserverId)> = fill
            .iter()
            .filter(|(id, _)| **id != source)
            .filter(|(_, (_, f))| *f >= len)
            .map(|(id, (p, f))| (fullness(p.saturating_add(len), f.saturating_sub(len)), *id))
            .filter(|(after, _)| *after < source_after)
            .filter(|(_, id)| load.get(id).copied().unwrap_or(0) < cfg.per_chunkserver)
            .filter(|(_, id)| {
                let stacked = locs.contains(&Some(*id));
                let mut after = locs.clone();
                if let Some(l) = after.get_mut(index) {
                    *l = Some(*id);
                }
                let z = env.rules.zone(*id);
                let n = in_zone(&after, z);
                !stacked && (z.is_none() || n <= cap || n <= in_zone(&locs, z))
            })
            .collect();
        options.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut target = None;
        for (_, id) in options {
            if !model::gc_contains(txn, id, &shard)? {
                target = Some(id);
                break;
            }
        }
        let Some(target) = target else {
            continue;
        };
        // The shard's own copy first: the target copies it, no decode.
        let mut sources: Vec<RepairSource> = Vec::with_capacity(total);
        let mut add_source = |i: usize, l: &ShardLoc| {
            if let Some(info) = l.chunkserver.and_then(|c| env.servers.get(&c)) {
                sources.push(RepairSource {
                    index: i as u8,
                    shard: l.shard,
                    addr: info.addr.clone(),
                    blake3: l.blake3,
                });
            }
        };
        add_source(index, &st.shards[index]);
        for (i, l) in st.shards.iter().enumerate() {
            if i != index {
                add_source(i, l);
            }
        }
        let Some((bucket, key)) = std::str::from_utf8(row)
            .ok()
            .and_then(|r| r.split_once('\0'))
        else {
            continue;
        };
        let task = RepairTask {
            task: s.next_task_id(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            version: m.version,
            stripe: owner.stripe,
            stripe_id: st.id,
            ec: m.ec,
            shard_len: len,
            index: owner.index,
            shard,
            blake3: st.shards[index].blake3,
            from: Some(source),
            sources,
            redundancy: i32::from(m.ec.m),
        };
        s.track(task, target, true, cfg.task_timeout, now);
        *load.entry(target).or_insert(0) += 1;
        if let Some(src) = fill.get_mut(&source) {
            src.0 = src.0.saturating_sub(len);
        }
        if let Some(t) = fill.get_mut(&target) {
            t.0 = t.0.saturating_add(len);
            t.1 = t.1.saturating_sub(len);
        }
        budget -= 1;
        planned += 1;
    }
    // Read to the end of the source: start over next time; without a
    // move, the next fullest source is tried next.
    let wrapped = done && !stopped;
    s.rebalance.cursor = if wrapped { None } else { Some((source, last)) };
    if planned > 0 {
        s.rebalance.exhausted.clear();
    } else if wrapped {
        s.rebalance.exhausted.insert(source);
    }
    let state = if planned > 0 || in_flight > 0 {
        "moving"
    } else {
        "no valid move"
    };
    publish(s, &fill, state);
    if planned > 0 {
        tracing::info!(
            from = source,
            moves = planned,
            "rebalance: moving shards off the fullest chunkserver"
        );
    }
    Ok(true)
}
