//! The replicated state machine on redb, and its snapshots.
//!
//! # On-disk format (`<dir>/raft-sm.redb`)
//! - every table of [`model::MODEL_TABLES`], as `model` defines them;
//! - table `sm_meta`: name (UTF-8) -> JSON value:
//!   - `format`: u64, [`model::MODEL_FORMAT_VERSION`] of the model tables;
//!   - `last_applied`: `LogId<u64>`, the last applied log id;
//!   - `last_membership`: `StoredMembership<u64, BasicNode>`.
//!
//! `apply` commits each batch of entries in one transaction, without an fsync
//! (`Durability::None`) except at most every [`SM_FLUSH_EVERY`], when the
//! commit is durable (and persists the earlier ones). The state machine is
//! derived from the log, which is durable on a majority before anything is
//! applied, so nothing acknowledged depends on the state machine's fsync:
//! after a crash it reopens at its last durable commit, `last_applied` with
//! it, and openraft applies the log again from there (`model::apply` is
//! deterministic; the `Once` table replays with it). Logs are purged only
//! behind a snapshot, and a snapshot file newer than the reopened state is
//! installed again by [`StateMachineStore::open`], so the entries a replay
//! needs are always in the log or the snapshot. This takes an fsync off the
//! path of every metadata write.
//! Opening a file whose `format` differs from this build's is refused until
//! a migration is added to [`StateMachineStore::open`].
//!
//! # Snapshots
//! A snapshot is the whole state machine streamed from one redb read
//! transaction into a file (format and files in [`super::snapshot`]); the
//! current one is `<dir>/raft-snapshot.snap`, and that file is openraft's
//! `SnapshotData`, sent to followers in chunks. Building, sending,
//! receiving and installing never hold the state in memory: an install
//! loads the received file into staging tables in batches of
//! [`snapshot::STAGE_BATCH_BYTES`], validating all of it (BLAKE3 included),
//! then one write transaction swaps the staged tables in (delete, rename)
//! with the new applied state. A crash before that commit leaves the old
//! state (the staging tables are dropped on open); after it, the new one.

use std::io::{BufReader, BufWriter, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};
use tokio::io::AsyncWriteExt;

use super::snapshot::{self, StreamMeta, TempGuard, SNAPSHOT_FILE};
use super::{
    blocking, Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoreError, StoredMembership,
    TypeConfig,
};
use crate::model::{self, MODEL_FORMAT_VERSION, MODEL_TABLES};
use crate::types::CommandResult;

/// File name of the state machine database inside the data directory.
pub const SM_FILE: &str = "raft-sm.redb";

/// redb's page cache for the state machine (its default is 1 GiB). The
/// cache counts towards the process's RSS and fills with every page a
/// snapshot build or install touches, so it bounds their memory; the OS
/// page cache still holds the rest of the file for reads.
pub const SM_CACHE_BYTES: usize = 32 << 20;

/// Last applied id, membership and model format version, by name.
pub(crate) const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");

pub(crate) const KEY_FORMAT: &str = "format";
const KEY_LAST_APPLIED: &str = "last_applied";
const KEY_MEMBERSHIP: &str = "last_membership";

fn sm_read_err(e: StoreError) -> StorageError {
    StorageIOError::read_state_machine(AnyError::new(&e)).into()
}

fn sm_write_err(e: StoreError) -> StorageError {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

fn snap_read_err(e: StoreError) -> StorageError {
    StorageIOError::read_snapshot(None, AnyError::new(&e)).into()
}

fn snap_write_err(meta: Option<&SnapshotMeta>, e: StoreError) -> StorageError {
    StorageIOError::write_snapshot(meta.map(|m| m.signature()), AnyError::new(&e)).into()
}

struct Shared {
    db: Arc<Database>,
    dir: PathBuf,
    /// Meta of the snapshot in `raft-snapshot.snap`. The lock also
    /// serializes every replacement of that file.
    current: Mutex<Option<SnapshotMeta>>,
    /// When `apply` last committed durably.
    last_durable: Mutex<std::time::Instant>,
    /// Numbers the temp files of snapshots being received.
    receiving: AtomicU64,
}

/// Longest time between durable state-machine commits (bounds the log
/// replayed after a crash).
pub const SM_FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Shared {
    fn lock_current(&self) -> MutexGuard<'_, Option<SnapshotMeta>> {
        // The guarded value is replaced only after a successful write, so a
        // panic elsewhere cannot leave it inconsistent.
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The metadata state machine. Cheap to clone (clones share the database);
/// only openraft should drive the [`RaftStateMachine`] methods, while
/// anyone may read through [`StateMachineStore::db`].
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StateMachineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachineStore")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

/// Reads the last applied log id and membership inside a read transaction,
/// e.g. next to a `model::query` to know which state a reply reflects.
pub fn read_applied(
    txn: &ReadTransaction,
) -> Result<(Option<LogId>, StoredMembership), StoreError> {
    let meta = txn.open_table(SM_META)?;
    let last_applied = match meta.get(KEY_LAST_APPLIED)? {
        Some(v) => Some(serde_json::from_slice(v.value())?),
        None => None,
    };
    let membership = match meta.get(KEY_MEMBERSHIP)? {
        Some(v) => serde_json::from_slice(v.value())?,
        None => StoredMembership::default(),
    };
    Ok((last_applied, membership))
}

/// Records the applied state and this build's model format inside `txn`
/// (a snapshot install).
pub(crate) fn set_applied(
    txn: &WriteTransaction,
    last_applied: Option<&LogId>,
    membership: &StoredMembership,
) -> Result<(), StoreError> {
    let mut sm = txn.open_table(SM_META)?;
    match last_applied {
        Some(l) => {
            sm.insert(KEY_LAST_APPLIED, serde_json::to_vec(l)?.as_slice())?;
        }
        None => {
            sm.remove(KEY_LAST_APPLIED)?;
        }
    }
    sm.insert(KEY_MEMBERSHIP, serde_json::to_vec(membership)?.as_slice())?;
    sm.insert(
        KEY_FORMAT,
        serde_json::to_vec(&MODEL_FORMAT_VERSION)?.as_slice(),
    )?;
    Ok(())
}

/// Opens the current snapshot file, if any, with its meta.
fn open_current(dir: &Path) -> Result<Option<(SnapshotMeta, std::fs::File)>, StoreError> {
    let mut f = match std::fs::File::open(dir.join(SNAPSHOT_FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let meta = snapshot::read_stream_meta(&mut f)?.snapshot_meta()?;
    Ok(Some((meta, f)))
}

/// Loads the stream in `f` into the staging tables (re-encoding it into
/// `copy` if given) and returns its meta; see [`snapshot::stage_stream`].
fn stage_file(
    db: &Database,
    f: &mut std::fs::File,
    expect: Option<&SnapshotMeta>,
    copy: Option<BufWriter<&std::fs::File>>,
) -> Result<StreamMeta, StoreError> {
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(0))?;
    snapshot::stage_stream(
        db,
        BufReader::with_capacity(1 << 16, &mut *f),
        len,
        expect,
        copy,
    )
}

impl StateMachineStore {
    /// Opens or creates `<dir>/raft-sm.redb` and the snapshot file. Creates
    /// every table, checks the model format version, drops leftovers of an
    /// interrupted install (staging tables, temp files), upgrades an older
    /// build's snapshot file, and finishes a snapshot install a crash
    /// interrupted (the snapshot file is written before the database commit,
    /// so a file newer than the database is installed again). Blocking: call
    /// it from a blocking context (as [`super::open_stores`] does).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        snapshot::remove_temp_files(dir)?;
        let mut builder = Database::builder();
        builder.set_cache_size(SM_CACHE_BYTES);
        let db = super::open_checked(builder, &dir.join(SM_FILE))?;
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let found = match txn.open_table(SM_META)?.get(KEY_FORMAT)? {
                Some(v) => Some(serde_json::from_slice::<u64>(v.value())?),
                None => None,
            };
            // Refuse a newer format before touching anything.
            if let Some(found) = found.filter(|f| *f > MODEL_FORMAT_VERSION) {
                return Err(StoreError::Version {
                    what: "state machine",
                    found,
                    supported: MODEL_FORMAT_VERSION,
                });
            }
            snapshot::clear_staging_in(&txn)?;
            for def in MODEL_TABLES {
                txn.open_table(*def)?;
            }
            model::migrate(&txn)?;
            let mut meta = txn.open_table(SM_META)?;
            match found {
                Some(MODEL_FORMAT_VERSION) => {}
                // Format 1 (no reverse shard index) or 2 (one JSON
                // manifest row per object): `model::migrate` has just built
                // the index and split the rows into heads and stripe rows.
                Some(from @ (1 | 2)) => {
                    tracing::info!(from, to = MODEL_FORMAT_VERSION, "state machine upgraded");
                    meta.insert(
                        KEY_FORMAT,
                        serde_json::to_vec(&MODEL_FORMAT_VERSION)?.as_slice(),
                    )?;
                }
                Some(found) => {
                    return Err(StoreError::Version {
                        what: "state machine",
                        found,
                        supported: MODEL_FORMAT_VERSION,
                    })
                }
                None => {
                    meta.insert(
                        KEY_FORMAT,
                        serde_json::to_vec(&MODEL_FORMAT_VERSION)?.as_slice(),
                    )?;
                }
            }
        }
        txn.commit()?;

        snapshot::upgrade_legacy(dir)?;
        let current = open_current(dir)?;
        let shared = Shared {
            db: Arc::new(db),
            dir: dir.to_path_buf(),
            current: Mutex::new(current.as_ref().map(|(m, _)| m.clone())),
            last_durable: Mutex::new(std::time::Instant::now()),
            receiving: AtomicU64::new(0),
        };
        if let Some((meta, mut f)) = current {
            let (applied, _) = read_applied(&shared.db.begin_read()?)?;
            if meta.last_log_id > applied {
                tracing::warn!(
                    snapshot = %meta,
                    "state machine is behind its snapshot file (interrupted install): installing it again"
                );
                let staged = stage_file(&shared.db, &mut f, Some(&meta), None)?;
                let mut txn = shared.db.begin_write()?;
                txn.set_durability(Durability::Immediate)?;
                snapshot::swap_in(&txn, &staged)?;
                txn.commit()?;
            }
        }
        Ok(StateMachineStore {
            shared: Arc::new(shared),
        })
    }

    /// The state machine's database, for reads: run `model::query` (and
    /// [`read_applied`]) on `db.begin_read()` (needs
    /// `redb::ReadableDatabase` in scope). Never write through it: only
    /// `apply` and snapshot installs may change the state machine.
    pub fn db(&self) -> Arc<Database> {
        self.shared.db.clone()
    }

    /// A read transaction on the current state (a consistent view, however
    /// long it is held).
    pub fn begin_read(&self) -> Result<ReadTransaction, redb::TransactionError> {
        self.shared.db.begin_read()
    }

    /// Streams the whole state machine from one read transaction into a
    /// new snapshot file and makes it current (unless a newer one, e.g.
    /// installed meanwhile, already is). Returns the meta and the file,
    /// open for reading.
    fn build(shared: &Shared) -> Result<(SnapshotMeta, std::fs::File, u64), StoreError> {
        let txn = shared.db.begin_read()?;
        let (last_applied, last_membership) = read_applied(&txn)?;
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let snapshot_id = match &last_applied {
            Some(l) => format!("{}-{}-{ms}", l.leader_id, l.index),
            None => format!("none-{ms}"),
        };
        let stream_meta = StreamMeta {
            last_applied,
            last_membership: last_membership.clone(),
            model_format_version: MODEL_FORMAT_VERSION,
            snapshot_id: Some(snapshot_id.clone()),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id,
        };
        let tmp = shared.dir.join(snapshot::BUILD_TMP);
        let mut guard = TempGuard {
            path: &tmp,
            armed: true,
        };
        let f = std::fs::File::create(&tmp)?;
        let (_, bytes) =
            snapshot::dump_stream(&txn, &stream_meta, BufWriter::with_capacity(1 << 16, &f))?;
        drop(txn);
        f.sync_all()?;
        drop(f);
        let reader = std::fs::File::open(&tmp)?;
        let mut current = shared.lock_current();
        if current
            .as_ref()
            .is_none_or(|c| c.last_log_id <= meta.last_log_id)
        {
            snapshot::publish(&shared.dir, &tmp, SNAPSHOT_FILE)?;
            guard.armed = false;
            *current = Some(meta.clone());
        }
        // Otherwise the guard removes the temp file; `reader` keeps it.
        Ok((meta, reader, bytes))
    }

    /// Installs the received stream in `f` (see the module docs): stage
    /// and validate it while copying it into the new snapshot file, make
    /// that file current (durably), then swap the staged tables in.
    fn install(
        shared: &Shared,
        meta: &SnapshotMeta,
        mut f: std::fs::File,
    ) -> Result<u64, StoreError> {
        let tmp = shared.dir.join(snapshot::INSTALL_TMP);
        let mut guard = TempGuard {
            path: &tmp,
            armed: true,
        };
        let out = std::fs::File::create(&tmp)?;
        let staged = stage_file(
            &shared.db,
            &mut f,
            Some(meta),
            Some(BufWriter::with_capacity(1 << 16, &out)),
        )?;
        out.sync_all()?;
        let bytes = out.metadata()?.len();
        drop(out);
        let mut current = shared.lock_current();
        snapshot::publish(&shared.dir, &tmp, SNAPSHOT_FILE)?;
        guard.armed = false;
        *current = Some(meta.clone());
        let mut txn = shared.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        snapshot::swap_in(&txn, &staged)?;
        txn.commit()?;
        Ok(bytes)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    /// Streams the state machine from one consistent read transaction into
    /// the snapshot file (see [`StateMachineStore::build`]) and returns it.
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let shared = self.shared.clone();
        let (meta, f, bytes) = blocking(move || StateMachineStore::build(&shared))
            .await
            .map_err(|e| snap_write_err(None, e))?;
        tracing::info!(snapshot = %meta, bytes, "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(f)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let db = self.shared.db.clone();
        blocking(move || read_applied(&db.begin_read()?))
            .await
            .map_err(sm_read_err)
    }

    /// Applies the batch in ONE write transaction, committed durably at
    /// most every [`SM_FLUSH_EVERY`] (see the module docs), and returns one
    /// result per entry.
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|e| e.log_id) else {
            return Ok(Vec::new());
        };
        let shared = self.shared.clone();
        blocking(move || {
            let db = &shared.db;
            let durable = shared
                .last_durable
                .lock()
                .map(|t| t.elapsed() >= SM_FLUSH_EVERY)
                .unwrap_or(true);
            let mut txn = db.begin_write()?;
            txn.set_durability(if durable {
                Durability::Immediate
            } else {
                Durability::None
            })?;
            let mut out = Vec::with_capacity(entries.len());
            let mut membership = None;
            for entry in entries {
                match entry.payload {
                    EntryPayload::Blank => out.push(CommandResult::Ok),
                    EntryPayload::Normal(cmd) => out.push(model::apply(&txn, &cmd)?),
                    EntryPayload::Membership(m) => {
                        membership = Some(StoredMembership::new(Some(entry.log_id), m));
                        out.push(CommandResult::Ok);
                    }
                }
            }
            {
                let mut meta = txn.open_table(SM_META)?;
                meta.insert(KEY_LAST_APPLIED, serde_json::to_vec(&last)?.as_slice())?;
                if let Some(m) = membership {
                    meta.insert(KEY_MEMBERSHIP, serde_json::to_vec(&m)?.as_slice())?;
                }
            }
            txn.commit()?;
            if durable {
                if let Ok(mut t) = shared.last_durable.lock() {
                    *t = std::time::Instant::now();
                }
            }
            Ok(out)
        })
        .await
        .map_err(sm_write_err)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    /// A fresh temp file, unlinked at once: openraft writes the chunks into
    /// it, and an abandoned transfer leaves nothing on disk.
    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let shared = self.shared.clone();
        let f = blocking(move || {
            let n = shared.receiving.fetch_add(1, Ordering::Relaxed);
            let path = shared.dir.join(format!("raft-snapshot.recv-{n}.tmp"));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)?;
            std::fs::remove_file(&path)?;
            Ok(f)
        })
        .await
        .map_err(|e| snap_write_err(None, e))?;
        Ok(Box::new(tokio::fs::File::from_std(f)))
    }

    /// Validates the received stream and replaces the state machine with
    /// it, in bounded memory (see [`StateMachineStore::install`]). The
    /// snapshot file is written (durably) before the swap commits: if a
    /// crash falls between the two, [`StateMachineStore::open`] installs
    /// the file again.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let mut file = *snapshot;
        file.flush()
            .await
            .map_err(|e| snap_write_err(Some(meta), e.into()))?;
        let f = file.into_std().await;
        let shared = self.shared.clone();
        let m = meta.clone();
        let bytes = blocking(move || StateMachineStore::install(&shared, &m, f))
            .await
            .map_err(|e| snap_write_err(Some(meta), e))?;
        tracing::info!(snapshot = %meta, bytes, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let shared = self.shared.clone();
        let found = blocking(move || {
            let _current = shared.lock_current();
            open_current(&shared.dir)
        })
        .await
        .map_err(snap_read_err)?;
        Ok(found.map(|(meta, f)| Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(f)),
        }))
    }
}
