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

/// Name of a data directory's identity file.
pub const DISK_ID_FILE: &str = "disk-id";

/// A random UUID v4, hyphenated lowercase.
fn new_uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Reads the identity of the data directory `root`, creating it durably
/// when absent (see the module docs). An unreadable or malformed file is an
/// error: silently replacing it would hide a swapped disk.
fn disk_identity(root: &Path) -> Result<String> {
    let path = root.join(DISK_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let id = s.trim();
            let ok = id.len() == 36
                && id
                    .bytes()
                    .all(|c| c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
            if !ok {
                return Err(Error::InvalidParams(format!(
                    "{} does not hold a UUID: {id:?}",
                    path.display()
                )));
            }
            Ok(id.to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = new_uuid_v4();
            let tmp = root.join(format!("{DISK_ID_FILE}.tmp"));
            let write = || -> std::io::Result<()> {
                let mut f = File::create(&tmp)?;
                f.write_all(id.as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)
            };
            if let Err(e) = write() {
                let _ = std::fs::remove_file(&tmp);
                return Err(Error::io(format!("write {}", path.display()), e));
            }
            fsync_dir(root)?;
            tracing::info!(dir = %root.display(), identity = %id, "new data directory");
            Ok(id)
        }
        Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Space {
    capacity: u64,
    avail: u64,
}

fn statvfs(path: &Path) -> Result<Space> {
    let s = rustix::fs::statvfs(path)
        .map_err(|e| Error::io(format!("statvfs {}", path.display()), e.into()))?;
    Ok(Space {
        capacity: s.f_blocks.saturating_mul(s.f_frsize),
        avail: s.f_bavail.saturating_mul(s.f_frsize),
    })
}

fn is_hex2(s: &str) -> bool {
    s.len() == 2 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
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

impl Disk {
    fn shard_dir(&self, id: &ShardId) -> PathBuf {
        let hex = id.to_hex();
        self.shards.join(&hex[0..2]).join(&hex[2..4])
    }

    fn shard_path(&self, id: &ShardId) -> PathBuf {
        self.shard_dir(id).join(id.to_hex())
    }
}

/// Indexes one disk's shards and removes its stale temp files.
fn scan_disk(
    disk_no: usize,
    disk: &Disk,
    state: &mut State,
    known: &mut HashSet<PathBuf>,
) -> Result<()> {
    let read =
        |p: &Path| std::fs::read_dir(p).map_err(|e| Error::io(format!("scan {}", p.display()), e));
    let mut removed = 0usize;
    for l1 in read(&disk.shards)? {
        let l1 = l1.map_err(|e| Error::io("scan", e))?;
        let n1 = l1.file_name();
        let Some(n1) = n1.to_str().filter(|n| is_hex2(n)) else {
            tracing::warn!(path = %l1.path().display(), "ignoring unexpected entry in shard directory");
            continue;
        };
        if !l1.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        for l2 in read(&l1.path())? {
            let l2 = l2.map_err(|e| Error::io("scan", e))?;
            let n2 = l2.file_name();
            let Some(n2) = n2.to_str().filter(|n| is_hex2(n)) else {
                tracing::warn!(path = %l2.path().display(), "ignoring unexpected entry in shard directory");
                continue;
            };
            if !l2.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let dir = l2.path();
            let mut dir_changed = false;
            for f in read(&dir)? {
                let f = f.map_err(|e| Error::io("scan", e))?;
                let name = f.file_name();
                let Some(name) = name.to_str() else {
                    tracing::warn!(path = %f.path().display(), "ignoring non-UTF-8 file name");
                    continue;
                };
                if name.starts_with(TMP_PREFIX) {
                    std::fs::remove_file(f.path())
                        .map_err(|e| Error::io(format!("remove {}", f.path().display()), e))?;
                    removed += 1;
                    dir_changed = true;
                    continue;
                }
                let id = match name.parse::<ShardId>() {
                    Ok(id) if name[0..2] == *n1 && name[2..4] == *n2 => id,
                    _ => {
                        tracing::warn!(path = %f.path().display(), "ignoring unexpected file in shard directory");
                        continue;
                    }
                };
                let len = f
                    .metadata()
                    .map_err(|e| Error::io(format!("stat {}", f.path().display()), e))?
                    .len();
                if let Some(other) = state.index.get(&id) {
                    tracing::warn!(%id, first = other.disk, second = disk_no,
                        "shard stored on two data directories; using the first");
                    continue;
                }
                let gen = state.next_gen;
                state.next_gen += 1;
                state.index.insert(
                    id,
                    Entry {
                        disk: disk_no,
                        file_len: len,
                        gen,
                    },
                );
                state.usage[disk_no].used += len;
                state.usage[disk_no].count += 1;
            }
            if dir_changed {
                fsync_dir(&dir)?;
            }
            known.insert(dir);
        }
    }
    if removed > 0 {
        tracing::info!(disk = %disk.root.display(), removed, "removed temp files of interrupted writes");
    }
    Ok(())
}

/// True for the errors that mean the device under a data directory is
/// failing, not merely full: EIO, EROFS (a file system remounted read-only
/// after errors), ENXIO, ENODEV, EUCLEAN (corrupted file system).
fn is_device_failure(e: &Error) -> bool {
    const EIO: i32 = 5;
    const ENXIO: i32 = 6;
    const ENODEV: i32 = 19;
    const EROFS: i32 = 30;
    const EUCLEAN: i32 = 117;
    match e {
        Error::Io { source, .. } => matches!(
            source.raw_os_error(),
            Some(EIO | ENXIO | ENODEV | EROFS | EUCLEAN)
        ),
        _ => false,
    }
}

impl Inner {
    fn is_failed(&self, disk: usize) -> bool {
        lock(&self.state)
            .failed
            .get(disk)
            .is_some_and(|f| f.is_some())
    }

    /// Passes `r` through; if it is a device failure on `disk`, first takes
    /// that directory out of service.
    fn check_device<T>(&self, disk: usize, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            if is_device_failure(e) {
                self.fail_disk(disk, e);
            }
        }
        r
    }

    /// Takes data directory `disk` out of service after its device failed:
    /// no more placements on it, its shards leave the index (reads of them
    /// answer "no such shard", so clients decode from parity) and its
    /// identity leaves the heartbeat, so the metadata service checks every
    /// shard it placed here and rebuilds the ones that were on this
    /// directory. The files are not touched. Serving the other directories
    /// goes on. Undone only by a restart (after the operator replaced or
    /// repaired the disk).
    fn fail_disk(&self, disk: usize, e: &Error) {
        let Some(d) = self.disks.get(disk) else {
            return;
        };
        let mut st = lock(&self.state);
        match st.failed.get_mut(disk) {
            Some(slot @ None) => *slot = Some(e.to_string()),
            _ => return,
        }
        let before = st.index.len();
        st.index.retain(|_, entry| entry.disk != disk);
        let dropped = before - st.index.len();
        if let Some(u) = st.usage.get_mut(disk) {
            u.used = 0;
            u.count = 0;
        }
        drop(st);
        tracing::error!(
            dir = %d.root.display(),
            error = %e,
            shards = dropped,
            "data directory failed: taken out of service; its shards will be rebuilt elsewhere"
        );
    }

    /// Decides, atomically under the state lock, whether a put may go ahead;
    /// if so reserves the id and the space on the chosen disk.
    fn try_begin(self: Arc<Self>, meta: ShardMeta) -> Result<Begin> {
        let need = HEADER_LEN as u64 + meta.len;
        // A directory whose device fails statvfs is taken out of service;
        // None marks it (and one already failed) as no candidate.
        let spaces: Vec<Option<Space>> = (0..self.disks.len())
            .map(|i| {
                if self.is_failed(i) {
                    return None;
                }
                self.check_device(i, statvfs(&self.disks[i].root)).ok()
            })
            .collect();
        let mut st = lock(&self.state);
        if let Some(h) = st.writing.get(&meta.id) {
            return Err(if *h == meta.blake3 {
                Error::Busy { id: meta.id }
            } else {
                Error::Conflict {
                    id: meta.id,
                    reason: "a write with different content is in progress".into(),
                }
            });
        }
        if let Some(e) = st.index.get(&meta.id) {
            return Ok(Begin::Exists(*e));
        }
        // Most free space wins; on a tie (e.g. directories sharing a file
        // system) the one holding fewer shard bytes, so writes spread.
        let mut best: Option<(usize, u64, u64)> = None;
        let mut closest = String::new();
        for (i, (d, s)) in self.disks.iter().zip(&spaces).enumerate() {
            let Some(s) = s.as_ref().filter(|_| st.failed[i].is_none()) else {
                if closest.is_empty() {
                    closest = format!("{} is out of service", d.root.display());
                }
                continue;
            };
            let free = s.avail.saturating_sub(st.usage[i].pending);
            let reserve = d.reserve.bytes_for(s.capacity);
            if free >= need.saturating_add(reserve) {
                let used = st.usage[i].used;
                if best.is_none_or(|(_, f, u)| free > f || (free == f && used < u)) {
                    best = Some((i, free, used));
                }
            } else if closest.is_empty() {
                closest = format!(
                    "{} has {free} bytes free, reserve is {reserve} bytes",
                    d.root.display()
                );
            }
        }
        let Some((disk, _, _)) = best else {
            return Err(Error::DiskFull(format!(
                "no data directory can take {need} more bytes above its reserve ({closest})"
            )));
        };
        st.writing.insert(meta.id, meta.blake3);
        st.usage[disk].pending += need;
        drop(st);
        Ok(Begin::Reserved(TempGuard {
            store: self.clone(),
            id: meta.id,
            disk,
            need,
            tmp: None,
            reserved: true,
        }))
    }

    /// Makes sure the fan-out directory of `id` on `disk` exists durably.
    fn ensure_dir(&self, disk: usize, id: &ShardId) -> Result<PathBuf> {
        let d = &self.disks[disk];
        let dir = d.shard_dir(id);
        if lock(&self.known_dirs).contains(&dir) {
            return Ok(dir);
        }
        let mut parent = d.shards.clone();
        let hex = id.to_hex();
        for part in [&hex[0..2], &hex[2..4]] {
            let child = parent.join(part);
            match std::fs::create_dir(&child) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(format!("create {}", child.display()), e)),
            }
            // Always fsync: a racing creator may have made the directory
            // without having synced its parent yet.
            fsync_dir(&parent)?;
            parent = child;
        }
        lock(&self.known_dirs).insert(dir.clone());
        Ok(dir)
    }

    fn create_temp(self: Arc<Self>, mut guard: TempGuard, meta: ShardMeta) -> Result<WriterState> {
        let dir = self.ensure_dir(guard.disk, &meta.id)?;
        let tmp = dir.join(format!(
            "{TMP_PREFIX}{}-{:016x}",
            meta.id,
            rand::random::<u64>()
        ));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
        guard.tmp = Some(tmp.clone());
        file.write_all(&format::encode_header(&meta))
            .map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
        Ok(WriterState {
            file,
            hasher: blake3::Hasher::new(),
            written: 0,
            final_path: dir.join(meta.id.to_hex()),
            dir,
            meta,
            guard,
        })
    }

    /// Reads a shard's header and checks the file length against it.
    fn read_header(&self, id: ShardId, entry: Entry) -> Result<ShardMeta> {
        let path = self.disks[entry.disk].shard_path(&id);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoSuchShard { id })
            }
            Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
        };
        let file_len = f
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
            .len();
        let mut buf = Vec::with_capacity(HEADER_LEN);
        (&mut f)
            .take(HEADER_LEN as u64)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        let meta = self.check_header(id, entry, &path, &buf)?;
        if file_len != HEADER_LEN as u64 + meta.len {
            return Err(self.quarantine(
                id,
                entry,
                format!(
                    "file is {file_len} bytes, header says {} + {}",
                    HEADER_LEN, meta.len
                ),
            ));
        }
        Ok(meta)
    }

    fn check_header(
        &self,
        id: ShardId,
        entry: Entry,
        path: &Path,
        buf: &[u8],
    ) -> Result<ShardMeta> {
        match format::decode_header(buf) {
            Ok(meta) if meta.id == id => Ok(meta),
            Ok(meta) => Err(self.quarantine(id, entry, format!("header names shard {}", meta.id))),
            Err(HeaderError::Corrupt(reason)) => Err(self.quarantine(id, entry, reason)),
            Err(HeaderError::Unsupported(version)) => {
                tracing::error!(%id, version, path = %path.display(), "shard has an unsupported format version");
                Err(Error::UnsupportedFormat { id, version })
            }
        }
    }

    fn read_verified(&self, id: ShardId, entry: Entry) -> Result<(ShardMeta, Bytes)> {
        let path = self.disks[entry.disk].shard_path(&id);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoSuchShard { id })
            }
            Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
        };
        let file_len = f
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
            .len();
        let limit = HEADER_LEN as u64 + self.max_shard_size;
        if file_len > limit {
            return Err(self.quarantine(
                id,
                entry,
                format!("file is {file_len} bytes, more than the {limit}-byte maximum"),
            ));
        }
        // file_len <= limit, which fits in memory by configuration.
        let mut buf = Vec::with_capacity(file_len as usize);
        (&mut f)
            .take(limit)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        let meta = self.check_header(id, entry, &path, &buf)?;
        // check_header succeeded, so buf holds at least a whole header.
        if let Err(reason) = format::verify_payload(&meta, buf.get(HEADER_LEN..).unwrap_or(&[])) {
            return Err(self.quarantine(id, entry, reason));
        }
        Ok((meta, Bytes::from(buf).slice(HEADER_LEN..)))
    }

    /// Moves a failed shard into the quarantine directory, drops it from
    /// the index, records the event and returns the error to report.
    fn quarantine(&self, id: ShardId, entry: Entry, reason: String) -> Error {
        let disk = &self.disks[entry.disk];
        let path = disk.shard_path(&id);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dest = disk.quarantine.join(format!("{id}.{nanos}"));
        let mut moved = None;
        {
            let mut st = lock(&self.state);
            // Only if the index still points at the file we read: a delete
            // and a new put of the same id may have replaced it meanwhile.
            if st.index.get(&id).is_some_and(|e| e.gen == entry.gen) {
                match std::fs::rename(&path, &dest) {
                    Ok(()) => moved = Some(dest.clone()),
                    Err(e) => {
                        tracing::error!(%id, error = %e, "cannot move corrupt shard to quarantine")
                    }
                }
                if moved.is_some() {
                    st.index.remove(&id);
                    let u = &mut st.usage[entry.disk];
                    u.used = u.used.saturating_sub(entry.file_len);
                    u.count = u.count.saturating_sub(1);
                }
            }
        }
        if moved.is_some() {
            for d in [&disk.quarantine, &disk.shard_dir(&id)] {
                if let Err(e) = fsync_dir(d) {
                    tracing::warn!(error = %e, "fsync after quarantine failed");
                }
            }
        }
        tracing::warn!(%id, disk = %disk.root.display(), %reason, quarantined_to = ?moved, "corrupt shard");
        self.record_corrupt(CorruptEvent {
            id,
            disk: disk.root.clone(),
            reason: reason.clone(),
            quarantined_to: moved,
            at_unix_ms: now_unix_ms(),
        });
        Error::CorruptShard { id, reason }
    }

    /// Restarts the age of an existing shard file (sets its mtime to now).
    fn touch(&self, id: ShardId, entry: Entry) -> Result<()> {
        let path = self.disks[entry.disk].shard_path(&id);
        let f = match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoSuchShard { id })
            }
            Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
        };
        f.set_modified(SystemTime::now())
            .map_err(|e| Error::io(format!("set mtime of {}", path.display()), e))
    }

    /// A shard in the index whose file is gone: drops it from the index (if
    /// the index still points at the same file generation; a concurrent
    /// delete removes file and entry together under the state lock) and
    /// records the event. Returns the error to report.
    fn drop_missing(&self, id: ShardId, entry: Entry) -> Error {
        let disk = &self.disks[entry.disk];
        {
            let mut st = lock(&self.state);
            if st.index.get(&id).is_none_or(|e| e.gen != entry.gen) {
                return Error::NoSuchShard { id };
            }
            // Checked under the lock: the file may have reappeared (a new
            // put of the same id commits under this lock too).
            if disk.shard_path(&id).exists() {
                return Error::NoSuchShard { id };
            }
            st.index.remove(&id);
            let u = &mut st.usage[entry.disk];
            u.used = u.used.saturating_sub(entry.file_len);
            u.count = u.count.saturating_sub(1);
        }
        let reason = "shard file is missing".to_string();
        tracing::warn!(%id, disk = %disk.root.display(), %reason, "missing shard");
        self.record_corrupt(CorruptEvent {
            id,
            disk: disk.root.clone(),
            reason: reason.clone(),
            quarantined_to: None,
            at_unix_ms: now_unix_ms(),
        });
        Error::CorruptShard { id, reason }
    }

    fn record_corrupt(&self, event: CorruptEvent) {
        let mut log = lock(&self.corrupt);
        if log.events.len() >= MAX_CORRUPT_EVENTS {
            log.events.pop_front();
            log.dropped += 1;
        }
        log.events.push_back(event);
    }

    fn delete_blocking(&self, id: ShardId) -> Result<()> {
        let dir;
        {
            let mut st = lock(&self.state);
            if st.writing.contains_key(&id) {
                return Err(Error::Busy { id });
            }
            let Some(entry) = st.index.get(&id).copied() else {
                return Err(Error::NoSuchShard { id });
            };
            let disk = &self.disks[entry.disk];
            let path = disk.shard_path(&id);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("remove {}", path.display()), e)),
            }
            st.index.remove(&id);
            let u = &mut st.usage[entry.disk];
            u.used = u.used.saturating_sub(entry.file_len);
            u.count = u.count.saturating_sub(1);
            dir = disk.shard_dir(&id);
        }
        fsync_dir(&dir)
    }
}

/// Holds a put's reservation (the id and the disk space) and its temp
/// file; releases both when dropped, unless the put committed.
struct TempGuard {
    store: Arc<Inner>,
    id: ShardId,
    disk: usize,
    need: u64,
    /// The temp file to remove on drop.
    tmp: Option<PathBuf>,
    reserved: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            match std::fs::remove_file(&tmp) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %tmp.display(), error = %e, "cannot remove temp file")
                }
            }
        }
        if self.reserved {
            let mut st = lock(&self.store.state);
            st.writing.remove(&self.id);
            let u = &mut st.usage[self.disk];
            u.pending = u.pending.saturating_sub(self.need);
        }
    }
}

struct WriterState {
    file: File,
    hasher: blake3::Hasher,
    written: u64,
    dir: PathBuf,
    final_path: PathBuf,
    meta: ShardMeta,
    guard: TempGuard,
}

/// Streams one shard's payload to its temp file. Dropping it before
/// [`ShardWriter::finish`] succeeds abandons the write and removes the
/// temp file.
pub struct ShardWriter {
    /// Boxed: the BLAKE3 hasher alone is ~2 KiB, and the state moves in
    /// and out of blocking tasks on every flush.
    state: Option<Box<WriterState>>,
    buf: Vec<Bytes>,
    buffered: usize,
}

impl fmt::Debug for ShardWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardWriter")
            .field("id", &self.state.as_ref().map(|s| s.meta.id))
            .field("buffered", &self.buffered)
            .finish()
    }
}

impl ShardWriter {
    fn state(&self) -> Result<&WriterState> {
        self.state.as_deref().ok_or_else(|| {
            Error::io(
                "shard writer",
                std::io::Error::other("writer already failed"),
            )
        })
    }

    /// Appends payload bytes. More bytes than declared is
    /// [`Error::BadDigest`].
    pub async fn write(&mut self, data: Bytes) -> Result<()> {
        let st = self.state()?;
        let total = st.written + self.buffered as u64 + data.len() as u64;
        if total > st.meta.len {
            return Err(Error::BadDigest(format!(
                "body is longer than the declared {} bytes",
                st.meta.len
            )));
        }
        self.buffered += data.len();
        self.buf.push(data);
        if self.buffered >= WRITE_FLUSH {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let Some(mut st) = self.state.take() else {
            return Err(Error::io(
                "shard writer",
                std::io::Error::other("writer already failed"),
            ));
        };
        let bufs = std::mem::take(&mut self.buf);
        self.buffered = 0;
        let (store, disk) = (st.guard.store.clone(), st.guard.disk);
        let r = blocking(move || {
            for b in &bufs {
                st.hasher.update(b);
                st.file.write_all(b).map_err(|e| {
                    Error::io(format!("write temp file for shard {}", st.meta.id), e)
                })?;
                st.written += b.len() as u64;
            }
            Ok(st)
        })
        .await;
        let st = store.check_device(disk, r)?;
        self.state = Some(st);
        Ok(())
    }

    /// Checks the declared length and BLAKE3, then makes the shard durable
    /// and visible: fsync, rename into place, fsync the directory, index.
    pub async fn finish(mut self) -> Result<()> {
        self.flush().await?;
        let Some(st) = self.state.take() else {
            return Err(Error::io(
                "shard writer",
                std::io::Error::other("writer already failed"),
            ));
        };
        if st.written != st.meta.len {
            return Err(Error::BadDigest(format!(
                "body is {} bytes, declared {}",
                st.written, st.meta.len
            )));
        }
        let actual = st.hasher.finalize();
        if actual != st.meta.blake3 {
            return Err(Error::BadDigest(format!(
                "payload BLAKE3 is {}, declared {}",
                actual.to_hex(),
                st.meta.blake3.to_hex()
            )));
        }
        // One blocking task does the whole commit, index update included,
        // so a cancelled request cannot leave a renamed file unindexed.
        let (store, disk) = (st.guard.store.clone(), st.guard.disk);
        let r = blocking(move || commit(st)).await;
        store.check_device(disk, r)
    }
}

fn commit(st: Box<WriterState>) -> Result<()> {
    let WriterState {
        file,
        final_path,
        dir,
        meta,
        mut guard,
        ..
    } = *st;
    let tmp = guard
        .tmp
        .clone()
        .ok_or_else(|| Error::io("commit", std::io::Error::other("no temp file")))?;
    file.sync_all()
        .map_err(|e| Error::io(format!("fsync {}", tmp.display()), e))?;
    drop(file);
    std::fs::rename(&tmp, &final_path)
        .map_err(|e| Error::io(format!("rename to {}", final_path.display()), e))?;
    guard.tmp = None;
    if let Err(e) = fsync_dir(&dir) {
        // Not durable: undo rather than acknowledge.
        let _ = std::fs::remove_file(&final_path);
        return Err(e);
    }
    let file_len = HEADER_LEN as u64 + meta.len;
    let mut s = lock(&guard.store.state);
    if s.failed.get(guard.disk).is_some_and(|f| f.is_some()) {
        // The directory failed while this shard was written: its fsync may
        // have "succeeded" on a dying device. Not acknowledged; the writer
        // places the shard elsewhere.
        drop(s);
        let _ = std::fs::remove_file(&final_path);
        return Err(Error::io(
            format!("commit {}", final_path.display()),
            std::io::Error::other("the data directory failed during the write"),
        ));
    }
    let gen = s.next_gen;
    s.next_gen += 1;
    s.index.insert(
        meta.id,
        Entry {
            disk: guard.disk,
            file_len,
            gen,
        },
    );
    s.writing.remove(&meta.id);
    let u = &mut s.usage[guard.disk];
    u.pending = u.pending.saturating_sub(guard.need);
    u.used += file_len;
    u.count += 1;
    guard.reserved = false;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::EcParams;
    use crate::ids::StripeId;

    fn meta_for(payload: &[u8]) -> ShardMeta {
        ShardMeta::for_payload(
            ShardId::random(),
            StripeId::random(),
            1,
            EcParams::default(),
            payload,
        )
    }

    async fn open(dirs: &[&Path], reserve: Reserve) -> Store {
        let mut cfg = StoreConfig::new(dirs.iter().map(|d| d.to_path_buf()).collect());
        cfg.reserve = reserve;
        cfg.max_shard_size = 4 << 20;
        Store::open(cfg).await.unwrap()
    }

    fn count_files(dir: &Path, pred: &dyn Fn(&str) -> bool) -> usize {
        let mut n = 0;
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else if pred(e.file_name().to_str().unwrap()) {
                    n += 1;
                }
            }
        }
        n
    }

    #[test]
    fn reserve_parse() {
        assert_eq!("5%".parse::<Reserve>().unwrap(), Reserve::Percent(5.0));
        assert_eq!("1GiB".parse::<Reserve>().unwrap(), Reserve::Bytes(1 << 30));
        assert_eq!("10G".parse::<Reserve>().unwrap(), Reserve::Bytes(10 << 30));
        assert_eq!("3MB".parse::<Reserve>().unwrap(), Reserve::Bytes(3_000_000));
        assert_eq!("123".parse::<Reserve>().unwrap(), Reserve::Bytes(123));
        assert_eq!("auto".parse::<Reserve>().unwrap(), Reserve::Auto);
        for bad in ["", "5%%", "101%", "-1", "1XB", "99999999999PiB", "GiB"] {
            assert!(bad.parse::<Reserve>().is_err(), "{bad} accepted");
        }
        assert_eq!(Reserve::Auto.bytes_for(100 << 30), 1 << 30);
        assert_eq!(Reserve::Auto.bytes_for(1000), 50);
    }

    #[tokio::test]
    async fn put_get_idempotent_conflict_delete() {
        let t = tempfile::tempdir().unwrap();
        let store = open(&[t.path()], Reserve::Bytes(0)).await;
        let payload = Bytes::from(vec![7u8; 3 << 20]);
        let meta = meta_for(&payload);
        assert_eq!(
            store.put(meta.clone(), payload.clone()).await.unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            store.put(meta.clone(), payload.clone()).await.unwrap(),
            PutOutcome::AlreadyStored
        );
        let (m, got) = store.get(meta.id).await.unwrap();
        assert_eq!(m, meta);
        assert_eq!(got, payload);
        assert_eq!(store.head(meta.id).await.unwrap(), meta);

        let mut other = meta_for(b"different");
        other.id = meta.id;
        assert!(matches!(
            store.put(other, Bytes::from_static(b"different")).await,
            Err(Error::Conflict { .. })
        ));
        let stats = store.stats().await.unwrap();
        assert_eq!(stats[0].shard_count, 1);
        assert_eq!(stats[0].used_by_shards, (3 << 20) + HEADER_LEN as u64);

        store.delete(meta.id).await.unwrap();
        assert!(matches!(
            store.get(meta.id).await,
            Err(Error::NoSuchShard { .. })
        ));
        assert!(matches!(
            store.delete(meta.id).await,
            Err(Error::NoSuchShard { .. })
        ));
        assert_eq!(store.stats().await.unwrap()[0].shard_count, 0);
    }

    #[tokio::test]
    async fn bad_digest_and_length_leave_nothing() {
        let t = tempfile::tempdir().unwrap();
        let store = open(&[t.path()], Reserve::Bytes(0)).await;
        let mut meta = meta_for(b"abc");
        meta.blake3 = blake3::hash(b"abd");
        assert!(matches!(
            store.put(meta.clone(), Bytes::from_static(b"abc")).await,
            Err(Error::BadDigest(_))
        ));
        let meta = meta_for(b"abcd");
        assert!(matches!(
            store.put(meta.clone(), Bytes::from_static(b"abc")).await,
            Err(Error::BadDigest(_))
        ));
        assert!(matches!(
            store.put(meta.clone(), Bytes::from_static(b"abcde")).await,
            Err(Error::BadDigest(_))
        ));
        let big = meta_for(&vec![0u8; (4 << 20) + 1]);
        assert!(matches!(
            store.begin_put(big).await,
            Err(Error::TooLarge { .. })
        ));
        assert_eq!(store.shard_count(), 0);
        assert_eq!(
            count_files(t.path(), &|n| n != "LOCK" && n != DISK_ID_FILE),
            0
        );
        // The reservation was released: the same id can be written now.
        assert_eq!(
            store.put(meta, Bytes::from_static(b"abcd")).await.unwrap(),
            PutOutcome::Created
        );
    }

    #[tokio::test]
    async fn concurrent_writer_of_same_id_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let store = open(&[t.path()], Reserve::Bytes(0)).await;
        let meta = meta_for(b"hello");
        let PutStart::Write(w) = store.begin_put(meta.clone()).await.unwrap() else {
            panic!("expected a writer");
        };
        assert!(matches!(
            store.begin_put(meta.clone()).await,
            Err(Error::Busy { .. })
        ));
        let mut other = meta_for(b"other");
        other.id = meta.id;
        assert!(matches!(
            store.begin_put(other).await,
            Err(Error::Conflict { .. })
        ));
        assert!(matches!(
            store.delete(meta.id).await,
            Err(Error::Busy { .. })
        ));
        drop(w);
        assert_eq!(count_files(t.path(), &|n| n.starts_with(TMP_PREFIX)), 0);
        store.put(meta, Bytes::from_static(b"hello")).await.unwrap();
    }

    #[tokio::test]
    async fn corruption_is_quarantined_and_reported() {
        let t = tempfile::tempdir().unwrap();
        let store = open(&[t.path()], Reserve::Bytes(0)).await;
        let mut ids = Vec::new();
        for _ in 0..3 {
            let payload = Bytes::from(vec![3u8; 1000]);
            let meta = meta_for(&payload);
            store.put(meta.clone(), payload).await.unwrap();
            ids.push(meta.id);
        }
        let path = |id: &ShardId| store.shard_path(0, id).unwrap();
        // Flip a payload byte.
        let mut b = std::fs::read(path(&ids[0])).unwrap();
        b[HEADER_LEN + 10] ^= 1;
        std::fs::write(path(&ids[0]), &b).unwrap();
        // Flip a header byte.
        let mut b = std::fs::read(path(&ids[1])).unwrap();
        b[50] ^= 1;
        std::fs::write(path(&ids[1]), &b).unwrap();
        // Truncate.
        let b = std::fs::read(path(&ids[2])).unwrap();
        std::fs::write(path(&ids[2]), &b[..b.len() - 1]).unwrap();

        assert!(matches!(
            store.get(ids[0]).await,
            Err(Error::CorruptShard { .. })
        ));
        assert!(matches!(
            store.head(ids[1]).await,
            Err(Error::CorruptShard { .. })
        ));
        assert!(matches!(
            store.get(ids[2]).await,
            Err(Error::CorruptShard { .. })
        ));
        for id in &ids {
            assert!(!path(id).exists());
            assert!(matches!(
                store.get(*id).await,
                Err(Error::NoSuchShard { .. })
            ));
        }
        assert_eq!(count_files(&t.path().join("quarantine"), &|_| true), 3);
        let (events, dropped) = store.take_corrupt_events();
        assert_eq!(dropped, 0);
        assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
        assert!(store.take_corrupt_events().0.is_empty());
        assert_eq!(store.shard_count(), 0);
    }

    #[tokio::test]
    async fn reopen_indexes_and_cleans_temp_files() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        let b = t.path().join("b");
        let mut ids = Vec::new();
        {
            let store = open(&[&a, &b], Reserve::Bytes(0)).await;
            for i in 0..20u8 {
                let payload = Bytes::from(vec![i; 100]);
                let meta = meta_for(&payload);
                store.put(meta.clone(), payload).await.unwrap();
                ids.push(meta.id);
            }
            // A second store on the same directories is refused while the
            // first holds the lock.
            assert!(Store::open(StoreConfig::new(vec![a.clone()]))
                .await
                .is_err());
            // Leave an interrupted write behind, as a crash would.
            let dir = store.shard_path(0, &ids[0]).unwrap();
            let dir = dir.parent().unwrap();
            std::fs::write(dir.join(format!("{TMP_PREFIX}{}-0", ids[0])), b"partial").unwrap();
        }
        assert_eq!(count_files(t.path(), &|n| n.starts_with(TMP_PREFIX)), 1);
        let store = open(&[&a, &b], Reserve::Bytes(0)).await;
        assert_eq!(count_files(t.path(), &|n| n.starts_with(TMP_PREFIX)), 0);
        assert_eq!(store.shard_count(), 20);
        for id in &ids {
            store.get(*id).await.unwrap();
        }
        // Both directories sit on one file system, so free space ties and
        // writes spread by bytes held.
        let stats = store.stats().await.unwrap();
        assert_eq!(
            stats.iter().map(|s| s.shard_count).collect::<Vec<_>>(),
            vec![10, 10]
        );
        // Pagination walks every id once, in order.
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = store.list(after, 7);
            if page.is_empty() {
                break;
            }
            after = page.last().copied();
            all.extend(page);
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(all, sorted);
    }

    #[tokio::test]
    async fn reserve_refuses_writes() {
        let t = tempfile::tempdir().unwrap();
        let store = open(&[t.path()], Reserve::Percent(100.0)).await;
        let meta = meta_for(b"x");
        match store.put(meta, Bytes::from_static(b"x")).await {
            Err(e @ Error::DiskFull(_)) => {
                assert_eq!(e.http_status().0.as_u16(), 507);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            count_files(t.path(), &|n| n != "LOCK" && n != DISK_ID_FILE),
            0
        );
    }

    #[tokio::test]
    async fn failed_device_takes_its_directory_out_of_service() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store = open(&[a.path(), b.path()], Reserve::Bytes(0)).await;
        let mut on = [Vec::new(), Vec::new()];
        for i in 0..16u8 {
            let payload = Bytes::from(vec![i; 1000 + i as usize]);
            let meta = meta_for(&payload);
            store.put(meta.clone(), payload).await.unwrap();
            on[store.disk_of(&meta.id).unwrap()].push(meta.id);
        }
        assert!(!on[0].is_empty() && !on[1].is_empty(), "writes spread");
        let ids = store.disk_identities();
        assert_eq!(ids.len(), 2);

        // Not a device failure: nothing happens.
        let full = Error::io("write", std::io::Error::from_raw_os_error(28));
        let _ = store.inner.check_device::<()>(0, Err(full));
        assert!(store.failed_dirs().is_empty());
        // EIO: directory 0 leaves service.
        let eio = Error::io("fsync", std::io::Error::from_raw_os_error(5));
        let _ = store.inner.check_device::<()>(0, Err(eio));
        let failed = store.failed_dirs();
        assert_eq!(failed.len(), 1);
        assert!(failed[0].1.contains("fsync"), "{failed:?}");
        for id in &on[0] {
            assert!(!store.contains(id));
            assert!(matches!(
                store.get(*id).await,
                Err(Error::NoSuchShard { .. })
            ));
        }
        for id in &on[1] {
            assert!(store.get(*id).await.is_ok(), "the other directory serves");
        }
        assert_eq!(store.disk_identities(), vec![ids[1].clone()]);
        let stats = store.stats().await.unwrap();
        assert!(stats[0].failed.is_some());
        assert_eq!((stats[0].capacity, stats[0].shard_count), (0, 0));
        assert_eq!(stats[1].shard_count, on[1].len() as u64);
        // New shards go to the directory in service only.
        for i in 0..8u8 {
            let payload = Bytes::from(vec![i; 10]);
            let meta = meta_for(&payload);
            store.put(meta.clone(), payload).await.unwrap();
            assert_eq!(store.disk_of(&meta.id), Some(1));
        }
        // The files on the failed directory were left alone.
        assert_eq!(count_files(a.path(), &|n| n.len() == 32), on[0].len(),);
    }
}
