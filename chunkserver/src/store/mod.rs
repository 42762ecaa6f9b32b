//! The durable shard store: shard files spread over one or more data
//! directories (disks), an in-memory index, verified reads and quarantine.
//!
//! On-disk layout of each data directory:
//!
//! ```text
//! <data-dir>/LOCK                       flock'ed while a chunkserver uses it
//! <data-dir>/disk-id                    this directory's identity (see below)
//! <data-dir>/shards/<2 hex>/<2 hex>/<id> shard files (see crate::format)
//! <data-dir>/shards/<2 hex>/<2 hex>/.tmp-<id>-<rand>  writes in progress
//! <data-dir>/quarantine/<id>.<unix-nanos> shards that failed verification
//! ```
//!
//! The two fan-out levels are the first four hex characters of the shard id;
//! the file name is the whole 32-character id, the only user input that ever
//! becomes part of a path (and only after strict validation by
//! [`ShardId`]'s parser).
//!
//! A write goes to a temp file in the shard's final directory, is hashed
//! while streamed, fsynced, checked against its declared length and BLAKE3,
//! renamed into place and the directory fsynced. A drop guard removes the
//! temp file on any error or cancellation, and temp files left by a crash
//! are removed at startup, so after a crash a shard is either absent or
//! whole. A read verifies the payload hash before returning any byte; a
//! shard that fails is renamed into `quarantine/` (never deleted) and
//! recorded for the scrubber and the heartbeat.
//!
//! `disk-id` (format version 1) holds a UUID v4 in ASCII (36 characters,
//! hyphenated, lowercase, no newline), created once when the directory is
//! first opened without one, written temp file + fsync + rename + fsync
//! of the directory, and never changed after. It is reported in every
//! heartbeat: a data directory whose identity changed or vanished is a new,
//! empty disk, and the metadata leader then checks that the chunkserver
//! still holds every shard placed on it (`cairn_metadata::absent`).
//!
//! A shard file's mtime is its age for orphan garbage collection: set when
//! it is written and reset when an identical PUT finds it already stored
//! (see [`Store::list_with_age`] and `cairn_metadata::orphans`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::{self, HeaderError, ShardMeta, HEADER_LEN};
use crate::ids::ShardId;

mod disk;
mod inner;
mod writer;

pub use disk::DISK_ID_FILE;
use disk::*;
pub use writer::ShardWriter;
use writer::*;

/// Default largest shard payload accepted: 64 MiB is 64 times the default
/// shard size, room for larger stripes, while a whole shard can still be
/// read into memory and verified before any byte is served.
pub const DEFAULT_MAX_SHARD_SIZE: u64 = 64 << 20;

/// Writes are buffered and flushed to disk (and hashed) in pieces of this
/// size: large enough to amortise a blocking-pool hop, small enough to
/// keep the memory of a streaming PUT bounded.
const WRITE_FLUSH: usize = 1 << 20;

/// Corruption events kept until someone takes them; older ones are
/// dropped (and counted) so a failing disk cannot exhaust memory.
const MAX_CORRUPT_EVENTS: usize = 4096;

/// Prefix of temp files; never a valid shard id, so never confused with one.
const TMP_PREFIX: &str = ".tmp-";

/// Free space a data directory keeps in reserve: writes that would cut into
/// it are refused with [`Error::DiskFull`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Reserve {
    /// The smaller of 5% of the file system's capacity and 1 GiB.
    #[default]
    Auto,
    /// A percentage (0 to 100) of the file system's capacity.
    Percent(f64),
    /// An absolute number of bytes.
    Bytes(u64),
}

impl Reserve {
    /// The reserve in bytes on a file system of `capacity` bytes.
    pub fn bytes_for(&self, capacity: u64) -> u64 {
        match *self {
            Reserve::Auto => (capacity / 20).min(1 << 30),
            // Truncation is fine: a reserve is approximate by nature.
            Reserve::Percent(p) => (capacity as f64 * p / 100.0) as u64,
            Reserve::Bytes(b) => b,
        }
    }
}

impl fmt::Display for Reserve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reserve::Auto => f.write_str("auto"),
            Reserve::Percent(p) => write!(f, "{p}%"),
            Reserve::Bytes(b) => write!(f, "{b}"),
        }
    }
}

impl FromStr for Reserve {
    type Err = Error;

    /// Parses `auto`, `5%`, `2.5%`, `1GiB`, `500MiB`, `1048576`, `10G`.
    /// Units are binary (`K`/`KiB` = 1024) or decimal (`KB` = 1000).
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let bad = || {
            Error::InvalidParams(format!(
                "invalid reserve {s:?}: expected auto, a percentage like 5%, or a size like 1GiB"
            ))
        };
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Reserve::Auto);
        }
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&p) {
                return Err(bad());
            }
            return Ok(Reserve::Percent(p));
        }
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "K" | "KiB" => 1 << 10,
            "M" | "MiB" => 1 << 20,
            "G" | "GiB" => 1 << 30,
            "T" | "TiB" => 1 << 40,
            "P" | "PiB" => 1 << 50,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            _ => return Err(bad()),
        };
        n.checked_mul(mult).map(Reserve::Bytes).ok_or_else(bad)
    }
}

/// How a [`Store`] is set up.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Data directories, one per disk. At least one; no duplicates.
    pub data_dirs: Vec<PathBuf>,
    /// Free space kept in reserve on each.
    pub reserve: Reserve,
    /// Largest shard payload accepted, in bytes.
    pub max_shard_size: u64,
}

impl StoreConfig {
    /// A config over `data_dirs` with the default reserve and size limit.
    pub fn new(data_dirs: Vec<PathBuf>) -> Self {
        StoreConfig {
            data_dirs,
            reserve: Reserve::Auto,
            max_shard_size: DEFAULT_MAX_SHARD_SIZE,
        }
    }
}

/// What a successful put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The shard is new and now durable.
    Created,
    /// An identical shard (same metadata and hash) was already stored.
    AlreadyStored,
}

/// A shard that failed verification and was set aside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorruptEvent {
    /// The shard.
    pub id: ShardId,
    /// Data directory it was on.
    pub disk: PathBuf,
    /// What was wrong.
    pub reason: String,
    /// Where the file was moved, if the move succeeded.
    pub quarantined_to: Option<PathBuf>,
    /// When it was detected, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

/// Space and usage of one data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStats {
    /// The data directory.
    pub path: PathBuf,
    /// File-system capacity in bytes.
    pub capacity: u64,
    /// Bytes available to new writes (before the reserve is taken off).
    pub free: u64,
    /// Bytes kept in reserve.
    pub reserve: u64,
    /// Bytes taken by shard files (headers included).
    pub used_by_shards: u64,
    /// Shards stored.
    pub shard_count: u64,
    /// Why the directory was taken out of service (its device failed a
    /// read, write or fsync), or `None` while it serves. A failed directory
    /// reports no capacity and no shards.
    #[serde(default)]
    pub failed: Option<String>,
}

/// The durable shard store. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("disks", &self.inner.disks.len())
            .finish()
    }
}

struct Inner {
    disks: Vec<Disk>,
    max_shard_size: u64,
    state: Mutex<State>,
    corrupt: Mutex<CorruptLog>,
    /// Fan-out directories known to exist durably.
    known_dirs: Mutex<HashSet<PathBuf>>,
}

struct Disk {
    root: PathBuf,
    /// The identity from `disk-id`.
    identity: String,
    shards: PathBuf,
    quarantine: PathBuf,
    reserve: Reserve,
    /// Held (flock'ed) for the life of the store.
    _lock: File,
}

#[derive(Default)]
struct State {
    index: BTreeMap<ShardId, Entry>,
    /// Shards being written, with their declared hash.
    writing: HashMap<ShardId, blake3::Hash>,
    usage: Vec<Usage>,
    /// Per data directory: why it was taken out of service, if it was.
    failed: Vec<Option<String>>,
    next_gen: u64,
}

#[derive(Clone, Copy)]
struct Entry {
    disk: usize,
    file_len: u64,
    /// Distinguishes successive files of the same id (delete, then put).
    gen: u64,
}

#[derive(Default, Clone, Copy)]
struct Usage {
    /// Declared bytes of writes in flight, not yet visible to statvfs.
    pending: u64,
    used: u64,
    count: u64,
}

#[derive(Default)]
struct CorruptLog {
    events: VecDeque<CorruptEvent>,
    dropped: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind;
    // keep serving rather than cascading the panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs blocking file I/O off the reactor.
async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(Error::io("blocking task failed", std::io::Error::other(e))),
    }
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("fsync directory {}", dir.display()), e))
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating if needed) the data directories: takes each one's
    /// lock, removes temp files left by a crash and indexes the shards.
    pub async fn open(cfg: StoreConfig) -> Result<Store> {
        blocking(move || Store::open_blocking(cfg)).await
    }

    fn open_blocking(cfg: StoreConfig) -> Result<Store> {
        if cfg.data_dirs.is_empty() {
            return Err(Error::InvalidParams(
                "at least one data directory is needed".into(),
            ));
        }
        let mut disks = Vec::new();
        let mut seen = HashSet::new();
        for dir in &cfg.data_dirs {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
            let root = dir
                .canonicalize()
                .map_err(|e| Error::io(format!("resolve {}", dir.display()), e))?;
            if !seen.insert(root.clone()) {
                return Err(Error::InvalidParams(format!(
                    "data directory {} given twice",
                    root.display()
                )));
            }
            let lock_path = root.join("LOCK");
            let lock_file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|e| Error::io(format!("open {}", lock_path.display()), e))?;
            rustix::fs::flock(
                &lock_file,
                rustix::fs::FlockOperation::NonBlockingLockExclusive,
            )
            .map_err(|e| {
                Error::io(
                    format!(
                        "lock {} (is another chunkserver using this directory?)",
                        lock_path.display()
                    ),
                    e.into(),
                )
            })?;
            let shards = root.join("shards");
            let quarantine = root.join("quarantine");
            for d in [&shards, &quarantine] {
                std::fs::create_dir_all(d)
                    .map_err(|e| Error::io(format!("create {}", d.display()), e))?;
            }
            fsync_dir(&root)?;
            let identity = disk_identity(&root)?;
            disks.push(Disk {
                identity,
                root,
                shards,
                quarantine,
                reserve: cfg.reserve,
                _lock: lock_file,
            });
        }
        let mut state = State {
            usage: vec![Usage::default(); disks.len()],
            failed: vec![None; disks.len()],
            ..State::default()
        };
        let mut known = HashSet::new();
        for (i, disk) in disks.iter().enumerate() {
            scan_disk(i, disk, &mut state, &mut known)?;
        }
        tracing::info!(
            shards = state.index.len(),
            disks = disks.len(),
            "shard store opened"
        );
        Ok(Store {
            inner: Arc::new(Inner {
                disks,
                max_shard_size: cfg.max_shard_size,
                state: Mutex::new(state),
                corrupt: Mutex::new(CorruptLog::default()),
                known_dirs: Mutex::new(known),
            }),
        })
    }

    /// Largest shard payload accepted.
    pub fn max_shard_size(&self) -> u64 {
        self.inner.max_shard_size
    }

    /// The data directories, in configuration order.
    pub fn data_dirs(&self) -> Vec<PathBuf> {
        self.inner.disks.iter().map(|d| d.root.clone()).collect()
    }

    /// The identity (`disk-id`) of each data directory, in configuration
    /// order.
    ///
    /// A failed directory is left out: to the metadata service its
    /// identity is gone, as if the disk were pulled, so the leader checks
    /// every shard it places here and the ones that were on the failed
    /// directory are reported lost and rebuilt (see `absent.rs` there).
    pub fn disk_identities(&self) -> Vec<String> {
        let st = lock(&self.inner.state);
        self.inner
            .disks
            .iter()
            .enumerate()
            .filter(|(i, _)| st.failed.get(*i).is_none_or(|f| f.is_none()))
            .map(|(_, d)| d.identity.clone())
            .collect()
    }

    /// The data directories taken out of service, with the reason.
    pub fn failed_dirs(&self) -> Vec<(PathBuf, String)> {
        let st = lock(&self.inner.state);
        self.inner
            .disks
            .iter()
            .zip(&st.failed)
            .filter_map(|(d, f)| f.as_ref().map(|f| (d.root.clone(), f.clone())))
            .collect()
    }

    /// Number of shards stored.
    pub fn shard_count(&self) -> usize {
        lock(&self.inner.state).index.len()
    }

    /// True when a shard with this id is stored (not verified).
    pub fn contains(&self, id: &ShardId) -> bool {
        lock(&self.inner.state).index.contains_key(id)
    }

    /// Payload length of a stored shard, from its file size (not verified).
    pub fn stored_len(&self, id: &ShardId) -> Option<u64> {
        lock(&self.inner.state)
            .index
            .get(id)
            .map(|e| e.file_len.saturating_sub(HEADER_LEN as u64))
    }

    /// Up to `limit` stored shard ids greater than `after`, in id order
    /// (the inventory, for garbage collection).
    pub fn list(&self, after: Option<ShardId>, limit: usize) -> Vec<ShardId> {
        use std::ops::Bound;
        let st = lock(&self.inner.state);
        let lower = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        st.index
            .range((lower, Bound::Unbounded))
            .take(limit)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Up to `limit` stored shards with ids greater than `after`, in id
    /// order, each with its age in milliseconds (since its file was last
    /// written or re-confirmed by an identical PUT): the inventory posted to
    /// the metadata service for orphan reconciliation. Shards deleted while
    /// listing are left out.
    pub async fn list_with_age(
        &self,
        after: Option<ShardId>,
        limit: usize,
    ) -> Result<Vec<(ShardId, u64)>> {
        let ids: Vec<(ShardId, Entry)> = {
            use std::ops::Bound;
            let st = lock(&self.inner.state);
            let lower = match after {
                Some(a) => Bound::Excluded(a),
                None => Bound::Unbounded,
            };
            st.index
                .range((lower, Bound::Unbounded))
                .take(limit)
                .map(|(id, e)| (*id, *e))
                .collect()
        };
        let inner = self.inner.clone();
        blocking(move || {
            let now = SystemTime::now();
            let mut out = Vec::with_capacity(ids.len());
            for (id, e) in ids {
                let path = inner.disks[e.disk].shard_path(&id);
                let modified = match std::fs::metadata(&path).and_then(|m| m.modified()) {
                    Ok(t) => t,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io(format!("stat {}", path.display()), e)),
                };
                // A file from the future (clock stepped back) counts as new.
                let age = now
                    .duration_since(modified)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                out.push((id, age));
            }
            Ok(out)
        })
        .await
    }

    /// Fully verifies one stored shard for the scrubber: header checksum,
    /// file length and payload BLAKE3. A corrupt or truncated shard is
    /// quarantined, a shard whose file vanished is dropped from the index;
    /// both are recorded as corruption events (reported by the heartbeat)
    /// and returned as [`Error::CorruptShard`]. [`Error::NoSuchShard`] means
    /// it was deleted meanwhile (nothing wrong). On success returns the
    /// payload length checked.
    pub async fn verify(&self, id: ShardId) -> Result<u64> {
        let entry = self.entry(id)?;
        let inner = self.inner.clone();
        let r = blocking(move || match inner.read_verified(id, entry) {
            Ok((meta, _)) => Ok(meta.len),
            Err(Error::NoSuchShard { .. }) => Err(inner.drop_missing(id, entry)),
            Err(e) => Err(e),
        })
        .await;
        self.inner.check_device(entry.disk, r)
    }

    /// Corruption events since the last call (oldest first), and how many
    /// older ones were dropped because nobody took them in time.
    pub fn take_corrupt_events(&self) -> (Vec<CorruptEvent>, u64) {
        let mut log = lock(&self.inner.corrupt);
        let dropped = std::mem::take(&mut log.dropped);
        (log.events.drain(..).collect(), dropped)
    }

    /// Stores `payload` as the shard `meta` describes (all in memory; the
    /// HTTP path streams with [`Store::begin_put`] instead).
    pub async fn put(&self, meta: ShardMeta, payload: Bytes) -> Result<PutOutcome> {
        match self.begin_put(meta).await? {
            PutStart::AlreadyStored => Ok(PutOutcome::AlreadyStored),
            PutStart::Write(mut w) => {
                w.write(payload).await?;
                w.finish().await?;
                Ok(PutOutcome::Created)
            }
        }
    }

    /// Starts writing the shard `meta` describes: checks the size limit,
    /// whether the id is already stored (identical: nothing to do;
    /// different: [`Error::Conflict`]) or being written ([`Error::Busy`]),
    /// picks the data directory with the most free space above its reserve
    /// ([`Error::DiskFull`] if none) and creates the temp file.
    pub async fn begin_put(&self, meta: ShardMeta) -> Result<PutStart> {
        meta.validate()?;
        if meta.len > self.inner.max_shard_size {
            return Err(Error::TooLarge {
                len: meta.len,
                limit: self.inner.max_shard_size,
            });
        }
        for _ in 0..3 {
            let inner = self.inner.clone();
            let m = meta.clone();
            match blocking(move || inner.try_begin(m)).await? {
                Begin::Reserved(guard) => {
                    let inner = self.inner.clone();
                    let m = meta.clone();
                    let disk = guard.disk;
                    let r = blocking(move || inner.create_temp(guard, m)).await;
                    let state = self.inner.check_device(disk, r)?;
                    return Ok(PutStart::Write(ShardWriter {
                        state: Some(Box::new(state)),
                        buf: Vec::new(),
                        buffered: 0,
                    }));
                }
                Begin::Exists(entry) => {
                    let inner = self.inner.clone();
                    let id = meta.id;
                    match blocking(move || inner.read_header(id, entry)).await {
                        Ok(stored) => {
                            return if stored == meta {
                                // The writer relies on this copy now: its
                                // age restarts, so orphan GC (which deletes
                                // only old unnamed shards) cannot take it
                                // while the writer's manifest commits.
                                let inner = self.inner.clone();
                                blocking(move || inner.touch(id, entry)).await?;
                                Ok(PutStart::AlreadyStored)
                            } else {
                                Err(Error::Conflict {
                                    id: meta.id,
                                    reason: describe_difference(&stored, &meta),
                                })
                            };
                        }
                        // Deleted or quarantined meanwhile: try again.
                        Err(Error::NoSuchShard { .. }) | Err(Error::CorruptShard { .. }) => {
                            continue
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Err(Error::Busy { id: meta.id })
    }

    /// Reads and verifies a whole shard: its header, length and payload
    /// BLAKE3 are checked before any byte is returned. A shard that fails is
    /// quarantined and reported as [`Error::CorruptShard`].
    pub async fn get(&self, id: ShardId) -> Result<(ShardMeta, Bytes)> {
        let entry = self.entry(id)?;
        let inner = self.inner.clone();
        let r = blocking(move || inner.read_verified(id, entry)).await;
        self.inner.check_device(entry.disk, r)
    }

    /// Reads a shard's header (checked by its own checksum, payload not
    /// read) and checks the file length against it.
    pub async fn head(&self, id: ShardId) -> Result<ShardMeta> {
        let entry = self.entry(id)?;
        let inner = self.inner.clone();
        let r = blocking(move || inner.read_header(id, entry)).await;
        self.inner.check_device(entry.disk, r)
    }

    /// Deletes a shard durably. [`Error::Busy`] while it is being written.
    pub async fn delete(&self, id: ShardId) -> Result<()> {
        let inner = self.inner.clone();
        blocking(move || inner.delete_blocking(id)).await
    }

    /// Space and usage of every data directory.
    pub async fn stats(&self) -> Result<Vec<DiskStats>> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut out = Vec::with_capacity(inner.disks.len());
            for (i, d) in inner.disks.iter().enumerate() {
                let failed = lock(&inner.state).failed.get(i).cloned().flatten();
                if let Some(reason) = failed {
                    out.push(DiskStats {
                        path: d.root.clone(),
                        capacity: 0,
                        free: 0,
                        reserve: 0,
                        used_by_shards: 0,
                        shard_count: 0,
                        failed: Some(reason),
                    });
                    continue;
                }
                let space = inner.check_device(i, statvfs(&d.root))?;
                let usage = lock(&inner.state).usage[i];
                out.push(DiskStats {
                    path: d.root.clone(),
                    capacity: space.capacity,
                    free: space.avail,
                    reserve: d.reserve.bytes_for(space.capacity),
                    used_by_shards: usage.used,
                    shard_count: usage.count,
                    failed: None,
                });
            }
            Ok(out)
        })
        .await
    }

    fn entry(&self, id: ShardId) -> Result<Entry> {
        lock(&self.inner.state)
            .index
            .get(&id)
            .copied()
            .ok_or(Error::NoSuchShard { id })
    }

    /// Path of shard `id`'s file on `disk` (whether or not it exists).
    pub fn shard_path(&self, disk: usize, id: &ShardId) -> Option<PathBuf> {
        self.inner.disks.get(disk).map(|d| d.shard_path(id))
    }

    /// Which data directory (index into [`Store::data_dirs`]) holds `id`.
    pub fn disk_of(&self, id: &ShardId) -> Option<usize> {
        lock(&self.inner.state).index.get(id).map(|e| e.disk)
    }
}

/// The result of [`Store::begin_put`].
#[derive(Debug)]
pub enum PutStart {
    /// An identical shard is already stored; nothing to write.
    AlreadyStored,
    /// Stream the payload into this writer, then [`ShardWriter::finish`].
    Write(ShardWriter),
}

enum Begin {
    Reserved(TempGuard),
    Exists(Entry),
}

fn describe_difference(stored: &ShardMeta, new: &ShardMeta) -> String {
    if stored.blake3 != new.blake3 {
        format!(
            "stored BLAKE3 {} differs from {}",
            stored.blake3.to_hex(),
            new.blake3.to_hex()
        )
    } else {
        format!(
            "stored as index {} of stripe {} ({}), not index {} of stripe {} ({})",
            stored.index, stored.stripe, stored.params, new.index, new.stripe, new.params
        )
    }
}

#[cfg(test)]
mod tests;
