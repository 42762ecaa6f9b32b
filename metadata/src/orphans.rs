//! Orphan garbage collection by inventory reconciliation (leader only).
//!
//! An orphan is a shard file that no object manifest and no in-progress
//! multipart upload places on the chunkserver holding it: left by a client
//! that died mid-write, by a put whose best-effort cleanup failed, or a
//! stale copy on a chunkserver that came back after its shards were rebuilt
//! elsewhere. Deleted and overwritten objects and aborted uploads do not
//! need this: their shards enter the GC queue in the same transaction that
//! drops them.
//!
//! # Protocol
//! 1. Every `inventory_every` (default an hour) per chunkserver, the leader
//!    adds `SendInventory { round }` to that chunkserver's heartbeat reply
//!    ([`Orphans::inventory_due`]).
//! 2. The chunkserver posts its whole shard list, in id order, in pages of
//!    at most [`MAX_PAGE`] entries, to `/v1/inventory`; each entry carries
//!    the shard's age (time since its file was written, or since an
//!    identical PUT last re-confirmed it), measured on the chunkserver's own
//!    clock, so clock skew between machines does not matter. The pages are
//!    posted from the heartbeat worker, one after another.
//! 3. For each page, after it arrived, the leader confirms its leadership
//!    with a quorum (so its state machine holds everything committed before
//!    the page arrived), then, on one read transaction, drops the entries
//!    already in the GC queue and those named by a manifest or an uploaded
//!    part for that chunkserver ([`check_page`]). Of the rest, those at
//!    least `grace` old (default an hour) are proposed as
//!    `Command::QueueGc` and deleted by the ordinary GC path (delete
//!    commands on heartbeat replies, confirmed by `GcDone`); younger ones
//!    are counted as pending ([`Orphans::pending`]).
//!
//! # Why this never deletes a live shard
//! A client writes every shard of a stripe before the manifest (or part
//! record) that names it commits, and a write takes far less than the grace
//! period. So a shard older than the grace whose placement no committed
//! manifest or upload names, as of a state read after the inventory was
//! listed, can never become named later by that writer: it is garbage.
//! The only other way a manifest comes to name an existing file is a repair
//! or drain whose target already held an identical (stale) copy. The store
//! resets the file's age on that PUT (`Store::begin_put`), so an inventory
//! listed after it sees a young shard. For one listed before it: the target
//! reports the repair only on a heartbeat, which its heartbeat worker sends
//! after the inventory pages it is posting were processed (and any
//! `QueueGc` of them committed), so the `CommitRepair` comes later in the
//! log, and `CommitRepair` must refuse a target on which the shard is
//! queued for deletion (the repair is then planned again).
//! The named set is per chunkserver (a copy of a shard on a server the
//! manifest does not place it on is a stale copy and is collected).
//!
//! # Cost
//! Each page costs a few point lookups per entry (GC queue, write intents,
//! the reverse shard index [`crate::shard_index`]): O(page), whatever the
//! number of objects, with memory bounded by the page. Checks are still
//! serialized, so reconciliation never takes more than one core.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::model;
use crate::shard_index;
use crate::types::{ChunkserverId, InventoryEntry, InventoryPage, ShardId};

/// Largest inventory page accepted: 10,000 entries are about 700 KB of
/// JSON, well under the API's body limit, and bound the leader's memory per
/// page.
pub const MAX_PAGE: usize = 10_000;

/// Default grace period: an orphan younger than this is left alone. Far
/// longer than any write takes.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// Default interval between inventories of one chunkserver.
pub const DEFAULT_INVENTORY_EVERY: Duration = Duration::from_secs(3600);

/// Orphan GC settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrphanConfig {
    /// Unnamed shards younger than this are not deleted.
    pub grace: Duration,
    /// Ask each chunkserver for its inventory this often.
    pub inventory_every: Duration,
}

impl Default for OrphanConfig {
    fn default() -> Self {
        OrphanConfig {
            grace: DEFAULT_GRACE,
            inventory_every: DEFAULT_INVENTORY_EVERY,
        }
    }
}

/// The leader's answer to one inventory page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryReply {
    /// Orphans of this page queued for deletion.
    pub queued: u64,
    /// Orphans of this page still inside the grace period.
    pub pending: u64,
}

/// What [`check_page`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Unnamed shards at least `grace` old: delete them.
    pub orphans: Vec<ShardId>,
    /// Unnamed shards younger than `grace`.
    pub pending: u64,
    /// Shards named by a manifest or an uploaded part.
    pub named: u64,
    /// Shards already waiting in the GC queue.
    pub queued: u64,
}

/// The `gc` table's key (see the model's format notes).
fn gc_key(cs: ChunkserverId, shard: &ShardId) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&cs.to_be_bytes());
    k[8..].copy_from_slice(&shard.0);
    k
}

/// A read-only model table (bytes to bytes).
type Table = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

fn open<'a>(
    txn: &redb::ReadTransaction,
    def: redb::TableDefinition<'a, &'static [u8], &'static [u8]>,
) -> Result<Option<Table>, redb::Error> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Sorts one page of chunkserver `cs`'s inventory against the state on
/// `txn`: which entries are garbage old enough to delete. Deterministic and
/// side-effect free; memory is bounded by the page.
pub fn check_page(
    txn: &redb::ReadTransaction,
    cs: ChunkserverId,
    entries: &[InventoryEntry],
    grace_ms: u64,
) -> Result<Verdict, redb::Error> {
    let mut v = Verdict::default();
    let mut candidates: HashMap<ShardId, u64> = HashMap::with_capacity(entries.len());
    let gc = open(txn, model::GC)?;
    for e in entries {
        let queued = match &gc {
            Some(t) => t.get(gc_key(cs, &e.shard).as_slice())?.is_some(),
            None => false,
        };
        if queued {
            v.queued += 1;
        } else {
            candidates.insert(e.shard, e.age_ms);
        }
    }
    let unnamed_before = candidates.len() as u64;
    // Shards a write in progress registered (write intents): not garbage
    // however old, until the write commits (then a manifest names them) or
    // its intent is reaped.
    for s in model::intent_named(txn, cs, candidates.keys().copied())? {
        candidates.remove(&s);
    }
    // Shards a committed object version or uploaded part places on `cs`:
    // one lookup each in the reverse index.
    let mut named = Vec::new();
    for s in candidates.keys() {
        if shard_index::is_named(txn, cs, s)? {
            named.push(*s);
        }
    }
    for s in named {
        candidates.remove(&s);
    }
    v.named = unnamed_before - candidates.len() as u64;
    for (shard, age) in candidates {
        if age >= grace_ms {
            v.orphans.push(shard);
        } else {
            v.pending += 1;
        }
    }
    v.orphans.sort();
    Ok(v)
}

/// Per-chunkserver bookkeeping of the leader.
#[derive(Default)]
struct State {
    /// The term these clocks belong to (a new leader starts afresh).
    term: u64,
    next_round: u64,
    /// When each chunkserver was last asked for its inventory (or first
    /// seen by this leader).
    asked: HashMap<ChunkserverId, Instant>,
    /// Pending orphans counted so far in each chunkserver's current round.
    counting: HashMap<ChunkserverId, (u64, u64)>,
    /// Pending orphans per chunkserver as of its last complete round.
    pending: HashMap<ChunkserverId, u64>,
}

/// The leader's orphan-GC state: when inventories are due, and orphans
/// pending. Leader-local, not replicated.
pub struct Orphans {
    cfg: OrphanConfig,
    state: Mutex<State>,
    /// Serializes page checks: one scan at a time.
    scan: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Orphans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orphans").field("cfg", &self.cfg).finish()
    }
}

impl Orphans {
    /// Orphan GC with these settings.
    pub fn new(cfg: OrphanConfig) -> Self {
        let next_round = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        Orphans {
            cfg,
            state: Mutex::new(State {
                next_round,
                ..State::default()
            }),
            scan: tokio::sync::Mutex::new(()),
        }
    }

    /// The settings.
    pub fn config(&self) -> OrphanConfig {
        self.cfg
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called by the leader (in `term`) on each heartbeat of `cs`: the round
    /// number to ask it for when its inventory is due. The first inventory
    /// is asked one interval after this leader first hears from it.
    pub fn inventory_due(&self, cs: ChunkserverId, term: u64) -> Option<u64> {
        let now = Instant::now();
        let mut st = self.state();
        if st.term != term {
            st.term = term;
            st.asked.clear();
            st.counting.clear();
        }
        match st.asked.get(&cs) {
            None => {
                st.asked.insert(cs, now);
                None
            }
            Some(t) if now.duration_since(*t) >= self.cfg.inventory_every => {
                st.asked.insert(cs, now);
                let round = st.next_round;
                st.next_round += 1;
                Some(round)
            }
            Some(_) => None,
        }
    }

    /// Waits for the right to scan (one page check at a time).
    pub async fn scan_permit(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.scan.lock().await
    }

    /// Counts a checked page's pending orphans; the chunkserver's total is
    /// replaced when its round's last page arrives.
    pub fn record(&self, page: &InventoryPage, pending: u64) {
        let mut st = self.state();
        let acc = st.counting.entry(page.id).or_insert((page.round, 0));
        if acc.0 != page.round {
            *acc = (page.round, 0);
        }
        acc.1 += pending;
        if page.last {
            let total = acc.1;
            st.counting.remove(&page.id);
            st.pending.insert(page.id, total);
        }
    }

    /// Orphans found by the last complete inventory of every chunkserver
    /// that are still inside the grace period (`ClusterStatus`).
    pub fn pending(&self) -> u64 {
        self.state().pending.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::*;
    use redb::ReadableDatabase;

    fn db() -> redb::Database {
        match redb::Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())
        {
            Ok(d) => d,
            Err(e) => panic!("in-memory redb: {e}"),
        }
    }

    fn run(db: &redb::Database, cmd: Command) {
        let txn = db.begin_write().unwrap();
        let r = model::apply(&txn, &cmd).unwrap();
        txn.commit().unwrap();
        assert_eq!(r, CommandResult::Ok, "{cmd:?}");
    }

    fn stripes(placed: &[(Option<ChunkserverId>, u8)]) -> Vec<StripeManifest> {
        vec![StripeManifest {
            id: StripeId::random(),
            len: 10,
            shards: placed
                .iter()
                .map(|&(chunkserver, s)| ShardLoc {
                    chunkserver,
                    shard: ShardId([s; 16]),
                    blake3: Hash32([0; 32]),
                })
                .collect(),
        }]
    }

    fn entry(s: u8, age_ms: u64) -> InventoryEntry {
        InventoryEntry {
            shard: ShardId([s; 16]),
            age_ms,
        }
    }

    #[test]
    fn only_old_unnamed_unqueued_shards_are_orphans() {
        let db = db();
        let bucket = BucketInfo {
            name: "bkt".into(),
            ec: EcParams::default(),
            shard_size: 1 << 20,
            created_ms: 0,
            owner: String::new(),
        };
        run(&db, Command::CreateBucket { bucket });
        // Built from JSON so the test does not depend on every field.
        // Shard 1 on cs 1, 2 on cs 2 (a copy of 2 on cs 1 is stale), 9 lost.
        let manifest: ObjectManifest = serde_json::from_value(serde_json::json!({
            "version": StripeId::random(),
            "size": 10,
            "etag": "e",
            "created_ms": 1,
            "ec": EcParams::default(),
            "shard_size": 1 << 20,
            "stripes": stripes(&[(Some(1), 1), (Some(2), 2), (None, 9)]),
        }))
        .unwrap();
        run(
            &db,
            Command::PutObject {
                bucket: "bkt".into(),
                key: "k".into(),
                manifest,
                condition: PutCondition::None,
            },
        );
        let up = StripeId([7; 16]);
        run(
            &db,
            Command::CreateUpload {
                upload: UploadInfo {
                    id: up,
                    bucket: "bkt".into(),
                    key: "m".into(),
                    initiated_ms: 0,
                    owner: String::new(),
                    content_type: None,
                    headers: Default::default(),
                    user_meta: Default::default(),
                    checksum_algorithm: None,
                    checksum_type: None,
                    ec: EcParams::default(),
                    shard_size: 1 << 20,
                    tags: Default::default(),
                },
            },
        );
        run(
            &db,
            Command::PutPart {
                bucket: "bkt".into(),
                key: "m".into(),
                upload: up,
                part: UploadPart {
                    info: PartInfo {
                        number: 1,
                        size: 10,
                        etag: "p".into(),
                        checksums: Default::default(),
                        stripes: 1,
                    },
                    stripes: stripes(&[(Some(1), 3)]),
                    created_ms: 0,
                },
            },
        );
        run(
            &db,
            Command::QueueGc {
                chunkserver: 1,
                shards: vec![ShardId([4; 16])],
            },
        );
        let grace = 1000;
        let page = [
            entry(1, 5000), // named by the manifest
            entry(2, 5000), // stale copy: the manifest places it on cs 2
            entry(3, 5000), // named by an in-progress upload's part
            entry(4, 5000), // already queued
            entry(5, 5000), // orphan
            entry(6, 10),   // unnamed but young
            entry(9, 5000), // named, but placed nowhere: not here
        ];
        let txn = db.begin_read().unwrap();
        let v = check_page(&txn, 1, &page, grace).unwrap();
        assert_eq!(
            v.orphans,
            vec![ShardId([2; 16]), ShardId([5; 16]), ShardId([9; 16])]
        );
        assert_eq!((v.pending, v.named, v.queued), (1, 2, 1));
        // On cs 2, shard 2 is named.
        let v = check_page(&txn, 2, &page[1..2], grace).unwrap();
        assert!(v.orphans.is_empty());
        assert_eq!(v.named, 1);
    }

    #[test]
    fn rounds_and_pending_counts() {
        let o = Orphans::new(OrphanConfig {
            grace: Duration::from_secs(1),
            inventory_every: Duration::ZERO,
        });
        assert_eq!(
            o.inventory_due(1, 5),
            None,
            "first heartbeat starts the clock"
        );
        let r = o.inventory_due(1, 5).unwrap();
        assert!(o.inventory_due(1, 5).unwrap() > r);
        let page = |last| InventoryPage {
            id: 1,
            round: r,
            shards: Vec::new(),
            last,
        };
        o.record(&page(false), 3);
        assert_eq!(o.pending(), 0, "counted when the round completes");
        o.record(&page(true), 2);
        assert_eq!(o.pending(), 5);
        // A new term restarts the clocks.
        assert_eq!(o.inventory_due(1, 6), None);
    }
}
