//! The scrubber: a background [`Worker`] that walks every stored shard, in
//! shard-id order from a persisted cursor, and fully re-verifies it.
//!
//! # What is checked
//! Each shard is read whole and checked by [`Store::verify`]: the header
//! checksum, the file length against the header, and the payload BLAKE3
//! against the header's. The header hash is the one the manifest recorded:
//! the store refuses a PUT whose payload does not hash to the declared
//! BLAKE3 (which the client took from the manifest it commits), and a
//! rebuilt shard is stored the same way, so a shard that matches its header
//! matches its manifest. A shard that is corrupt or truncated is
//! quarantined (renamed into `quarantine/`, never deleted); one whose file
//! vanished is dropped from the index. Both become corruption events, which
//! the heartbeat reports as `bad_shards` so the metadata leader plans their
//! repair.
//!
//! # Throttling
//! One shard at a time, so client reads never queue behind more than one
//! scrub read. Two knobs, both changeable at runtime through
//! `POST /v1/admin/scrub`:
//! - a throughput cap in MB/s (`max_mbps`, 0 = none), a token bucket with
//!   no burst: after reading `b` bytes the next read waits until `b / cap`
//!   seconds have passed since the previous one started;
//! - a tranquility factor: after a shard that took `t` of work the scrubber
//!   sleeps `t * tranquility` (Garage's tranquilizer), so it uses at most
//!   `1 / (1 + tranquility)` of one disk's time.
//!
//! The longer of the two waits applies.
//!
//! # Passes
//! A pass starts when the last full pass finished at least `period` ago
//! (default 7 days; a chunkserver that never finished one starts at once)
//! or on `start`. `pause` stops walking (persisted, so a restart stays
//! paused) until `resume`.
//!
//! # The state file (format version 1)
//! `<first data dir>/scrub-state.json`, JSON:
//!
//! ```text
//! {"version":1, "cursor":"<32 hex>"|null, "in_pass":bool, "paused":bool,
//!  "pass_started_ms":u64, "last_full_pass_ms":u64|null,
//!  "scanned_shards":u64, "scanned_bytes":u64}
//! ```
//!
//! `cursor` is the last shard checked in the pass in progress; a restart
//! resumes after it. Written temp-file + fsync + rename + fsync-dir every
//! [`CHECKPOINT_SHARDS`] shards or [`CHECKPOINT_EVERY`], and at every state
//! change (pass start and end, pause, resume). A missing file means a fresh
//! chunkserver; an unreadable one is logged and replaced (the worst outcome
//! is one pass started again from the beginning). A newer `version` is
//! refused. The throttle knobs are not persisted: the command-line flags
//! set them at start.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_metadata::types::{ScrubControl, ScrubProgress, ScrubState};
use cairn_metadata::worker::{BoxFuture, Worker, WorkerState};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::ids::ShardId;
use crate::store::Store;

/// Name of the state file in the first data directory.
pub const STATE_FILE: &str = "scrub-state.json";

/// Version of the state file's format.
pub const STATE_VERSION: u32 = 1;

/// Checkpoint the cursor at least every this many shards: a restart
/// re-checks at most this many (a few hundred shards is seconds of work).
pub const CHECKPOINT_SHARDS: u64 = 256;

/// ... and at least this often, so slow (throttled) passes lose little.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

/// Default time between the starts of full passes: every shard is read
/// once a week, which finds latent corruption long before a second failure
/// in the same stripe is likely.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(7 * 24 * 3600);

/// Default throughput cap in MB/s: a fraction of one disk's sequential
/// rate, so client I/O keeps most of it.
pub const DEFAULT_MAX_MBPS: u64 = 50;

/// Default tranquility: sleep as long as the work took (at most half of a
/// disk's time).
pub const DEFAULT_TRANQUILITY: u32 = 1;

/// Longest single sleep the throttle asks for, so a changed knob takes
/// effect quickly.
const MAX_THROTTLE: Duration = Duration::from_secs(10);

/// Scrubber settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrubConfig {
    /// Time between the starts of full passes.
    pub period: Duration,
    /// Throughput cap in MB/s (0 = none).
    pub max_mbps: u64,
    /// Sleep this many times the time spent working.
    pub tranquility: u32,
}

impl Default for ScrubConfig {
    fn default() -> Self {
        ScrubConfig {
            period: DEFAULT_PERIOD,
            max_mbps: DEFAULT_MAX_MBPS,
            tranquility: DEFAULT_TRANQUILITY,
        }
    }
}

/// The persisted part of the scrubber's state (the state file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Persisted {
    version: u32,
    cursor: Option<ShardId>,
    in_pass: bool,
    paused: bool,
    pass_started_ms: u64,
    last_full_pass_ms: Option<u64>,
    scanned_shards: u64,
    scanned_bytes: u64,
}

struct Shared {
    p: Persisted,
    /// `start` was asked: begin a new pass at the next step.
    start_requested: bool,
    total_shards: u64,
    bad_found: u64,
    max_mbps: u64,
    tranquility: u32,
    period: Duration,
    /// The persisted state changed and must be written at the next step.
    dirty: bool,
}

/// The scrubber's shared state: read by the heartbeat and the admin
/// endpoint, changed by them (controls) and by the [`Scrubber`] worker.
/// Cheap to clone.
#[derive(Clone)]
pub struct ScrubHandle {
    shared: Arc<Mutex<Shared>>,
    wake: Arc<Notify>,
    state_path: PathBuf,
}

impl std::fmt::Debug for ScrubHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrubHandle")
            .field("state_path", &self.state_path)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn load(path: &Path) -> Result<Persisted> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Persisted {
                version: STATE_VERSION,
                ..Persisted::default()
            })
        }
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    };
    match serde_json::from_slice::<Persisted>(&bytes) {
        Ok(p) if p.version > STATE_VERSION => Err(Error::InvalidParams(format!(
            "{} has format version {}, this build reads up to {STATE_VERSION}",
            path.display(),
            p.version
        ))),
        Ok(p) => Ok(p),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e,
                "unreadable scrub state; starting a new pass");
            Ok(Persisted {
                version: STATE_VERSION,
                ..Persisted::default()
            })
        }
    }
}

fn save(path: &Path, p: &Persisted) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec(p)
        .map_err(|e| Error::io("encode scrub state", std::io::Error::other(e)))?;
    let io = |what: &str, e| Error::io(format!("{what} {}", tmp.display()), e);
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| io("create", e))?;
        f.write_all(&body).map_err(|e| io("write", e))?;
        f.sync_all().map_err(|e| io("fsync", e))?;
    }
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::io(format!("rename to {}", path.display()), e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("fsync {}", dir.display()), e))
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // Plain data: keep going after a panic elsewhere.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ScrubHandle {
    /// Loads the scrubber's state from `dir` (the first data directory).
    pub fn open(dir: &Path, cfg: ScrubConfig) -> Result<ScrubHandle> {
        let state_path = dir.join(STATE_FILE);
        let p = load(&state_path)?;
        Ok(ScrubHandle {
            shared: Arc::new(Mutex::new(Shared {
                p,
                start_requested: false,
                total_shards: 0,
                bad_found: 0,
                max_mbps: cfg.max_mbps,
                tranquility: cfg.tranquility,
                period: cfg.period,
                dirty: false,
            })),
            wake: Arc::new(Notify::new()),
            state_path,
        })
    }

    /// The scrubber's progress, as heartbeats and `cairn admin scrub`
    /// report it.
    pub fn progress(&self) -> ScrubProgress {
        let s = lock(&self.shared);
        ScrubProgress {
            state: if s.p.paused {
                ScrubState::Paused
            } else if s.p.in_pass || s.start_requested {
                ScrubState::Running
            } else {
                ScrubState::Idle
            },
            pass_started_ms: s.p.pass_started_ms,
            last_full_pass_ms: s.p.last_full_pass_ms,
            scanned_shards: s.p.scanned_shards,
            total_shards: s.total_shards.max(s.p.scanned_shards),
            scanned_bytes: s.p.scanned_bytes,
            bad_found: s.bad_found,
            max_mbps: s.max_mbps,
            tranquility: s.tranquility,
        }
    }

    /// Applies an operator's control (`start`, `pause`, `resume`, `status`
    /// and/or new throttle knobs) and returns the progress after it. A
    /// pause or resume is persisted before this returns.
    pub fn control(&self, c: &ScrubControl) -> Result<ScrubProgress> {
        let persist = {
            let mut s = lock(&self.shared);
            if let Some(m) = c.max_mbps {
                s.max_mbps = m;
            }
            if let Some(t) = c.tranquility {
                s.tranquility = t;
            }
            match c.action.as_str() {
                "status" => false,
                "start" => {
                    s.start_requested = true;
                    s.p.paused = false;
                    true
                }
                "pause" => {
                    s.p.paused = true;
                    true
                }
                "resume" => {
                    s.p.paused = false;
                    true
                }
                other => {
                    return Err(Error::BadRequest(format!(
                        "unknown scrub action {other:?}: expected start, pause, resume or status"
                    )))
                }
            }
        };
        if persist {
            let p = lock(&self.shared).p.clone();
            save(&self.state_path, &p)?;
            self.wake.notify_one();
        }
        Ok(self.progress())
    }

    fn checkpoint(&self) -> Result<()> {
        let p = {
            let mut s = lock(&self.shared);
            s.dirty = false;
            s.p.clone()
        };
        save(&self.state_path, &p)
    }
}

/// The scrubber worker. Spawn one per chunkserver on its `WorkerRunner`.
pub struct Scrubber {
    store: Store,
    handle: ScrubHandle,
    /// Shards checked since the last checkpoint, and when it was.
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// The token bucket: no read starts before this.
    next_read: Option<Instant>,
}

/// What one [`Scrubber::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Checked one shard (found it bad or not); wait this long before the
    /// next.
    Checked {
        /// The shard was bad (quarantined or missing).
        bad: bool,
        /// Throttle wait.
        wait: Duration,
    },
    /// A pass just finished.
    PassDone,
    /// Paused, or between passes.
    Idle,
}

impl Scrubber {
    /// A scrubber over `store`, sharing `handle` with the heartbeat and the
    /// admin endpoint.
    pub fn new(store: Store, handle: ScrubHandle) -> Self {
        Scrubber {
            store,
            handle,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            next_read: None,
        }
    }

    /// Does one bounded piece of work: starts or ends a pass, or checks the
    /// next shard after the cursor. Does not sleep: the returned wait is for
    /// the caller (the worker runtime) to honour.
    pub async fn step(&mut self) -> Result<Step> {
        let now = now_ms();
        let next = {
            let mut s = lock(&self.handle.shared);
            let due =
                s.p.last_full_pass_ms
                    .is_none_or(|l| l.saturating_add(s.period.as_millis() as u64) <= now);
            if s.start_requested || (!s.p.in_pass && !s.p.paused && due) {
                s.start_requested = false;
                s.p.in_pass = true;
                s.p.cursor = None;
                s.p.pass_started_ms = now;
                s.p.scanned_shards = 0;
                s.p.scanned_bytes = 0;
                s.total_shards = self.store.shard_count() as u64;
                s.dirty = true;
                tracing::info!(shards = s.total_shards, "scrub pass started");
            }
            if s.total_shards == 0 && s.p.in_pass {
                // Restarted mid-pass: estimate the total again.
                s.total_shards = self.store.shard_count() as u64;
            }
            if s.p.paused || !s.p.in_pass {
                None
            } else {
                Some(s.p.cursor)
            }
        };
        let Some(cursor) = next else {
            if lock(&self.handle.shared).dirty {
                self.handle.checkpoint()?;
            }
            return Ok(Step::Idle);
        };
        let Some(id) = self.store.list(cursor, 1).into_iter().next() else {
            {
                let mut s = lock(&self.handle.shared);
                s.p.in_pass = false;
                s.p.cursor = None;
                s.p.last_full_pass_ms = Some(now);
                s.total_shards = s.p.scanned_shards;
                tracing::info!(
                    shards = s.p.scanned_shards,
                    bytes = s.p.scanned_bytes,
                    bad = s.bad_found,
                    "scrub pass finished"
                );
            }
            self.handle.checkpoint()?;
            self.since_checkpoint = 0;
            self.last_checkpoint = Instant::now();
            return Ok(Step::PassDone);
        };
        let started = Instant::now();
        let (bytes, bad) = match self.store.verify(id).await {
            Ok(len) => (len, false),
            Err(Error::CorruptShard { .. }) => (self.store.stored_len(&id).unwrap_or(0), true),
            // Deleted meanwhile: nothing to check.
            Err(Error::NoSuchShard { .. }) => (0, false),
            Err(Error::UnsupportedFormat { .. }) => (0, false),
            Err(e) => {
                // An unreadable file (I/O error) is left for reads and
                // repair to judge; move on rather than stall the pass.
                tracing::warn!(shard = %id, error = %e, "scrub could not read shard");
                (0, false)
            }
        };
        let worked = started.elapsed();
        let (mbps, tranquility) = {
            let mut s = lock(&self.handle.shared);
            s.p.cursor = Some(id);
            s.p.scanned_shards += 1;
            s.p.scanned_bytes += bytes;
            if bad {
                s.bad_found += 1;
            }
            (s.max_mbps, s.tranquility)
        };
        self.since_checkpoint += 1;
        if self.since_checkpoint >= CHECKPOINT_SHARDS
            || self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY
        {
            self.handle.checkpoint()?;
            self.since_checkpoint = 0;
            self.last_checkpoint = Instant::now();
        }
        // Token bucket without burst: the next read may start once this
        // one's bytes have "drained" at the cap.
        let mut wait = worked.saturating_mul(tranquility);
        if mbps > 0 {
            let cost = Duration::from_secs_f64(bytes as f64 / (mbps as f64 * 1e6));
            let base = self.next_read.unwrap_or(started).max(started);
            let next = base + cost;
            self.next_read = Some(next);
            wait = wait.max(next.saturating_duration_since(Instant::now()));
        } else {
            self.next_read = None;
        }
        Ok(Step::Checked {
            bad,
            wait: wait.min(MAX_THROTTLE),
        })
    }
}

impl Worker for Scrubber {
    fn name(&self) -> String {
        "scrub".into()
    }

    fn status(&self) -> String {
        let p = self.handle.progress();
        format!(
            "{:?}: {}/{} shards, {} bytes this pass, {} bad found, last full pass {}",
            p.state,
            p.scanned_shards,
            p.total_shards,
            p.scanned_bytes,
            p.bad_found,
            p.last_full_pass_ms
                .map(|t| format!("at {t} ms"))
                .unwrap_or_else(|| "never".into())
        )
    }

    fn work(&mut self) -> BoxFuture<'_, std::result::Result<WorkerState, String>> {
        Box::pin(async move {
            match self.step().await.map_err(|e| e.to_string())? {
                Step::Checked { wait, .. } if wait.is_zero() => Ok(WorkerState::Busy),
                Step::Checked { wait, .. } => Ok(WorkerState::Throttled(wait)),
                Step::PassDone => Ok(WorkerState::Busy),
                Step::Idle => Ok(WorkerState::Idle),
            }
        })
    }

    fn wait_for_work(&mut self) -> BoxFuture<'_, ()> {
        let wake = self.handle.wake.clone();
        Box::pin(async move {
            // Woken by a control, or re-check the period once a minute.
            let _ = tokio::time::timeout(Duration::from_secs(60), wake.notified()).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::EcParams;
    use crate::format::{ShardMeta, HEADER_LEN};
    use crate::ids::StripeId;
    use crate::store::{Reserve, StoreConfig};
    use bytes::Bytes;

    async fn store_with(dir: &Path, n: usize) -> (Store, Vec<ShardId>) {
        let mut cfg = StoreConfig::new(vec![dir.to_path_buf()]);
        cfg.reserve = Reserve::Bytes(0);
        let store = Store::open(cfg).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..n {
            let payload = Bytes::from(vec![i as u8; 1000 + i]);
            let meta = ShardMeta::for_payload(
                ShardId::random(),
                StripeId::random(),
                0,
                EcParams::default(),
                &payload,
            );
            store.put(meta.clone(), payload).await.unwrap();
            ids.push(meta.id);
        }
        ids.sort();
        (store, ids)
    }

    fn quiet() -> ScrubConfig {
        ScrubConfig {
            period: DEFAULT_PERIOD,
            max_mbps: 0,
            tranquility: 0,
        }
    }

    async fn run_pass(s: &mut Scrubber) -> u64 {
        let mut bad = 0;
        loop {
            match s.step().await.unwrap() {
                Step::Checked { bad: b, .. } => bad += u64::from(b),
                Step::PassDone => return bad,
                Step::Idle => panic!("idle mid-pass"),
            }
        }
    }

    #[tokio::test]
    async fn finds_corrupt_truncated_and_missing_shards() {
        let t = tempfile::tempdir().unwrap();
        let (store, ids) = store_with(t.path(), 10).await;
        let path = |id: &ShardId| store.shard_path(0, id).unwrap();
        let mut b = std::fs::read(path(&ids[1])).unwrap();
        b[HEADER_LEN + 5] ^= 0x40;
        std::fs::write(path(&ids[1]), &b).unwrap();
        let b = std::fs::read(path(&ids[4])).unwrap();
        std::fs::write(path(&ids[4]), &b[..b.len() - 3]).unwrap();
        std::fs::remove_file(path(&ids[7])).unwrap();

        let handle = ScrubHandle::open(t.path(), quiet()).unwrap();
        let mut s = Scrubber::new(store.clone(), handle.clone());
        assert_eq!(run_pass(&mut s).await, 3);
        let p = handle.progress();
        assert_eq!(p.state, ScrubState::Idle);
        assert_eq!(p.bad_found, 3);
        assert_eq!(p.scanned_shards, 10);
        assert!(p.last_full_pass_ms.is_some());
        // Nothing bad is live; the corrupt ones are in quarantine.
        assert_eq!(store.shard_count(), 7);
        for i in [1, 4, 7] {
            assert!(!store.contains(&ids[i]));
            assert!(!path(&ids[i]).exists());
        }
        assert_eq!(
            std::fs::read_dir(t.path().join("quarantine"))
                .unwrap()
                .count(),
            2
        );
        let (events, _) = store.take_corrupt_events();
        let mut found: Vec<ShardId> = events.iter().map(|e| e.id).collect();
        found.sort();
        assert_eq!(found, vec![ids[1], ids[4], ids[7]]);
        // The next step is idle: the period has not elapsed.
        assert_eq!(s.step().await.unwrap(), Step::Idle);
    }

    #[tokio::test]
    async fn restart_resumes_after_the_cursor_and_pause_persists() {
        let t = tempfile::tempdir().unwrap();
        let (store, ids) = store_with(t.path(), 600).await;
        let handle = ScrubHandle::open(t.path(), quiet()).unwrap();
        let mut s = Scrubber::new(store.clone(), handle.clone());
        // 300 shards: one checkpoint at 256 is on disk.
        for _ in 0..300 {
            assert!(matches!(s.step().await.unwrap(), Step::Checked { .. }));
        }
        handle
            .control(&ScrubControl {
                action: "pause".into(),
                max_mbps: None,
                tranquility: None,
            })
            .unwrap();
        assert_eq!(handle.progress().state, ScrubState::Paused);
        assert_eq!(s.step().await.unwrap(), Step::Idle);
        drop(s);

        // "Restart": a new handle from the state file.
        let handle = ScrubHandle::open(t.path(), quiet()).unwrap();
        let p = handle.progress();
        assert_eq!(p.state, ScrubState::Paused, "pause survives a restart");
        assert_eq!(p.scanned_shards, 300);
        let mut s = Scrubber::new(store.clone(), handle.clone());
        assert_eq!(s.step().await.unwrap(), Step::Idle);
        let p = handle
            .control(&ScrubControl {
                action: "resume".into(),
                max_mbps: Some(7),
                tranquility: Some(2),
            })
            .unwrap();
        assert_eq!(p.state, ScrubState::Running);
        assert_eq!((p.max_mbps, p.tranquility), (7, 2));
        let cursor = lock(&handle.shared).p.cursor;
        assert_eq!(cursor, Some(ids[299]));
        // The remaining 300 shards, then the pass ends.
        for _ in 0..300 {
            assert!(matches!(s.step().await.unwrap(), Step::Checked { .. }));
        }
        assert_eq!(s.step().await.unwrap(), Step::PassDone);
        assert_eq!(handle.progress().scanned_shards, 600);
        let on_disk = load(&t.path().join(STATE_FILE)).unwrap();
        assert!(!on_disk.in_pass);
        assert!(on_disk.last_full_pass_ms.is_some());

        // `start` begins a new pass at once.
        handle
            .control(&ScrubControl {
                action: "start".into(),
                max_mbps: Some(0),
                tranquility: Some(0),
            })
            .unwrap();
        assert_eq!(handle.progress().state, ScrubState::Running);
        assert!(matches!(s.step().await.unwrap(), Step::Checked { .. }));
        assert_eq!(lock(&handle.shared).p.cursor, Some(ids[0]));
        assert!(handle
            .control(&ScrubControl {
                action: "explode".into(),
                max_mbps: None,
                tranquility: None,
            })
            .is_err());
    }

    #[tokio::test]
    async fn throttle_waits_for_the_cap_and_tranquility() {
        let t = tempfile::tempdir().unwrap();
        let (store, _) = store_with(t.path(), 3).await;
        let handle = ScrubHandle::open(
            t.path(),
            ScrubConfig {
                period: DEFAULT_PERIOD,
                max_mbps: 0,
                tranquility: 0,
            },
        )
        .unwrap();
        let mut s = Scrubber::new(store, handle.clone());
        assert!(matches!(
            s.step().await.unwrap(),
            Step::Checked { wait, .. } if wait.is_zero()
        ));
        // 1 MB/s and ~1000-byte shards: a millisecond per shard.
        handle
            .control(&ScrubControl {
                action: "status".into(),
                max_mbps: Some(1),
                tranquility: None,
            })
            .unwrap();
        let Step::Checked { wait, .. } = s.step().await.unwrap() else {
            panic!("expected a checked shard");
        };
        // The bucket now holds this read's cost; the wait never exceeds it.
        assert!(wait <= Duration::from_millis(1));
        assert!(s.next_read.is_some());
    }
}
