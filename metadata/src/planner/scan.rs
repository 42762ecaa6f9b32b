//! Damage discovery: which stripes need work, found from the damage alone.
//!
//! # Sources
//! A round reads at most a page of rows ([`PAGE`]) from three sources, in
//! this order, resuming where the previous round stopped:
//! 1. the shards placed on *damaged chunkservers*: `Down`, `Draining`, and
//!    ids the reverse index names that are not registered (one key range
//!    of [`crate::shard_index`] per chunkserver, ids ascending, shard ids
//!    in order within one);
//! 2. the `bad` table (scrub, read verification, named-but-absent);
//! 3. the repair queue (unplaced shards queued at commit, client reports).
//!
//! Each row names a shard; its owner (from the reverse index, or the repair
//! item itself) gives the object row, version, stripe and index, so the
//! head and the stripe row are two point reads and the stripe is
//! evaluated whole (every
//! shard's health: its chunkserver's state, a point lookup in `bad` and in
//! the repair queue). Nothing else is read: a round with nothing damaged
//! reads the chunkservers table, one seek per distinct chunkserver id of
//! the index (to notice unregistered ones) and two empty ranges.
//!
//! # Cycles and the redundancy histogram
//! When every source has been read to its end, a *cycle* is complete and
//! the cursors start over at the next round; a cycle costs O(damage). The
//! histogram `ClusterStatus::redundancy` is published once per complete
//! cycle: every live stripe counts at its bucket's full redundancy `m`
//! (from the per-bucket counters `apply` keeps, [`crate::stats`]: one row
//! per bucket), except the damaged stripes the cycle found, which count at
//! their evaluated redundancy. A stripe reached from several sources (two
//! lost shards, a bad copy on a down server) is counted once: only by its
//! *canonical* source, the lowest shard index that one of the sources
//! names (a damaged chunkserver first, then a bad row, then a repair
//! item). `last_plan_ms` is the wall time the published cycle started.
//!
//! What this does not find: stripes that break the placement invariant
//! with no damage (e.g. after a zone is added the zone cap shrinks);
//! they are moved when damage brings their stripe into a round, and `cairn
//! admin audit-placement` lists them. They count at `m` in the histogram.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use redb::TableDefinition;

use super::{must_move, redundancy, ShardKey, StripeKey, MAX_CANDIDATES};
use crate::model;
use crate::shard_index::{self, OwnerRow};
use crate::types::*;

/// Rows (index rows, bad rows, repair items) read per round over all
/// sources: bounds a round's work and memory (each row costs at most one
/// manifest read and k+m point lookups) whatever the size of a failure;
/// 4,096 rows of a lost chunkserver per second rebuild plans faster than
/// any executor pool can rebuild them.
pub(super) const PAGE: usize = 4096;

/// Where a discovery cycle stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum Pos {
    /// Paging the shards of damaged chunkserver `cs` (or the next damaged
    /// one at or above it) after shard `after`.
    Servers {
        /// The chunkserver.
        cs: ChunkserverId,
        /// The last shard read from it.
        after: Option<ShardId>,
    },
    /// Reading the `bad` table after this key.
    Bad(Option<Vec<u8>>),
    /// Reading the repair queue after this key.
    Items(Option<Vec<u8>>),
    /// Nothing read yet this cycle.
    #[default]
    Start,
}

/// A discovery cycle in progress (leader memory, reset with the term).
#[derive(Debug, Clone, Default)]
pub(super) struct Cycle {
    /// Wall time (ms) the cycle's first round started.
    pub(super) started_ms: Option<u64>,
    pub(super) pos: Pos,
    /// Damaged stripes counted this cycle, by remaining redundancy.
    pub(super) counted: BTreeMap<i32, u64>,
    /// The same stripes by their full redundancy (m): taken off the full
    /// count derived from the bucket counters.
    pub(super) displaced: BTreeMap<i32, u64>,
    /// Shards to rebuild or move found this cycle, less those dispatched.
    pub(super) waiting: u64,
    /// Stripes below k healthy shards found this cycle.
    pub(super) unrecoverable: u64,
    /// A stripe with shards still on a draining chunkserver was found.
    pub(super) draining_left: bool,
    /// A recoverable damaged stripe was found.
    pub(super) degraded: bool,
}

/// Rows a round read, by kind (for tests and the worker's status).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reads {
    /// Reverse-index rows of damaged chunkservers.
    pub index_rows: u64,
    /// Seeks of the reverse index for unregistered chunkserver ids.
    pub probes: u64,
    /// `bad` rows.
    pub bad_rows: u64,
    /// Repair-queue items.
    pub items: u64,
    /// Manifests read (one point read each).
    pub manifests: u64,
}

/// Which source found a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    Server,
    Bad,
    Item,
}

/// One shard a source named.
struct Found {
    kind: Kind,
    version: StripeId,
    stripe: u64,
    index: u8,
}

/// One shard to rebuild or move, with what choosing a target needs.
pub(super) struct Candidate {
    /// 0 = rebuild a lost shard (or fix the invariant), 1 = move off a
    /// draining chunkserver.
    pub(super) class: u8,
    pub(super) redundancy: i32,
    pub(super) order: u64,
    pub(super) ctx: Arc<StripeCtx>,
    pub(super) index: u8,
}

impl Candidate {
    fn rank(&self) -> (u8, i32, u64) {
        (self.class, self.redundancy, self.order)
    }
}

impl PartialEq for Candidate {
    fn eq(&self, o: &Self) -> bool {
        self.rank() == o.rank()
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Candidate {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&o.rank())
    }
}

/// A stripe as evaluated this round.
pub(super) struct StripeCtx {
    pub(super) bucket: String,
    pub(super) key: String,
    pub(super) version: StripeId,
    pub(super) stripe: u64,
    pub(super) ec: EcParams,
    pub(super) manifest: StripeManifest,
    /// Per shard index: healthy (not lost).
    pub(super) healthy: Vec<bool>,
}

/// What a round knows about the cluster.
pub(super) struct Env {
    pub(super) servers: HashMap<ChunkserverId, ChunkserverInfo>,
    pub(super) rules: model::PlacementRules,
    /// Down, Draining, and unregistered ids the index names.
    pub(super) damaged: BTreeSet<ChunkserverId>,
    wall: u64,
    silent_ms: u64,
}

impl Env {
    /// Reads the chunkservers and finds the damaged ones.
    pub(super) fn new(
        txn: &redb::ReadTransaction,
        wall: u64,
        silent_ms: u64,
        reads: &mut Reads,
    ) -> Result<Env, redb::Error> {
        let servers: HashMap<ChunkserverId, ChunkserverInfo> = model::chunkservers(txn)?
            .into_iter()
            .map(|c| (c.id, c))
            .collect();
        let rules = model::PlacementRules::new(&servers.values().cloned().collect::<Vec<_>>());
        let mut damaged: BTreeSet<ChunkserverId> = servers
            .values()
            .filter(|c| matches!(c.state, ChunkserverState::Down | ChunkserverState::Draining))
            .map(|c| c.id)
            .collect();
        // Unregistered ids: one seek per distinct id in the index.
        let mut from = Some(0u64);
        while let Some(f) = from {
            reads.probes += 1;
            let Some(id) = shard_index::next_chunkserver(txn, f)? else {
                break;
            };
            if !servers.contains_key(&id) {
                damaged.insert(id);
            }
            from = id.checked_add(1);
        }
        Ok(Env {
            servers,
            rules,
            damaged,
            wall,
            silent_ms,
        })
    }

    /// Whether shards on `c` are lost: unknown, Down, or Draining and
    /// silent past the down timeout.
    pub(super) fn lost(&self, c: ChunkserverId) -> bool {
        match self.servers.get(&c) {
            None => true,
            Some(i) => match i.state {
                ChunkserverState::Down => true,
                ChunkserverState::Draining => {
                    self.wall.saturating_sub(i.last_heartbeat_ms) > self.silent_ms
                }
                _ => false,
            },
        }
    }

    fn draining(&self, c: ChunkserverId) -> bool {
        self.servers
            .get(&c)
            .is_some_and(|i| i.state == ChunkserverState::Draining)
    }
}

pub(super) type Ro = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

pub(super) fn open_ro(
    txn: &redb::ReadTransaction,
    def: TableDefinition<'static, &'static [u8], &'static [u8]>,
) -> Result<Option<Ro>, redb::Error> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The repair-queue key of a shard: version ++ stripe (BE) ++ index, the
/// layout `model` writes (checked by the planner's tests).
pub(super) fn item_key(version: &StripeId, stripe: u64, index: u8) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[..16].copy_from_slice(&version.0);
    k[16..24].copy_from_slice(&stripe.to_be_bytes());
    k[24] = index;
    k
}

/// A page of raw (key, value) rows.
type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// Reads rows from `t` after `after`, at most `limit`, and whether the
/// table ended.
fn rows_after(t: &Ro, after: Option<&[u8]>, limit: usize) -> Result<(Rows, bool), redb::Error> {
    let range = match after {
        Some(a) => t.range::<&[u8]>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))?,
        None => t.range::<&[u8]>(..)?,
    };
    let mut out = Vec::new();
    for r in range {
        if out.len() == limit {
            return Ok((out, false));
        }
        let (k, v) = r?;
        out.push((k.value().to_vec(), v.value().to_vec()));
    }
    Ok((out, true))
}

/// What discovery hands to dispatch.
pub(super) struct Discovered {
    /// Candidates, most urgent first.
    pub(super) cands: Vec<Candidate>,
    /// Bad rows no committed row places any more: to clear.
    pub(super) clear_bad: BTreeMap<ChunkserverId, Vec<ShardId>>,
    /// The cycle ended with this round.
    pub(super) complete: bool,
}

/// Reads up to `budget` rows of the damage sources from `cycle`'s
/// position and evaluates every stripe they name. `busy` shards (a task in
/// flight) and `backoff` stripes are evaluated and counted but not made
/// candidates.
pub(super) fn discover(
    txn: &redb::ReadTransaction,
    env: &Env,
    cycle: &mut Cycle,
    budget: usize,
    busy: &HashSet<ShardKey>,
    backoff: &HashSet<StripeKey>,
    reads: &mut Reads,
) -> Result<Discovered, redb::Error> {
    let bad_t = open_ro(txn, model::BAD)?;
    let items_t = open_ro(txn, model::REPAIR)?;
    // Shards found, grouped by object row so each manifest is read once.
    // By object row and version: every version of a key is repaired alike.
    let mut by_row: BTreeMap<(Vec<u8>, StripeId), Vec<Found>> = BTreeMap::new();
    let mut clear_bad: BTreeMap<ChunkserverId, Vec<ShardId>> = BTreeMap::new();
    let mut left = budget;
    let complete = loop {
        if left == 0 {
            break false;
        }
        match cycle.pos.clone() {
            Pos::Start => {
                cycle.pos = Pos::Servers { cs: 0, after: None };
            }
            Pos::Servers { cs, after } => {
                let Some(&c) = env.damaged.range(cs..).next() else {
                    cycle.pos = Pos::Bad(None);
                    continue;
                };
                let after = if c == cs { after } else { None };
                let (page, done) = shard_index::page(txn, c, after, left)?;
                reads.index_rows += page.len() as u64;
                left = left.saturating_sub(page.len());
                let last = page.last().map(|(s, _)| *s);
                for (_, owner) in page {
                    if let OwnerRow::Object(row) = owner.row {
                        by_row.entry((row, owner.version)).or_default().push(Found {
                            kind: Kind::Server,
                            version: owner.version,
                            stripe: owner.stripe,
                            index: owner.index,
                        });
                    }
                }
                cycle.pos = match (done, c.checked_add(1)) {
                    (false, _) => Pos::Servers { cs: c, after: last },
                    (true, Some(next)) => Pos::Servers {
                        cs: next,
                        after: None,
                    },
                    (true, None) => Pos::Bad(None),
                };
            }
            Pos::Bad(after) => {
                let Some(t) = &bad_t else {
                    cycle.pos = Pos::Items(None);
                    continue;
                };
                let (rows, done) = rows_after(t, after.as_deref(), left)?;
                reads.bad_rows += rows.len() as u64;
                left = left.saturating_sub(rows.len());
                let last = rows.last().map(|(k, _)| k.clone());
                for (k, _) in rows {
                    let (Some(c), Some(shard)) = (
                        k.get(..8)
                            .and_then(|b| <[u8; 8]>::try_from(b).ok())
                            .map(u64::from_be_bytes),
                        k.get(8..)
                            .and_then(|b| <[u8; 16]>::try_from(b).ok())
                            .map(ShardId),
                    ) else {
                        continue;
                    };
                    match shard_index::owner(txn, c, &shard)? {
                        None => clear_bad.entry(c).or_default().push(shard),
                        // Parts of uploads in progress are not repaired;
                        // their reports wait for the completion.
                        Some(o) => {
                            if let OwnerRow::Object(row) = o.row {
                                by_row.entry((row, o.version)).or_default().push(Found {
                                    kind: Kind::Bad,
                                    version: o.version,
                                    stripe: o.stripe,
                                    index: o.index,
                                });
                            }
                        }
                    }
                }
                cycle.pos = if done {
                    Pos::Items(None)
                } else {
                    Pos::Bad(last.or(after))
                };
            }
            Pos::Items(after) => {
                let Some(t) = &items_t else {
                    break true;
                };
                let (rows, done) = rows_after(t, after.as_deref(), left)?;
                reads.items += rows.len() as u64;
                left = left.saturating_sub(rows.len());
                let last = rows.last().map(|(k, _)| k.clone());
                for (_, v) in rows {
                    // Repair items are JSON rows (`model`'s encoding).
                    let item: RepairItem = serde_json::from_slice(&v)
                        .map_err(|e| redb::Error::Corrupted(format!("repair item: {e}")))?;
                    by_row
                        .entry((model::object_key(&item.bucket, &item.key), item.version))
                        .or_default()
                        .push(Found {
                            kind: Kind::Item,
                            version: item.version,
                            stripe: item.stripe,
                            index: item.index,
                        });
                }
                if done {
                    break true;
                }
                cycle.pos = Pos::Items(last.or(after));
            }
        }
    };

    let mut heap: BinaryHeap<Candidate> = BinaryHeap::new();
    let mut order = 0u64;
    let mut seen: HashSet<StripeKey> = HashSet::new();
    let heads = open_ro(txn, model::OBJECTS)?;
    let stripes_t = open_ro(txn, model::OBJECT_STRIPES)?;
    let versions_t = open_ro(txn, model::OBJECT_VERSIONS)?;
    let ids_t = open_ro(txn, model::VERSION_IDS)?;
    for ((row, version), found) in by_row {
        let Some((bucket, key)) = std::str::from_utf8(&row)
            .ok()
            .and_then(|r| r.split_once('\0'))
        else {
            continue;
        };
        reads.manifests += 1;
        // The head, then only the stripe rows found: a round costs the
        // same in a 5 TiB object as in a small one.
        let (Some(heads), Some(stripes_t)) = (&heads, &stripes_t) else {
            continue;
        };
        let Some(head) =
            model::find_version_head(heads, versions_t.as_ref(), ids_t.as_ref(), &row, &version)?
        else {
            continue;
        };
        let m = &head.manifest;
        let mut evals: HashMap<u64, Option<Eval>> = HashMap::new();
        for f in found {
            if f.version != m.version {
                continue;
            }
            if let std::collections::hash_map::Entry::Vacant(v) = evals.entry(f.stripe) {
                let e = match model::get_stripe(stripes_t, &row, &m.version, f.stripe)? {
                    Some(st) => evaluate(env, &bad_t, &items_t, bucket, key, m, &st, f.stripe)?,
                    None => None,
                };
                v.insert(e);
            }
            let Some(Some(e)) = evals.get(&f.stripe) else {
                continue;
            };
            let skey: StripeKey = (m.version, f.stripe);
            let open = |idx: usize| !busy.contains(&(m.version, f.stripe, idx as u8));
            if e.canon == Some((f.index, f.kind)) {
                *cycle.counted.entry(e.red).or_insert(0) += 1;
                *cycle.displaced.entry(i32::from(m.ec.m)).or_insert(0) += 1;
                cycle.draining_left |= e.draining;
                if e.unrecoverable {
                    cycle.unrecoverable += 1;
                } else {
                    cycle.waiting += e.wanted.iter().filter(|(_, i)| open(*i)).count() as u64;
                }
            }
            if e.unrecoverable || e.wanted.is_empty() {
                continue;
            }
            cycle.degraded = true;
            if backoff.contains(&skey) || !seen.insert(skey) {
                continue;
            }
            for &(class, idx) in e.wanted.iter().filter(|(_, i)| open(*i)) {
                order += 1;
                heap.push(Candidate {
                    class,
                    redundancy: e.red,
                    order,
                    ctx: e.ctx.clone(),
                    index: idx as u8,
                });
                if heap.len() > MAX_CANDIDATES {
                    heap.pop();
                }
            }
        }
    }
    Ok(Discovered {
        cands: heap.into_sorted_vec(),
        clear_bad,
        complete,
    })
}

/// One stripe's evaluation.
struct Eval {
    ctx: Arc<StripeCtx>,
    red: i32,
    /// Shards to rebuild (class 0: lost, or breaking the invariant) and to
    /// move off draining chunkservers (class 1).
    wanted: Vec<(u8, usize)>,
    unrecoverable: bool,
    draining: bool,
    /// The source that counts this stripe in the histogram.
    canon: Option<(u8, Kind)>,
}

/// Evaluates stripe `si` (`s`) of the object whose head is `m`: which
/// shards are lost, its redundancy, what must be rebuilt or moved.
#[allow(clippy::too_many_arguments)]
fn evaluate(
    env: &Env,
    bad_t: &Option<Ro>,
    items_t: &Option<Ro>,
    bucket: &str,
    key: &str,
    m: &ObjectManifest,
    s: &StripeManifest,
    si: u64,
) -> Result<Option<Eval>, redb::Error> {
    let k = usize::from(m.ec.k);
    let total = m.ec.total();
    let mut healthy = vec![false; total];
    let mut drains = Vec::new();
    let mut canon: Option<(u8, Kind)> = None;
    for (idx, l) in s.shards.iter().enumerate().take(total) {
        let item = match items_t {
            Some(t) => t
                .get(item_key(&m.version, si, idx as u8).as_slice())?
                .is_some(),
            None => false,
        };
        let (lost, mark) = match l.chunkserver {
            None => (true, item.then_some(Kind::Item)),
            Some(c) => {
                let bad = match bad_t {
                    Some(t) => t.get(shard_index::key(c, &l.shard).as_slice())?.is_some(),
                    None => false,
                };
                let mark = if env.damaged.contains(&c) {
                    Some(Kind::Server)
                } else if bad {
                    Some(Kind::Bad)
                } else if item {
                    Some(Kind::Item)
                } else {
                    None
                };
                (bad || item || env.lost(c), mark)
            }
        };
        if canon.is_none() {
            canon = mark.map(|k| (idx as u8, k));
        }
        healthy[idx] = !lost;
        if !lost && l.chunkserver.is_some_and(|c| env.draining(c)) {
            drains.push(idx);
        }
    }
    let n_healthy = healthy.iter().filter(|h| **h).count();
    let on: Vec<Option<ChunkserverId>> = s
        .shards
        .iter()
        .take(total)
        .enumerate()
        .map(|(i, l)| {
            l.chunkserver
                .filter(|_| healthy.get(i).copied().unwrap_or(false))
        })
        .collect();
    let red = redundancy(&env.rules, m.ec, &on);
    // Shards breaking the invariant move first (class 0, by the stripe's
    // redundancy), shards leaving a draining server last.
    let fix = must_move(&env.rules, m.ec, &on);
    let moves: Vec<(u8, usize)> = fix
        .iter()
        .map(|i| (0u8, *i))
        .chain(
            drains
                .iter()
                .filter(|i| !fix.contains(i))
                .map(|i| (1u8, *i)),
        )
        .collect();
    let wanted: Vec<(u8, usize)> = (0..total)
        .filter(|i| !healthy[*i])
        .map(|i| (0u8, i))
        .chain(moves.iter().copied())
        .collect();
    Ok(Some(Eval {
        ctx: Arc::new(StripeCtx {
            bucket: bucket.to_string(),
            key: key.to_string(),
            version: m.version,
            stripe: si,
            ec: m.ec,
            manifest: s.clone(),
            healthy,
        }),
        red,
        wanted,
        unrecoverable: n_healthy < k,
        draining: !drains.is_empty(),
        canon,
    }))
}

/// The published histogram: every live stripe at its bucket's `m` (the
/// bucket counters), the damaged ones the cycle counted at their own
/// redundancy instead.
pub(super) fn histogram(
    txn: &redb::ReadTransaction,
    cycle: &Cycle,
    stats: &BTreeMap<String, crate::stats::BucketStats>,
) -> Result<BTreeMap<i32, u64>, redb::Error> {
    let ec: HashMap<String, EcParams> = match model::query(txn, &Query::ListBuckets)? {
        QueryResult::Buckets(b) => b.into_iter().map(|b| (b.name, b.ec)).collect(),
        _ => HashMap::new(),
    };
    let mut full: BTreeMap<i32, u64> = BTreeMap::new();
    for (b, s) in stats {
        if s.stripes == 0 {
            continue;
        }
        let m = ec.get(b).map(|e| i32::from(e.m)).unwrap_or(0);
        *full.entry(m).or_insert(0) += s.stripes;
    }
    for (m, n) in &cycle.displaced {
        if let Some(f) = full.get_mut(m) {
            *f = f.saturating_sub(*n);
        }
    }
    for (r, n) in &cycle.counted {
        *full.entry(*r).or_insert(0) += n;
    }
    full.retain(|_, n| *n > 0);
    Ok(full)
}
