//! "Named but absent": the leader checks that a chunkserver still holds
//! every shard the metadata service places on it (leader only).
//!
//! A chunkserver that comes back without some shard files (a replaced or
//! emptied disk, a dropped `--data` directory) is Up and answers, so
//! nothing else would notice its missing shards until a read fails.
//!
//! # Protocol
//! 1. A check of chunkserver `cs` starts when the identities of its data
//!    directories (`HeartbeatRequest::data_dirs`, the `disk-id` files)
//!    differ from those this leader last saw for it (also on first sight,
//!    so a new leader checks every chunkserver once), when it comes back
//!    from `Suspect`/`Down`, and with each orphan-inventory round.
//! 2. While a check runs, each heartbeat reply of `cs` carries one
//!    `ChunkserverCommand::CheckShards` page: the next at most
//!    [`PAGE`] shard ids (in id order, after a cursor) that a committed
//!    manifest or an uploaded part places on `cs` ([`placed_page`]).
//! 3. The chunkserver looks each one up in its store index and reports the
//!    ones it does not hold as bad shards on its next heartbeat; they enter
//!    the `bad` table and the planner rebuilds them like any lost shard.
//!
//! # Why this has no false positive
//! A manifest or part names a shard on `cs` only after that shard was
//! durably stored there (writers upload before they commit; a repair
//! commits after its target stored the copy), so a shard the state names
//! when the page is read must be in the store when the chunkserver, later,
//! looks. The chunkserver itself confirms absence; the leader never infers
//! it from an inventory snapshot. A shard that the state stops naming in
//! between (overwritten, deleted, moved, then garbage-collected) may be
//! reported, but a bad row naming a shard no manifest places there is
//! dropped by the planner's next pass.
//!
//! # Cost
//! One page costs one scan of the `objects` and `upload_parts` tables
//! (decoding only placements) with memory bounded by [`PAGE`]; a whole
//! check is O(pages x manifests), run on the blocking pool one page per
//! heartbeat. A reverse index chunkserver -> shards would make a page
//! O(page).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use crate::model;
use crate::types::{ChunkserverId, ShardId};

/// Shards per `CheckShards` page: about 330 KB of JSON on a heartbeat
/// reply, and the leader's memory per page.
pub const PAGE: usize = 10_000;

/// The first at most `limit` shard ids greater than `after` that a
/// committed manifest or an uploaded part places on `cs`, in id order, and
/// whether they are the last ones.
pub fn placed_page(
    txn: &redb::ReadTransaction,
    cs: ChunkserverId,
    after: Option<ShardId>,
    limit: usize,
) -> Result<(Vec<ShardId>, bool), redb::Error> {
    let mut page: BTreeSet<ShardId> = BTreeSet::new();
    let mut more = false;
    for def in [model::OBJECTS, model::UPLOAD_PARTS] {
        crate::orphans::for_each_placement(txn, def, |on, shard| {
            if on == Some(cs) && after.is_none_or(|a| shard > a) {
                page.insert(shard);
                if page.len() > limit {
                    page.pop_last();
                    more = true;
                }
            }
            true
        })?;
    }
    Ok((page.into_iter().collect(), !more))
}

#[derive(Default)]
struct State {
    term: u64,
    /// Data-dir identities last reported by each chunkserver.
    identities: HashMap<ChunkserverId, Vec<String>>,
    /// Checks in progress: the cursor (last shard id sent).
    running: HashMap<ChunkserverId, Option<ShardId>>,
}

/// The leader's named-but-absent checks. Leader-local, not replicated.
#[derive(Default)]
pub struct Absent {
    state: Mutex<State>,
}

impl std::fmt::Debug for Absent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Absent").finish()
    }
}

impl Absent {
    fn state(&self, term: u64) -> std::sync::MutexGuard<'_, State> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.term != term {
            *st = State {
                term,
                ..State::default()
            };
        }
        st
    }

    /// Records a heartbeat of `cs` reporting `identities`; starts a check
    /// when they changed (or were never seen by this leader) or `force`.
    /// Returns true when a check was started.
    pub fn observe(
        &self,
        cs: ChunkserverId,
        term: u64,
        identities: &[String],
        force: bool,
    ) -> bool {
        let mut st = self.state(term);
        let changed = st.identities.get(&cs).is_none_or(|i| i != identities);
        if changed {
            st.identities.insert(cs, identities.to_vec());
        }
        if (changed || force) && !st.running.contains_key(&cs) {
            st.running.insert(cs, None);
            return true;
        }
        false
    }

    /// The cursor of the check of `cs` in progress, if any: `Some(None)`
    /// means from the start.
    pub fn cursor(&self, cs: ChunkserverId, term: u64) -> Option<Option<ShardId>> {
        self.state(term).running.get(&cs).copied()
    }

    /// A page of the check of `cs` was sent: move the cursor to `last`, or
    /// end the check when `done`.
    pub fn advance(&self, cs: ChunkserverId, term: u64, last: Option<ShardId>, done: bool) {
        let mut st = self.state(term);
        if done {
            st.running.remove(&cs);
        } else {
            st.running.insert(cs, last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_starts_on_first_sight_and_identity_change_only() {
        let a = Absent::default();
        let ids = vec!["a".to_string()];
        assert!(a.observe(1, 1, &ids, false));
        a.advance(1, 1, None, true);
        assert!(!a.observe(1, 1, &ids, false));
        assert!(a.observe(1, 1, &["b".to_string()], false));
        assert_eq!(a.cursor(1, 1), Some(None));
        a.advance(1, 1, Some(ShardId([3; 16])), false);
        assert_eq!(a.cursor(1, 1), Some(Some(ShardId([3; 16]))));
        // A new term starts afresh.
        assert_eq!(a.cursor(1, 2), None);
        assert!(a.observe(1, 2, &["b".to_string()], false));
    }
}
