//! The placement invariant ([`PlacementRules`], [`zone_cap`]) and the
//! choice of chunkservers for a new stripe ([`place`]).

use super::*;

/// The zone cap of a stripe with EC `ec` in a cluster of `zones` counted
/// zones: `max(m, ceil((k + m) / zones))`. With at least `ceil((k+m)/m)`
/// zones, losing a whole zone loses at most m shards.
pub fn zone_cap(ec: EcParams, zones: usize) -> usize {
    usize::from(ec.m).max(ec.total().div_ceil(zones.max(1)))
}

/// The placement invariant every stripe is held to, decided from the
/// `chunkservers` table alone (so every replica decides alike): no two
/// shards of a stripe on one chunkserver, and at most [`zone_cap`] shards
/// of a stripe per zone. The counted zones are the distinct zones of the
/// registered chunkservers that are not `Draining`: a `Down` chunkserver
/// still counts (it may return; removing it is an operator's decision), a
/// draining one does not (its zone may be about to disappear, and counting
/// it would make the drain impossible to finish). Unwritten locations
/// (`chunkserver: None`) count for nothing.
#[derive(Debug, Clone, Default)]
pub struct PlacementRules {
    zone_of: HashMap<ChunkserverId, String>,
    zones: usize,
}

/// One way a stripe breaks the placement invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeViolation {
    /// What is wrong.
    pub kind: ViolationKind,
    /// The chunkserver (same-chunkserver and unknown kinds).
    pub chunkserver: Option<ChunkserverId>,
    /// The zone (zone-cap kind).
    pub zone: Option<String>,
    /// The shard indexes concerned, ascending.
    pub indexes: Vec<u8>,
}

impl StripeViolation {
    /// A sentence for humans and error messages.
    pub fn describe(&self, cap: usize) -> String {
        let idx: Vec<String> = self.indexes.iter().map(|i| i.to_string()).collect();
        let idx = idx.join(", ");
        match self.kind {
            ViolationKind::SameChunkserver => format!(
                "shards {idx} are all on chunkserver {}",
                self.chunkserver.unwrap_or(0)
            ),
            ViolationKind::ZoneCap => format!(
                "shards {idx} are in zone {:?}: more than the zone cap of {cap}",
                self.zone.as_deref().unwrap_or("")
            ),
            ViolationKind::UnknownChunkserver => format!(
                "shards {idx} are on chunkserver {}, which is not registered",
                self.chunkserver.unwrap_or(0)
            ),
            ViolationKind::Index => format!(
                "shards {idx} on chunkserver {} disagree with the reverse shard index",
                self.chunkserver.unwrap_or(0)
            ),
        }
    }
}

impl PlacementRules {
    /// The rules for a cluster of these chunkservers.
    pub fn new(all: &[ChunkserverInfo]) -> Self {
        let zones: HashSet<&str> = all
            .iter()
            .filter(|c| c.state != ChunkserverState::Draining)
            .map(|c| c.zone.as_str())
            .collect();
        PlacementRules {
            zone_of: all.iter().map(|c| (c.id, c.zone.clone())).collect(),
            zones: zones.len().max(1),
        }
    }

    /// The rules as the `chunkservers` table of a write transaction says.
    pub(super) fn load(txn: &redb::WriteTransaction) -> StoreResult<Self> {
        let mut all = Vec::new();
        for r in txn.open_table(CHUNKSERVERS)?.iter()? {
            let (_, v) = r?;
            all.push(dec::<ChunkserverInfo>(v.value())?);
        }
        Ok(PlacementRules::new(&all))
    }

    /// Counted zones (at least 1).
    pub fn zones(&self) -> usize {
        self.zones
    }

    /// The zone cap for a stripe with EC `ec`.
    pub fn cap(&self, ec: EcParams) -> usize {
        zone_cap(ec, self.zones)
    }

    /// The zone of a registered chunkserver.
    pub fn zone(&self, cs: ChunkserverId) -> Option<&str> {
        self.zone_of.get(&cs).map(String::as_str)
    }

    /// Every way the shards of one stripe (by index) break the invariant:
    /// same-chunkserver and unknown-chunkserver violations by chunkserver
    /// id, then zone-cap violations by zone name.
    pub fn check(&self, ec: EcParams, shards: &[ShardLoc]) -> Vec<StripeViolation> {
        self.check_locs(ec, shards.iter().map(|l| l.chunkserver))
    }

    /// [`PlacementRules::check`] over the chunkserver of each index.
    pub fn check_locs(
        &self,
        ec: EcParams,
        locs: impl Iterator<Item = Option<ChunkserverId>>,
    ) -> Vec<StripeViolation> {
        let cap = self.cap(ec);
        let mut by_cs: BTreeMap<ChunkserverId, Vec<u8>> = BTreeMap::new();
        for (i, c) in locs.enumerate().take(ec.total()) {
            if let Some(c) = c {
                by_cs.entry(c).or_default().push(i as u8);
            }
        }
        let mut out = Vec::new();
        let mut by_zone: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
        for (c, idx) in &by_cs {
            match self.zone(*c) {
                None => out.push(StripeViolation {
                    kind: ViolationKind::UnknownChunkserver,
                    chunkserver: Some(*c),
                    zone: None,
                    indexes: idx.clone(),
                }),
                Some(z) => by_zone.entry(z).or_default().extend(idx.iter().copied()),
            }
            if idx.len() > 1 {
                out.push(StripeViolation {
                    kind: ViolationKind::SameChunkserver,
                    chunkserver: Some(*c),
                    zone: None,
                    indexes: idx.clone(),
                });
            }
        }
        for (z, mut idx) in by_zone {
            if idx.len() > cap {
                idx.sort_unstable();
                out.push(StripeViolation {
                    kind: ViolationKind::ZoneCap,
                    chunkserver: None,
                    zone: Some(z.to_string()),
                    indexes: idx,
                });
            }
        }
        out
    }

    /// The first violation a write may not introduce in any of `stripes`
    /// (`zone_cap`: whether the zone cap is enforced too), as a
    /// `Placement` error. Shards on unregistered chunkservers are the
    /// auditor's business, not a reason to refuse a write.
    pub(super) fn refuse_write(
        &self,
        ec: EcParams,
        stripes: &[StripeManifest],
        zone_cap: bool,
        what: &str,
    ) -> Result<(), MetaError> {
        for (si, s) in stripes.iter().enumerate() {
            let v = self
                .check(ec, &s.shards)
                .into_iter()
                .find(|v| match v.kind {
                    ViolationKind::SameChunkserver => true,
                    ViolationKind::ZoneCap => zone_cap,
                    ViolationKind::UnknownChunkserver | ViolationKind::Index => false,
                });
            if let Some(v) = v {
                return Err(MetaError::Placement {
                    need: ec.total(),
                    why: format!(
                        "{what} stripe {si} breaks the placement invariant: {}",
                        v.describe(self.cap(ec))
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Chooses `n` distinct chunkservers (or, when fewer fit, at least `min`)
/// for shards of one stripe of a bucket with EC `ec`: only `Up` servers
/// with room for a shard, none in `exclude` or `placed`, weighted by free
/// space, and no zone holding more than [`PlacementRules::cap`] shards of
/// the stripe, counting the shards already on `placed` (the stripe's other
/// shards when one is re-placed mid-write). The cap is never dropped: when
/// it leaves room for fewer than `n` shards, fewer are returned (at least
/// `min`: a degraded write, queued for repair), otherwise the answer is a
/// `Placement` error saying why.
pub fn place(
    all: &[ChunkserverInfo],
    n: usize,
    min: usize,
    ec: EcParams,
    shard_bytes: u64,
    exclude: &[ChunkserverId],
    placed: &[ChunkserverId],
) -> Result<Vec<ChunkserverInfo>, MetaError> {
    let rules = PlacementRules::new(all);
    let cap = rules.cap(ec);
    let mut per_zone: HashMap<String, usize> = HashMap::new();
    for c in placed {
        if let Some(z) = rules.zone(*c) {
            *per_zone.entry(z.to_string()).or_insert(0) += 1;
        }
    }
    let candidates: Vec<&ChunkserverInfo> = all
        .iter()
        .filter(|c| c.state == ChunkserverState::Up)
        .filter(|c| c.free >= shard_bytes)
        .filter(|c| !exclude.contains(&c.id) && !placed.contains(&c.id))
        .collect();
    // What the zone cap leaves room for: per zone, the free slots under the
    // cap or its candidates, whichever is fewer. A greedy pick that never
    // exceeds the cap always reaches this.
    let mut in_zone: HashMap<&str, usize> = HashMap::new();
    for c in &candidates {
        *in_zone.entry(c.zone.as_str()).or_insert(0) += 1;
    }
    let room: usize = in_zone
        .iter()
        .map(|(z, n)| {
            let used = per_zone.get(*z).copied().unwrap_or(0);
            cap.saturating_sub(used).min(*n)
        })
        .sum();
    let want = n.min(room);
    if want < min.max(1).min(n) || want == 0 {
        let up = all
            .iter()
            .filter(|c| c.state == ChunkserverState::Up)
            .count();
        return Err(MetaError::Placement {
            need: n,
            why: format!(
                "{} usable chunkservers ({} registered, {} up, {} excluded, {} holding other shards of the stripe, others full) in {} zones; with at most {cap} shards of a stripe per zone (of {} counted zones) they take {room}",
                candidates.len(),
                all.len(),
                up,
                exclude.len(),
                placed.len(),
                in_zone.len(),
                rules.zones(),
            ),
        });
    }
    Ok(pick_weighted(&candidates, want, cap, per_zone))
}

pub(super) fn pick_weighted(
    candidates: &[&ChunkserverInfo],
    n: usize,
    zone_cap: usize,
    mut per_zone: HashMap<String, usize>,
) -> Vec<ChunkserverInfo> {
    use rand::Rng;
    let mut rng = rand::rng();
    let mut pool: Vec<&ChunkserverInfo> = candidates.to_vec();
    let mut out: Vec<ChunkserverInfo> = Vec::with_capacity(n);
    while out.len() < n {
        pool.retain(|c| per_zone.get(c.zone.as_str()).copied().unwrap_or(0) < zone_cap);
        if pool.is_empty() {
            break;
        }
        // Weight by free space in MiB (+1 so an almost full server can still
        // be chosen when nothing else is left).
        let weights: Vec<u64> = pool.iter().map(|c| (c.free >> 20) + 1).collect();
        let total: u64 = weights.iter().sum();
        let mut x = rng.random_range(0..total.max(1));
        let mut idx = 0;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                idx = i;
                break;
            }
            x -= w;
        }
        let c = pool.swap_remove(idx);
        *per_zone.entry(c.zone.clone()).or_insert(0) += 1;
        out.push(c.clone());
    }
    out
}
