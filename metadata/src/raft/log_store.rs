//! The Raft log on redb: entries, the vote and the log pointers.
//!
//! # On-disk format (`<dir>/raft-log.redb`, log format version 2)
//! - table `raft_log`: log index as 8 bytes big-endian (so keys sort by
//!   index) -> `openraft::Entry<TypeConfig>` as a format byte then postcard
//!   (see [`super::codec`]); entries written by format 1 are JSON (first
//!   byte `{`) and are still read.
//! - table `raft_meta`: name (UTF-8) -> JSON value:
//!   - `format`: u64, [`LOG_FORMAT_VERSION`];
//!   - `vote`: `Vote<u64>`, the last saved vote;
//!   - `committed`: `LogId<u64>`, the last committed log id (a lower bound:
//!     see [`LogStore::save_committed`]);
//!   - `last_purged`: `LogId<u64>`, the greatest purged log id.
//!
//! A change of either encoding bumps [`LOG_FORMAT_VERSION`]; opening a file
//! of a newer version is refused. Format 1 (JSON entries) upgrades in place
//! on open: only the version changes, its entries are read as they are and
//! purged in time like any other.
//!
//! # Durability and ordering
//! Every write is one redb write transaction. `append` commits its entries
//! without an fsync (`Durability::None`: visible to readers at once, so the
//! leader's replication to followers starts immediately) and hands the
//! `LogFlushed` callback to the flusher thread, which makes them durable with
//! one `Durability::Immediate` commit for every callback queued meanwhile
//! (group flush) and only then reports them flushed, in order. openraft
//! counts the leader's own log towards a commit only once flushed, and a
//! follower answers an append only once flushed, so an entry is committed
//! only when a majority has it on disk; the leader's fsync and the
//! followers' now overlap instead of running one after the other. Every
//! other write (vote, truncate, purge) commits with `Durability::Immediate`
//! before returning, except `save_committed` (see there); a durable commit
//! also persists every earlier non-durable one, so write order is kept.
//! openraft calls the write methods one at a time through `&mut self`. The
//! redb work runs on tokio's blocking pool.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, OptionalSend, RaftLogReader, StorageIOError, Vote};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{blocking, codec, Entry, LogId, StorageError, StoreError, TypeConfig};
use crate::types::NodeId;

/// Version of the log file's encoding (see the module docs).
pub const LOG_FORMAT_VERSION: u64 = 2;

/// File name of the log database inside the data directory.
pub const LOG_FILE: &str = "raft-log.redb";

/// Entries by big-endian index.
const LOG: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raft_log");
/// Vote, committed, last purged and the format version, by name.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const KEY_FORMAT: &str = "format";
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> Result<u64, StoreError> {
    let b: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::corrupt("log key", format!("{} bytes, expected 8", key.len())))?;
    Ok(u64::from_be_bytes(b))
}

fn read_err(e: StoreError) -> StorageError {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn write_err(e: StoreError) -> StorageError {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

fn read_vote_err(e: StoreError) -> StorageError {
    StorageIOError::read_vote(AnyError::new(&e)).into()
}

fn write_vote_err(e: StoreError) -> StorageError {
    StorageIOError::write_vote(AnyError::new(&e)).into()
}

/// redb's page cache for the log (its default is 1 GiB, which a busy log
/// fills: 713 MiB of RSS on a leader after 250,000 PUTs in
/// `cairn bench meta-scale`). Appends are read back soon after they are
/// written (replication), so a small cache holds what is read; the kernel's
/// page cache still holds the rest.
const LOG_CACHE_BYTES: usize = 32 << 20;

/// The Raft log store. Cheap to clone: clones share one redb database, and
/// a clone serves as openraft's log reader (redb read transactions run
/// concurrently with the writer).
#[derive(Clone, Debug)]
pub struct LogStore {
    db: Arc<Database>,
    /// Appends waiting for their fsync (see the module docs).
    flusher: std::sync::mpsc::Sender<LogFlushed<TypeConfig>>,
    /// Encoded bytes of the entries this process appended (the snapshot
    /// cadence's measure of log growth, see `node::snapshot_cadence_loop`).
    appended: Arc<std::sync::atomic::AtomicU64>,
}

/// Makes appended entries durable: one `Durability::Immediate` commit (an
/// fsync that also persists every earlier non-durable commit) per batch of
/// queued callbacks, reported in order. Ends when every sender is dropped.
/// Holds the database weakly, so closing the store closes the file at once.
fn flusher_loop(
    db: std::sync::Weak<Database>,
    rx: std::sync::mpsc::Receiver<LogFlushed<TypeConfig>>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(cb) = rx.try_recv() {
            batch.push(cb);
        }
        let res: Result<(), StoreError> = (|| {
            let Some(db) = db.upgrade() else {
                return Err(StoreError::Io(std::io::Error::other("log store closed")));
            };
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            txn.commit()?;
            Ok(())
        })();
        for cb in batch {
            match &res {
                Ok(()) => cb.log_io_completed(Ok(())),
                Err(e) => cb.log_io_completed(Err(std::io::Error::other(e.to_string()))),
            }
        }
    }
}

impl LogStore {
    /// The counter of encoded bytes this process appended to the log.
    pub fn appended_bytes(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.appended.clone()
    }

    /// Opens or creates `<dir>/raft-log.redb`, creating the tables and
    /// checking the format version. Blocking: call it from a blocking
    /// context (as [`super::open_stores`] does).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let mut builder = Database::builder();
        builder.set_cache_size(LOG_CACHE_BYTES);
        let db = super::open_checked(builder, &dir.join(LOG_FILE))?;
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            txn.open_table(LOG)?;
            let mut meta = txn.open_table(META)?;
            let found = match meta.get(KEY_FORMAT)? {
                Some(v) => Some(serde_json::from_slice::<u64>(v.value())?),
                None => None,
            };
            match found {
                Some(LOG_FORMAT_VERSION) => {}
                // Format 1: JSON entries, which `codec::decode_entry` reads.
                Some(1) => {
                    tracing::info!(from = 1, to = LOG_FORMAT_VERSION, "raft log upgraded");
                    meta.insert(
                        KEY_FORMAT,
                        serde_json::to_vec(&LOG_FORMAT_VERSION)?.as_slice(),
                    )?;
                }
                Some(found) => {
                    return Err(StoreError::Version {
                        what: "raft log",
                        found,
                        supported: LOG_FORMAT_VERSION,
                    })
                }
                None => {
                    meta.insert(
                        KEY_FORMAT,
                        serde_json::to_vec(&LOG_FORMAT_VERSION)?.as_slice(),
                    )?;
                }
            }
        }
        txn.commit()?;
        let db = Arc::new(db);
        let (flusher, rx) = std::sync::mpsc::channel();
        let flush_db = Arc::downgrade(&db);
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || flusher_loop(flush_db, rx))?;
        Ok(LogStore {
            db,
            flusher,
            appended: Arc::default(),
        })
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        db: &Database,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        match meta.get(key)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    async fn put_meta<T: serde::Serialize>(
        &self,
        key: &'static str,
        value: &T,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value)?;
        let db = self.db.clone();
        blocking(move || {
            let mut txn = db.begin_write()?;
            txn.set_durability(durability)?;
            txn.open_table(META)?.insert(key, bytes.as_slice())?;
            txn.commit()?;
            Ok(())
        })
        .await
    }

    /// Reads the entries with index in `(start, end)` bounds, in order,
    /// checking each entry's index against its key.
    fn read_range(
        db: &Database,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<Vec<Entry>, StoreError> {
        let start = match start {
            Bound::Included(i) => Bound::Included(index_key(i)),
            Bound::Excluded(i) => match i.checked_add(1) {
                Some(i) => Bound::Included(index_key(i)),
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match end {
            Bound::Included(i) => Bound::Included(index_key(i)),
            Bound::Excluded(i) => Bound::Excluded(index_key(i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        // An empty or inverted range: redb would reject it.
        let empty = match (&start, &end) {
            (Bound::Included(s), Bound::Included(e)) => s > e,
            (Bound::Included(s), Bound::Excluded(e)) => s >= e,
            (Bound::Unbounded, Bound::Excluded(e)) => *e == [0u8; 8],
            _ => false,
        };
        if empty {
            return Ok(Vec::new());
        }
        let start = start.as_ref().map(|k| k.as_slice());
        let end = end.as_ref().map(|k| k.as_slice());
        let txn = db.begin_read()?;
        let log = txn.open_table(LOG)?;
        let mut out = Vec::new();
        for item in log.range::<&[u8]>((start, end))? {
            let (k, v) = item?;
            let index = key_index(k.value())?;
            let entry = codec::decode_entry(v.value())?;
            if entry.log_id.index != index {
                return Err(StoreError::corrupt(
                    "log entry",
                    format!("key {index} holds entry {}", entry.log_id.index),
                ));
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// Saves the last committed log id. Committed with
    /// `Durability::None`: openraft calls this on every commit advance, and
    /// an fsync here would double the fsyncs per write. The value is only a
    /// lower bound used to re-apply entries after a restart (the state
    /// machine itself is durable), so losing the latest value in a crash is
    /// harmless; the next durable commit (an append or a vote) persists it.
    async fn save_committed_inner(&self, committed: Option<LogId>) -> Result<(), StoreError> {
        match committed {
            Some(c) => self.put_meta(KEY_COMMITTED, &c, Durability::None).await,
            None => {
                let db = self.db.clone();
                blocking(move || {
                    let mut txn = db.begin_write()?;
                    txn.set_durability(Durability::None)?;
                    txn.open_table(META)?.remove(KEY_COMMITTED)?;
                    txn.commit()?;
                    Ok(())
                })
                .await
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        let db = self.db.clone();
        blocking(move || Self::read_range(&db, start, end))
            .await
            .map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let db = self.db.clone();
        blocking(move || {
            let last_purged: Option<LogId> = Self::get_meta(&db, KEY_LAST_PURGED)?;
            let txn = db.begin_read()?;
            let log = txn.open_table(LOG)?;
            let last = match log.last()? {
                Some((k, v)) => {
                    let index = key_index(k.value())?;
                    let entry = codec::decode_entry(v.value())?;
                    if entry.log_id.index != index {
                        return Err(StoreError::corrupt(
                            "log entry",
                            format!("key {index} holds entry {}", entry.log_id.index),
                        ));
                    }
                    Some(entry.log_id)
                }
                None => None,
            };
            Ok(LogState {
                last_log_id: last.or(last_purged),
                last_purged_log_id: last_purged,
            })
        })
        .await
        .map_err(read_err)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_meta(KEY_VOTE, vote, Durability::Immediate)
            .await
            .map_err(write_vote_err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        let db = self.db.clone();
        blocking(move || Self::get_meta(&db, KEY_VOTE))
            .await
            .map_err(read_vote_err)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.save_committed_inner(committed)
            .await
            .map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let db = self.db.clone();
        blocking(move || Self::get_meta(&db, KEY_COMMITTED))
            .await
            .map_err(read_err)
    }

    /// Writes all `entries` in ONE redb transaction without an fsync and
    /// returns; the flusher thread reports `callback` once they are durable
    /// (see the module docs).
    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        let db = self.db.clone();
        let bytes = blocking(move || {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::None)?;
            let mut bytes = 0u64;
            {
                let mut log = txn.open_table(LOG)?;
                let mut buf = Vec::new();
                for e in &entries {
                    codec::encode_entry(e, &mut buf)?;
                    bytes += buf.len() as u64;
                    log.insert(index_key(e.log_id.index).as_slice(), buf.as_slice())?;
                }
            }
            // Visible now, durable once the flusher's commit returns.
            txn.commit()?;
            Ok(bytes)
        })
        .await
        .map_err(write_err)?;
        self.appended
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        if let Err(std::sync::mpsc::SendError(callback)) = self.flusher.send(callback) {
            // The flusher is gone: make the entries durable here.
            let db = self.db.clone();
            blocking(move || {
                let mut txn = db.begin_write()?;
                txn.set_durability(Durability::Immediate)?;
                txn.commit()?;
                Ok(())
            })
            .await
            .map_err(write_err)?;
            callback.log_io_completed(Ok(()));
        }
        Ok(())
    }

    /// Removes every entry with index >= `log_id.index`.
    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating raft log");
        let db = self.db.clone();
        blocking(move || {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            {
                let mut log = txn.open_table(LOG)?;
                let from = index_key(log_id.index);
                log.retain_in::<&[u8], _>(from.as_slice().., |_, _| false)?;
            }
            txn.commit()?;
            Ok(())
        })
        .await
        .map_err(write_err)
    }

    /// Records `log_id` as the last purged id and removes every entry with
    /// index <= `log_id.index`, in one transaction.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging raft log");
        let db = self.db.clone();
        blocking(move || {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            {
                let mut meta = txn.open_table(META)?;
                let prev: Option<LogId> = match meta.get(KEY_LAST_PURGED)? {
                    Some(v) => Some(serde_json::from_slice(v.value())?),
                    None => None,
                };
                if prev.is_some_and(|p| p >= log_id) {
                    return Ok(());
                }
                meta.insert(KEY_LAST_PURGED, serde_json::to_vec(&log_id)?.as_slice())?;
                let mut log = txn.open_table(LOG)?;
                let upto = index_key(log_id.index);
                log.retain_in::<&[u8], _>(..=upto.as_slice(), |_, _| false)?;
            }
            txn.commit()?;
            Ok(())
        })
        .await
        .map_err(write_err)
    }
}
