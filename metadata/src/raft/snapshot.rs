//! Snapshot streams and files: written from one redb read transaction to a
//! file, and loaded from a file into staging tables, in bounded memory.
//!
//! # Files (in the data directory)
//! - [`SNAPSHOT_FILE`] (`raft-snapshot.snap`): the current snapshot, a
//!   stream in the format below. It is openraft's `SnapshotData` as it is:
//!   the leader sends followers this file's bytes in chunks. Replaced
//!   durably (temp file, fsync, rename, fsync of the directory); a reader
//!   that opened the previous one keeps reading it (the inode lives until
//!   closed), so old snapshots vanish by themselves.
//! - `raft-snapshot.*.tmp`: temp files of a build, an install or an
//!   upgrade; removed when their operation fails and on open. A snapshot
//!   being received from the leader is an unlinked temp file, so nothing is
//!   left behind when openraft abandons a transfer.
//! - [`LEGACY_SNAPSHOT_FILE`] (`raft-snapshot.bin`, older builds): the v1
//!   stream inside an envelope with openraft's `SnapshotMeta`. Converted
//!   to [`SNAPSHOT_FILE`] on open, then removed.

use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use redb::{
    Database, Durability, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition,
    TableHandle, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use super::{LogId, SnapshotMeta, StoreError, StoredMembership};
use crate::model::{self, MODEL_FORMAT_VERSION, MODEL_TABLES};

/// File name of the current snapshot inside the data directory.
pub const SNAPSHOT_FILE: &str = "raft-snapshot.snap";

/// File name of the snapshot of older builds (converted on open).
pub const LEGACY_SNAPSHOT_FILE: &str = "raft-snapshot.bin";

/// Prefix and suffix of every snapshot temp file.
const TMP_PREFIX: &str = "raft-snapshot.";
const TMP_SUFFIX: &str = ".tmp";

/// Temp file of a snapshot build.
pub(crate) const BUILD_TMP: &str = "raft-snapshot.build.tmp";
/// Temp file of the copy an install keeps as the new current snapshot.
pub(crate) const INSTALL_TMP: &str = "raft-snapshot.install.tmp";
/// Temp file of the legacy conversion.
const CONVERT_TMP: &str = "raft-snapshot.convert.tmp";

/*
 * Snapshot stream format, version 2. Integers are big-endian.
 *
 *   magic        8 bytes   "CAIRNSNP"
 *   version      u32       SNAPSHOT_VERSION (2)
 *   meta_len     u32
 *   meta         meta_len bytes of JSON StreamMeta:
 *                  { last_applied, last_membership, model_format_version,
 *                    snapshot_id }
 *   table_count  u32
 *   table_count times:
 *     name_len   u16
 *     name       name_len bytes, UTF-8: a table of model::MODEL_TABLES
 *     count      u64       number of pairs
 *     count times, keys strictly increasing:
 *       key_len  u32, key bytes
 *       val_len  u32, value bytes
 *   trailer      8 bytes   "CAIRNEND"
 *   blake3       32 bytes  BLAKE3 of every byte before it
 *
 * Nothing may follow. Version 1 (older leaders) is the same without
 * `snapshot_id` and without the BLAKE3; it is still read. A reader checks
 * every length against the bytes left, refuses unknown or repeated table
 * names, unsorted keys, a model_format_version newer than its own (an older
 * one is migrated after the install), a meta that disagrees with the
 * SnapshotMeta openraft hands it, and a wrong BLAKE3. A new version bumps
 * SNAPSHOT_VERSION; readers keep accepting the older versions they can
 * convert.
 */

/// First bytes of a snapshot stream.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"CAIRNSNP";
/// Marks the end of the tables: proves the stream was not cut short.
const SNAPSHOT_TRAILER: &[u8; 8] = b"CAIRNEND";
/// Version of the snapshot stream format this build writes.
pub const SNAPSHOT_VERSION: u32 = 2;

/// Rows' bytes staged per write transaction while loading a snapshot: the
/// bound on what an install holds in memory (besides redb's page cache),
/// large enough that the per-commit fsync is noise.
pub const STAGE_BATCH_BYTES: usize = 8 << 20;

/*
 * Legacy snapshot file (`raft-snapshot.bin`, envelope version 1):
 *
 *   magic        8 bytes   "CAIRNSNF"
 *   version      u32       1
 *   meta_len     u32
 *   meta         meta_len bytes of JSON openraft::SnapshotMeta
 *   data_len     u64
 *   data         data_len bytes: a version 1 snapshot stream
 */
const LEGACY_FILE_MAGIC: &[u8; 8] = b"CAIRNSNF";

/// The state-machine header carried inside a snapshot stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StreamMeta {
    pub(crate) last_applied: Option<LogId>,
    pub(crate) last_membership: StoredMembership,
    pub(crate) model_format_version: u64,
    /// Absent in version 1 streams.
    #[serde(default)]
    pub(crate) snapshot_id: Option<String>,
}

impl StreamMeta {
    /// openraft's meta for this stream (version 2 streams carry the id).
    pub(crate) fn snapshot_meta(&self) -> Result<SnapshotMeta, StoreError> {
        let Some(id) = &self.snapshot_id else {
            return Err(StoreError::corrupt("snapshot", "no snapshot id"));
        };
        Ok(SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_id: id.clone(),
        })
    }
}

/// Name of the staging table `def` is loaded into before the swap.
fn staging_name(def: &TableDefinition<&[u8], &[u8]>) -> String {
    format!("snapshot_staging/{}", def.name())
}

/// Writes a version 2 stream, hashing as it goes.
pub(crate) struct StreamWriter<W: Write> {
    out: W,
    hasher: blake3::Hasher,
    written: u64,
}

impl<W: Write> StreamWriter<W> {
    fn put(&mut self, b: &[u8]) -> Result<(), StoreError> {
        self.out.write_all(b)?;
        self.hasher.update(b);
        self.written += b.len() as u64;
        Ok(())
    }

    fn put_len32(&mut self, len: usize) -> Result<(), StoreError> {
        let len = u32::try_from(len).map_err(|_| {
            StoreError::corrupt("snapshot", format!("item of {len} bytes exceeds 4 GiB"))
        })?;
        self.put(&len.to_be_bytes())
    }

    /// Starts a stream: magic, version, meta and the table count.
    pub(crate) fn new(out: W, meta: &StreamMeta, tables: usize) -> Result<Self, StoreError> {
        let mut w = StreamWriter {
            out,
            hasher: blake3::Hasher::new(),
            written: 0,
        };
        w.put(SNAPSHOT_MAGIC)?;
        w.put(&SNAPSHOT_VERSION.to_be_bytes())?;
        let json = serde_json::to_vec(meta)?;
        w.put_len32(json.len())?;
        w.put(&json)?;
        w.put_len32(tables)?;
        Ok(w)
    }

    fn table(&mut self, name: &str, count: u64) -> Result<(), StoreError> {
        let name_len = u16::try_from(name.len())
            .map_err(|_| StoreError::corrupt("table name", name.to_string()))?;
        self.put(&name_len.to_be_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&count.to_be_bytes())
    }

    fn row(&mut self, k: &[u8], v: &[u8]) -> Result<(), StoreError> {
        self.put_len32(k.len())?;
        self.put(k)?;
        self.put_len32(v.len())?;
        self.put(v)
    }

    /// Writes the trailer and the BLAKE3; returns the writer and the
    /// stream's length.
    pub(crate) fn finish(mut self) -> Result<(W, u64), StoreError> {
        self.put(SNAPSHOT_TRAILER)?;
        let hash = self.hasher.finalize();
        self.out.write_all(hash.as_bytes())?;
        self.out.flush()?;
        Ok((self.out, self.written + 32))
    }
}

/// Streams sm meta and every model table from `txn` into `out`; returns
/// the stream's length. Memory: one row at a time plus `out`'s buffer.
pub(crate) fn dump_stream<W: Write>(
    txn: &ReadTransaction,
    meta: &StreamMeta,
    out: W,
) -> Result<(W, u64), StoreError> {
    let mut w = StreamWriter::new(out, meta, MODEL_TABLES.len())?;
    for def in MODEL_TABLES {
        let table = txn.open_table(*def)?;
        let count = table.len()?;
        w.table(def.name(), count)?;
        let mut written = 0u64;
        for item in table.iter()? {
            let (k, v) = item?;
            w.row(k.value(), v.value())?;
            written += 1;
        }
        if written != count {
            return Err(StoreError::corrupt(
                "state machine",
                format!("table {} has {written} rows but claims {count}", def.name()),
            ));
        }
    }
    w.finish()
}

/// A bounds-checked, hashing reader over an untrusted stream of known
/// length.
struct StreamReader<R: Read> {
    r: R,
    left: u64,
    hasher: blake3::Hasher,
}

const WHAT: &str = "snapshot";

impl<R: Read> StreamReader<R> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), StoreError> {
        if (buf.len() as u64) > self.left {
            return Err(StoreError::corrupt(
                WHAT,
                format!("truncated: need {} bytes, {} left", buf.len(), self.left),
            ));
        }
        self.r
            .read_exact(buf)
            .map_err(|e| StoreError::corrupt(WHAT, format!("truncated: {e}")))?;
        self.left -= buf.len() as u64;
        self.hasher.update(buf);
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut a = [0u8; N];
        self.fill(&mut a)?;
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

    /// A u32 length prefix, then that many bytes into `buf` (checked
    /// against the bytes left before allocating).
    fn chunk32(&mut self, buf: &mut Vec<u8>) -> Result<(), StoreError> {
        let len = u64::from(self.u32()?);
        if len > self.left {
            return Err(StoreError::corrupt(
                WHAT,
                format!("truncated: item of {len} bytes, {} left", self.left),
            ));
        }
        buf.resize(len as usize, 0);
        self.fill(buf)
    }

    /// Magic, version and meta.
    fn header(&mut self) -> Result<(u32, StreamMeta), StoreError> {
        if &self.array::<8>()? != SNAPSHOT_MAGIC {
            return Err(StoreError::corrupt(WHAT, "bad magic: not a Cairn snapshot"));
        }
        let version = self.u32()?;
        if !(1..=SNAPSHOT_VERSION).contains(&version) {
            return Err(StoreError::Version {
                what: "snapshot stream",
                found: version.into(),
                supported: SNAPSHOT_VERSION.into(),
            });
        }
        let mut json = Vec::new();
        self.chunk32(&mut json)?;
        let meta: StreamMeta = serde_json::from_slice(&json)
            .map_err(|e| StoreError::corrupt(WHAT, format!("bad meta: {e}")))?;
        if version >= 2 && meta.snapshot_id.is_none() {
            return Err(StoreError::corrupt(WHAT, "no snapshot id"));
        }
        Ok((version, meta))
    }
}

/// Reads the meta of the snapshot stream in `f` (from its start) and
/// checks that the stream ends with its trailer (a cheap guard against a
/// truncated file; the BLAKE3 is checked when it is loaded).
pub(crate) fn read_stream_meta(f: &mut std::fs::File) -> Result<StreamMeta, StoreError> {
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(0))?;
    let mut r = StreamReader {
        r: BufReader::new(&mut *f),
        left: len,
        hasher: blake3::Hasher::new(),
    };
    let (version, meta) = r.header()?;
    drop(r);
    let tail = if version >= 2 { 40 } else { 8 };
    if len < tail {
        return Err(StoreError::corrupt(WHAT, "truncated"));
    }
    f.seek(SeekFrom::Start(len - tail))?;
    let mut t = [0u8; 8];
    f.read_exact(&mut t)?;
    if &t != SNAPSHOT_TRAILER {
        return Err(StoreError::corrupt(WHAT, "bad trailer: truncated file?"));
    }
    f.seek(SeekFrom::Start(0))?;
    Ok(meta)
}

/// Loads the snapshot stream `r` (of `len` bytes) into the staging tables,
/// committing every [`STAGE_BATCH_BYTES`], and validates all of it (see
/// the stream format). The live state is untouched: [`swap_in`] makes the
/// staged tables live. If `expect` is given the stream must describe that
/// snapshot. If `copy` is given, the stream is re-encoded into it as the
/// current version (for the new current snapshot file). Returns the
/// stream's meta (with `expect`'s snapshot id for a version 1 stream).
pub(crate) fn stage_stream<R: Read, W: Write>(
    db: &Database,
    r: R,
    len: u64,
    expect: Option<&SnapshotMeta>,
    copy: Option<W>,
) -> Result<StreamMeta, StoreError> {
    let mut r = StreamReader {
        r,
        left: len,
        hasher: blake3::Hasher::new(),
    };
    let (version, mut meta) = r.header()?;
    // Format 1 snapshots (an older leader's) lack the reverse shard index;
    // `model::migrate` in `swap_in` builds it.
    if !(1..=MODEL_FORMAT_VERSION).contains(&meta.model_format_version) {
        return Err(StoreError::Version {
            what: "snapshot model",
            found: meta.model_format_version,
            supported: MODEL_FORMAT_VERSION,
        });
    }
    if let Some(expect) = expect {
        if meta.last_applied != expect.last_log_id
            || meta.last_membership != expect.last_membership
            || meta
                .snapshot_id
                .as_ref()
                .is_some_and(|id| *id != expect.snapshot_id)
        {
            return Err(StoreError::corrupt(
                WHAT,
                format!(
                    "contents (last applied {:?}, id {:?}) do not match snapshot meta {expect}",
                    meta.last_applied, meta.snapshot_id
                ),
            ));
        }
        meta.snapshot_id = Some(expect.snapshot_id.clone());
    }
    let mut copy = match copy {
        Some(w) => Some(StreamWriter::new(w, &meta, MODEL_TABLES.len())?),
        None => None,
    };

    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    clear_staging_in(&txn)?;
    let mut staged = 0usize;
    let table_count = r.u32()?;
    let mut seen = vec![false; MODEL_TABLES.len()];
    let (mut k, mut v, mut prev) = (Vec::new(), Vec::new(), Vec::new());
    let mut copied_tables = 0usize;
    for _ in 0..table_count {
        let name_len = usize::from(r.u16()?);
        let mut name = vec![0u8; name_len];
        r.fill(&mut name)?;
        let name = String::from_utf8(name)
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
        if let Some(c) = copy.as_mut() {
            c.table(&name, count)?;
            copied_tables += 1;
        }
        let staging = staging_name(&MODEL_TABLES[pos]);
        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&staging);
        let mut table = txn.open_table(def)?;
        for i in 0..count {
            r.chunk32(&mut k)?;
            r.chunk32(&mut v)?;
            if i > 0 && prev >= k {
                return Err(StoreError::corrupt(
                    WHAT,
                    format!("keys of table {name:?} out of order"),
                ));
            }
            table.insert(k.as_slice(), v.as_slice())?;
            if let Some(c) = copy.as_mut() {
                c.row(&k, &v)?;
            }
            std::mem::swap(&mut prev, &mut k);
            staged += prev.len() + v.len() + 16;
            if staged >= STAGE_BATCH_BYTES {
                drop(table);
                txn.commit()?;
                txn = db.begin_write()?;
                txn.set_durability(Durability::Immediate)?;
                table = txn.open_table(def)?;
                staged = 0;
            }
        }
        drop(table);
    }
    if &r.array::<8>()? != SNAPSHOT_TRAILER {
        return Err(StoreError::corrupt(WHAT, "bad trailer"));
    }
    if version >= 2 {
        let computed = r.hasher.finalize();
        let stored = r.array::<32>()?;
        if computed.as_bytes() != &stored {
            return Err(StoreError::corrupt(WHAT, "BLAKE3 mismatch"));
        }
    }
    if r.left != 0 {
        return Err(StoreError::corrupt(
            WHAT,
            format!("{} unexpected bytes after the trailer", r.left),
        ));
    }
    if let Some(mut c) = copy {
        // Tables absent from the stream are empty: write them so the copy
        // names every table.
        for (def, seen) in MODEL_TABLES.iter().zip(&seen) {
            if !seen {
                c.table(def.name(), 0)?;
                copied_tables += 1;
            }
        }
        debug_assert_eq!(copied_tables, MODEL_TABLES.len());
        c.finish()?;
    }
    txn.commit()?;
    Ok(meta)
}

/// Fuzzing entry point (`fuzz/fuzz_targets/snapshot_stream.rs`): loads
/// `bytes` as a snapshot stream received from a peer into the staging
/// tables of an in-memory database, re-encoding it as [`stage_stream`]
/// does for an install; returns the re-encoded stream, or the error as
/// text. Not part of the API.
#[doc(hidden)]
pub fn fuzz_stage(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let db = Database::builder()
        .create_with_backend(redb::backends::InMemoryBackend::new())
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    stage_stream(&db, bytes, bytes.len() as u64, None, Some(&mut out))
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Drops every staging table inside `txn` (leftovers of a failed or
/// interrupted load).
pub(crate) fn clear_staging_in(txn: &WriteTransaction) -> Result<(), StoreError> {
    for def in MODEL_TABLES {
        let staging = staging_name(def);
        txn.delete_table(TableDefinition::<&[u8], &[u8]>::new(&staging))?;
    }
    Ok(())
}

/// Inside `txn`: replaces every model table with its staged copy (a table
/// the stream did not name becomes empty), migrates an older model format
/// and records `meta` as the applied state. One commit of `txn` makes the
/// whole snapshot live; until then the old state is intact.
pub(crate) fn swap_in(txn: &WriteTransaction, meta: &StreamMeta) -> Result<(), StoreError> {
    for def in MODEL_TABLES {
        let staging = staging_name(def);
        let sdef: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&staging);
        txn.delete_table(*def)?;
        // Opening creates it when the stream had no such table.
        txn.open_table(sdef)?;
        txn.rename_table(sdef, *def)?;
    }
    model::migrate(txn)?;
    super::state_machine::set_applied(txn, meta.last_applied.as_ref(), &meta.last_membership)
}

/// Temp files of this module in `dir` (leftovers of a crash).
pub(crate) fn remove_temp_files(dir: &Path) -> Result<(), StoreError> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(TMP_PREFIX) && name.ends_with(TMP_SUFFIX) {
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

/// Removes the temp file unless disarmed: a failed write leaves no debris.
pub(crate) struct TempGuard<'a> {
    pub(crate) path: &'a Path,
    pub(crate) armed: bool,
}

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(self.path);
        }
    }
}

/// Renames `tmp` over `dir/name` and fsyncs the directory (the temp file
/// is already fsynced).
pub(crate) fn publish(dir: &Path, tmp: &Path, name: &str) -> Result<(), StoreError> {
    std::fs::rename(tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Converts an older build's [`LEGACY_SNAPSHOT_FILE`] into
/// [`SNAPSHOT_FILE`] (a version 2 stream with the envelope's snapshot id
/// and a BLAKE3), durably, then removes it. The tables are copied as they
/// are, in bounded memory; they are validated when the snapshot is loaded.
/// Nothing to do without a legacy file; a crash anywhere leaves a state
/// this function finishes on the next open.
pub(crate) fn upgrade_legacy(dir: &Path) -> Result<(), StoreError> {
    const LWHAT: &str = "legacy snapshot file";
    let legacy = dir.join(LEGACY_SNAPSHOT_FILE);
    let f = match std::fs::File::open(&legacy) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if dir.join(SNAPSHOT_FILE).exists() {
        // A conversion finished but the removal did not.
        std::fs::remove_file(&legacy)?;
        std::fs::File::open(dir)?.sync_all()?;
        return Ok(());
    }
    let file_len = f.metadata()?.len();
    let mut r = StreamReader {
        r: BufReader::new(f),
        left: file_len,
        hasher: blake3::Hasher::new(),
    };
    if &r.array::<8>()? != LEGACY_FILE_MAGIC {
        return Err(StoreError::corrupt(LWHAT, "bad magic"));
    }
    let version = r.u32()?;
    if version != 1 {
        return Err(StoreError::Version {
            what: LWHAT,
            found: version.into(),
            supported: 1,
        });
    }
    let mut json = Vec::new();
    r.chunk32(&mut json)?;
    let smeta: SnapshotMeta = serde_json::from_slice(&json)
        .map_err(|e| StoreError::corrupt(LWHAT, format!("bad meta: {e}")))?;
    let data_len = r.u64()?;
    if data_len != r.left {
        return Err(StoreError::corrupt(
            LWHAT,
            format!(
                "length mismatch: {data_len} data bytes declared, {} present",
                r.left
            ),
        ));
    }
    let (sv, mut meta) = r.header()?;
    if sv != 1 {
        return Err(StoreError::corrupt(
            LWHAT,
            format!("holds a version {sv} stream"),
        ));
    }
    if meta.last_applied != smeta.last_log_id {
        return Err(StoreError::corrupt(LWHAT, "stream and envelope disagree"));
    }
    meta.snapshot_id = Some(smeta.snapshot_id.clone());
    // What is left: table count and tables, then the 8-byte trailer.
    let body = r
        .left
        .checked_sub(8)
        .ok_or_else(|| StoreError::corrupt(LWHAT, "truncated"))?;

    let tmp = dir.join(CONVERT_TMP);
    let mut guard = TempGuard {
        path: &tmp,
        armed: true,
    };
    let out = std::fs::File::create(&tmp)?;
    let mut w = StreamWriter {
        out: BufWriter::new(&out),
        hasher: blake3::Hasher::new(),
        written: 0,
    };
    w.put(SNAPSHOT_MAGIC)?;
    w.put(&SNAPSHOT_VERSION.to_be_bytes())?;
    let json = serde_json::to_vec(&meta)?;
    w.put_len32(json.len())?;
    w.put(&json)?;
    let mut buf = vec![0u8; 64 << 10];
    let mut left = body;
    while left > 0 {
        let n = buf.len().min(left as usize);
        r.fill(&mut buf[..n])?;
        w.put(&buf[..n])?;
        left -= n as u64;
    }
    if &r.array::<8>()? != SNAPSHOT_TRAILER {
        return Err(StoreError::corrupt(LWHAT, "bad trailer"));
    }
    w.finish()?;
    out.sync_all()?;
    drop(out);
    publish(dir, &tmp, SNAPSHOT_FILE)?;
    guard.armed = false;
    std::fs::remove_file(&legacy)?;
    std::fs::File::open(dir)?.sync_all()?;
    tracing::info!(snapshot = %smeta, "snapshot file upgraded to stream version 2");
    Ok(())
}
