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
//! A snapshot is the whole state machine serialized from one redb read
//! transaction (the stream format is described above [`SNAPSHOT_MAGIC`]).
//! The current snapshot is kept in `<dir>/raft-snapshot.bin` (format above
//! [`SNAPSHOT_FILE_MAGIC`]), replaced durably (temp file, fsync, rename,
//! fsync of the directory).
//!
//! Limit: snapshot data is a `Cursor<Vec<u8>>`, so a snapshot is built,
//! sent and installed entirely in memory; the metadata of a cluster must fit
//! in RAM a few times over. Streaming snapshots need openraft's
//! `generic-snapshot-data` feature and a file-backed `SnapshotData`.

use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, TableHandle, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use super::{
    blocking, Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoreError, StoredMembership,
    TypeConfig,
};
use crate::model::{self, MODEL_FORMAT_VERSION, MODEL_TABLES};
use crate::types::CommandResult;

/// File name of the state machine database inside the data directory.
pub const SM_FILE: &str = "raft-sm.redb";

/// File name of the current snapshot inside the data directory.
pub const SNAPSHOT_FILE: &str = "raft-snapshot.bin";

/// Temp name the snapshot file is written under before its rename.
const SNAPSHOT_TMP: &str = "raft-snapshot.bin.tmp";

/// Last applied id, membership and model format version, by name.
pub(crate) const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");

pub(crate) const KEY_FORMAT: &str = "format";
const KEY_LAST_APPLIED: &str = "last_applied";
const KEY_MEMBERSHIP: &str = "last_membership";

/*
 * Snapshot stream format, version 1 (the bytes of `SnapshotData`, what is
 * sent to followers). Integers are big-endian.
 *
 *   magic        8 bytes   "CAIRNSNP"
 *   version      u32       SNAPSHOT_VERSION (1)
 *   meta_len     u32
 *   meta         meta_len bytes of JSON StreamMeta:
 *                  { last_applied, last_membership, model_format_version }
 *   table_count  u32
 *   table_count times:
 *     name_len   u16
 *     name       name_len bytes, UTF-8: a table of model::MODEL_TABLES
 *     count      u64       number of pairs
 *     count times, keys strictly increasing:
 *       key_len  u32, key bytes
 *       val_len  u32, value bytes
 *   trailer      8 bytes   "CAIRNEND"
 *
 * Nothing may follow the trailer. A reader checks every length against the
 * bytes left, refuses unknown or repeated table names, unsorted keys, a
 * model_format_version newer than its own (an older one is migrated after the
 * install), and a meta that disagrees with
 * the SnapshotMeta openraft hands it. A new version bumps SNAPSHOT_VERSION;
 * readers keep accepting the older versions they can convert.
 */

/// First bytes of a snapshot stream.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"CAIRNSNP";
/// Last bytes of a snapshot stream: proves it was not cut short.
const SNAPSHOT_TRAILER: &[u8; 8] = b"CAIRNEND";
/// Version of the snapshot stream format.
pub const SNAPSHOT_VERSION: u32 = 1;

/*
 * Snapshot file format, version 1 (`raft-snapshot.bin`): openraft's
 * SnapshotMeta next to the stream, so one rename replaces both.
 *
 *   magic        8 bytes   "CAIRNSNF"
 *   version      u32       SNAPSHOT_FILE_VERSION (1)
 *   meta_len     u32
 *   meta         meta_len bytes of JSON openraft::SnapshotMeta
 *   data_len     u64
 *   data         data_len bytes: the snapshot stream above
 *
 * The file must end right after `data`.
 */

/// First bytes of the snapshot file.
pub const SNAPSHOT_FILE_MAGIC: &[u8; 8] = b"CAIRNSNF";
/// Version of the snapshot file envelope.
pub const SNAPSHOT_FILE_VERSION: u32 = 1;

/// The state-machine header carried inside a snapshot stream.
#[derive(Debug, Serialize, Deserialize)]
struct StreamMeta {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    model_format_version: u64,
}

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
    /// Meta of the snapshot in `raft-snapshot.bin`. The lock also
    /// serializes every writer of that file.
    current: Mutex<Option<SnapshotMeta>>,
    /// When `apply` last committed durably.
    last_durable: Mutex<std::time::Instant>,
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

impl StateMachineStore {
    /// Opens or creates `<dir>/raft-sm.redb` and the snapshot file. Creates
    /// every table, checks the model format version, and finishes a
    /// snapshot install a crash interrupted (the snapshot file is written
    /// before the database commit, so a file newer than the database is
    /// installed again). Blocking: call it from a blocking context (as
    /// [`super::open_stores`] does).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        match std::fs::remove_file(dir.join(SNAPSHOT_TMP)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let db = Database::create(dir.join(SM_FILE))?;
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
            for def in MODEL_TABLES {
                txn.open_table(*def)?;
            }
            model::migrate(&txn)?;
            let mut meta = txn.open_table(SM_META)?;
            match found {
                Some(MODEL_FORMAT_VERSION) => {}
                // Format 1 (no reverse shard index): `model::migrate` has
                // just built what format 2 adds.
                Some(1) => {
                    tracing::info!(
                        from = 1,
                        to = MODEL_FORMAT_VERSION,
                        "state machine upgraded"
                    );
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

        let current = read_snapshot_file(dir, false)?.map(|f| f.meta);
        let shared = Shared {
            db: Arc::new(db),
            dir: dir.to_path_buf(),
            current: Mutex::new(current.clone()),
            last_durable: Mutex::new(std::time::Instant::now()),
        };
        if let Some(meta) = current {
            let (applied, _) = read_applied(&shared.db.begin_read()?)?;
            if meta.last_log_id > applied {
                tracing::warn!(
                    snapshot = %meta,
                    "state machine is behind its snapshot file (interrupted install): installing it again"
                );
                let data = match read_snapshot_file(dir, true)? {
                    Some(SnapshotFile {
                        data: Some(data), ..
                    }) => data,
                    _ => {
                        return Err(StoreError::corrupt(
                            "snapshot file",
                            "vanished while opening",
                        ))
                    }
                };
                let mut txn = shared.db.begin_write()?;
                txn.set_durability(Durability::Immediate)?;
                load_stream(&txn, &data, &meta)?;
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

    /// Writes the whole state machine as a snapshot stream and returns it
    /// with the meta of the state it reflects.
    fn build(shared: &Shared) -> Result<(SnapshotMeta, Vec<u8>), StoreError> {
        let txn = shared.db.begin_read()?;
        let (last_applied, last_membership) = read_applied(&txn)?;
        let data = dump_stream(&txn, last_applied, &last_membership)?;
        drop(txn);
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let snapshot_id = match &last_applied {
            Some(l) => format!("{}-{}-{ms}", l.leader_id, l.index),
            None => format!("none-{ms}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id,
        };
        Ok((meta, data))
    }
}

/// Serializes sm meta and every model table from `txn` (stream format above).
fn dump_stream(
    txn: &ReadTransaction,
    last_applied: Option<LogId>,
    last_membership: &StoredMembership,
) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
    let meta = serde_json::to_vec(&StreamMeta {
        last_applied,
        last_membership: last_membership.clone(),
        model_format_version: MODEL_FORMAT_VERSION,
    })?;
    put_len32(&mut out, meta.len())?;
    out.extend_from_slice(&meta);
    put_len32(&mut out, MODEL_TABLES.len())?;
    for def in MODEL_TABLES {
        let table = txn.open_table(*def)?;
        let name = def.name().as_bytes();
        let name_len = u16::try_from(name.len())
            .map_err(|_| StoreError::corrupt("table name", def.name().to_string()))?;
        out.extend_from_slice(&name_len.to_be_bytes());
        out.extend_from_slice(name);
        let count = table.len()?;
        out.extend_from_slice(&count.to_be_bytes());
        let mut written = 0u64;
        for item in table.iter()? {
            let (k, v) = item?;
            put_len32(&mut out, k.value().len())?;
            out.extend_from_slice(k.value());
            put_len32(&mut out, v.value().len())?;
            out.extend_from_slice(v.value());
            written += 1;
        }
        if written != count {
            return Err(StoreError::corrupt(
                "state machine",
                format!("table {} has {written} rows but claims {count}", def.name()),
            ));
        }
    }
    out.extend_from_slice(SNAPSHOT_TRAILER);
    Ok(out)
}

fn put_len32(out: &mut Vec<u8>, len: usize) -> Result<(), StoreError> {
    let len = u32::try_from(len).map_err(|_| {
        StoreError::corrupt("snapshot", format!("item of {len} bytes exceeds 4 GiB"))
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

/// A bounds-checked cursor over untrusted bytes.
struct Bytes<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.buf.len() < n {
            return Err(StoreError::corrupt(
                self.what,
                format!("truncated: need {n} bytes, {} left", self.buf.len()),
            ));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u16(&mut self) -> Result<u16, StoreError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A u32 length prefix, then that many bytes.
    fn chunk32(&mut self) -> Result<&'a [u8], StoreError> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

/// Replaces every model table and the sm meta inside `txn` with the
/// contents of the snapshot stream `data`, which must describe the state
/// `expect` names. Validates everything (see the stream format); on error
/// the caller drops `txn`, which discards every change.
fn load_stream(
    txn: &WriteTransaction,
    data: &[u8],
    expect: &SnapshotMeta,
) -> Result<(), StoreError> {
    const WHAT: &str = "snapshot";
    let mut r = Bytes {
        buf: data,
        what: WHAT,
    };
    if &r.array::<8>()? != SNAPSHOT_MAGIC {
        return Err(StoreError::corrupt(WHAT, "bad magic: not a Cairn snapshot"));
    }
    let version = r.u32()?;
    if version != SNAPSHOT_VERSION {
        return Err(StoreError::Version {
            what: "snapshot stream",
            found: version.into(),
            supported: SNAPSHOT_VERSION.into(),
        });
    }
    let meta: StreamMeta = serde_json::from_slice(r.chunk32()?)
        .map_err(|e| StoreError::corrupt(WHAT, format!("bad meta: {e}")))?;
    // Format 1 snapshots (an older leader's) lack the reverse shard index;
    // `model::migrate` below builds it.
    if !(1..=MODEL_FORMAT_VERSION).contains(&meta.model_format_version) {
        return Err(StoreError::Version {
            what: "snapshot model",
            found: meta.model_format_version,
            supported: MODEL_FORMAT_VERSION,
        });
    }
    if meta.last_applied != expect.last_log_id || meta.last_membership != expect.last_membership {
        return Err(StoreError::corrupt(
            WHAT,
            format!(
                "contents (last applied {:?}) do not match snapshot meta {expect}",
                meta.last_applied
            ),
        ));
    }

    for def in MODEL_TABLES {
        txn.delete_table(*def)?;
        txn.open_table(*def)?;
    }
    let table_count = r.u32()?;
    let mut seen = vec![false; MODEL_TABLES.len()];
    for _ in 0..table_count {
        let name_len = usize::from(r.u16()?);
        let name = std::str::from_utf8(r.take(name_len)?)
            .map_err(|_| StoreError::corrupt(WHAT, "table name is not UTF-8"))?;
        let Some(pos) = MODEL_TABLES.iter().position(|d| d.name() == name) else {
            return Err(StoreError::corrupt(WHAT, format!("unknown table {name:?}")));
        };
        if std::mem::replace(&mut seen[pos], true) {
            return Err(StoreError::corrupt(
                WHAT,
                format!("table {name:?} appears twice"),
            ));
        }
        let count = r.u64()?;
        let mut table = txn.open_table(MODEL_TABLES[pos])?;
        let mut prev: Option<&[u8]> = None;
        for _ in 0..count {
            let k = r.chunk32()?;
            let v = r.chunk32()?;
            if prev.is_some_and(|p| p >= k) {
                return Err(StoreError::corrupt(
                    WHAT,
                    format!("keys of table {name:?} out of order"),
                ));
            }
            prev = Some(k);
            table.insert(k, v)?;
        }
    }
    if &r.array::<8>()? != SNAPSHOT_TRAILER {
        return Err(StoreError::corrupt(WHAT, "bad trailer"));
    }
    if !r.buf.is_empty() {
        return Err(StoreError::corrupt(
            WHAT,
            format!("{} unexpected bytes after the trailer", r.buf.len()),
        ));
    }

    model::migrate(txn)?;
    let mut sm = txn.open_table(SM_META)?;
    match &meta.last_applied {
        Some(l) => {
            sm.insert(KEY_LAST_APPLIED, serde_json::to_vec(l)?.as_slice())?;
        }
        None => {
            sm.remove(KEY_LAST_APPLIED)?;
        }
    }
    sm.insert(
        KEY_MEMBERSHIP,
        serde_json::to_vec(&meta.last_membership)?.as_slice(),
    )?;
    sm.insert(
        KEY_FORMAT,
        serde_json::to_vec(&MODEL_FORMAT_VERSION)?.as_slice(),
    )?;
    Ok(())
}

/// Removes the temp file unless disarmed: a failed write leaves no debris.
struct TempGuard<'a> {
    path: &'a Path,
    armed: bool,
}

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(self.path);
        }
    }
}

/// Durably replaces the snapshot file: temp file, write, fsync, rename,
/// fsync of the directory.
fn write_snapshot_file(dir: &Path, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(SNAPSHOT_TMP);
    let mut guard = TempGuard {
        path: &tmp,
        armed: true,
    };
    let meta_json = serde_json::to_vec(meta)?;
    let meta_len = u32::try_from(meta_json.len())
        .map_err(|_| StoreError::corrupt("snapshot meta", "larger than 4 GiB"))?;
    let mut f = std::fs::File::create(&tmp)?;
    {
        let mut w = std::io::BufWriter::new(&mut f);
        w.write_all(SNAPSHOT_FILE_MAGIC)?;
        w.write_all(&SNAPSHOT_FILE_VERSION.to_be_bytes())?;
        w.write_all(&meta_len.to_be_bytes())?;
        w.write_all(&meta_json)?;
        w.write_all(&(data.len() as u64).to_be_bytes())?;
        w.write_all(data)?;
        w.flush()?;
    }
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    guard.armed = false;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// The snapshot file's contents.
struct SnapshotFile {
    meta: SnapshotMeta,
    /// The stream, when asked for.
    data: Option<Vec<u8>>,
}

/// Reads the snapshot file's meta and, if `with_data`, its stream. `None`
/// when there is no snapshot yet.
fn read_snapshot_file(dir: &Path, with_data: bool) -> Result<Option<SnapshotFile>, StoreError> {
    const WHAT: &str = "snapshot file";
    let mut f = match std::fs::File::open(dir.join(SNAPSHOT_FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let file_len = f.metadata()?.len();
    let mut head = [0u8; 16];
    f.read_exact(&mut head)
        .map_err(|e| StoreError::corrupt(WHAT, format!("short header: {e}")))?;
    let mut r = Bytes {
        buf: &head,
        what: WHAT,
    };
    if &r.array::<8>()? != SNAPSHOT_FILE_MAGIC {
        return Err(StoreError::corrupt(WHAT, "bad magic"));
    }
    let version = r.u32()?;
    if version != SNAPSHOT_FILE_VERSION {
        return Err(StoreError::Version {
            what: WHAT,
            found: version.into(),
            supported: SNAPSHOT_FILE_VERSION.into(),
        });
    }
    let meta_len = u64::from(r.u32()?);
    if 16 + meta_len + 8 > file_len {
        return Err(StoreError::corrupt(WHAT, "truncated meta"));
    }
    let mut meta_json = vec![0u8; meta_len as usize];
    f.read_exact(&mut meta_json)?;
    let meta: SnapshotMeta = serde_json::from_slice(&meta_json)
        .map_err(|e| StoreError::corrupt(WHAT, format!("bad meta: {e}")))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)?;
    let data_len = u64::from_be_bytes(len);
    if 16 + meta_len + 8 + data_len != file_len {
        return Err(StoreError::corrupt(
            WHAT,
            format!("length mismatch: {data_len} data bytes declared, file is {file_len} bytes"),
        ));
    }
    if !with_data {
        return Ok(Some(SnapshotFile { meta, data: None }));
    }
    let data_len =
        usize::try_from(data_len).map_err(|_| StoreError::corrupt(WHAT, "too large for memory"))?;
    let mut data = vec![0u8; data_len];
    f.read_exact(&mut data)?;
    Ok(Some(SnapshotFile {
        meta,
        data: Some(data),
    }))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    /// Dumps the state machine from one consistent read transaction, makes
    /// it the current snapshot (unless a newer one, e.g. installed
    /// meanwhile, is already current) and returns it.
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let shared = self.shared.clone();
        blocking(move || {
            let (meta, data) = StateMachineStore::build(&shared)?;
            let mut current = shared.lock_current();
            if current
                .as_ref()
                .is_none_or(|c| c.last_log_id <= meta.last_log_id)
            {
                write_snapshot_file(&shared.dir, &meta, &data)?;
                *current = Some(meta.clone());
            }
            tracing::info!(snapshot = %meta, bytes = data.len(), "built snapshot");
            Ok(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            })
        })
        .await
        .map_err(|e| snap_write_err(None, e))
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

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    /// Validates the stream and replaces the state machine with it in one
    /// transaction. The snapshot file is written (durably) before that
    /// transaction commits: if a crash falls between the two,
    /// [`StateMachineStore::open`] installs the file again.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let meta = meta.clone();
        let shared = self.shared.clone();
        let err_meta = meta.clone();
        blocking(move || {
            let mut current = shared.lock_current();
            let mut txn = shared.db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            load_stream(&txn, &data, &meta)?;
            write_snapshot_file(&shared.dir, &meta, &data)?;
            tracing::info!(snapshot = %meta, bytes = data.len(), "installing snapshot");
            *current = Some(meta);
            txn.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| snap_write_err(Some(&err_meta), e))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let shared = self.shared.clone();
        blocking(move || {
            let _current = shared.lock_current();
            Ok(match read_snapshot_file(&shared.dir, true)? {
                Some(SnapshotFile {
                    meta,
                    data: Some(data),
                }) => Some(Snapshot {
                    meta,
                    snapshot: Box::new(Cursor::new(data)),
                }),
                _ => None,
            })
        })
        .await
        .map_err(snap_read_err)
    }
}
