//! The repair executor: rebuilds one lost shard per [`RepairTask`] the
//! metadata leader sends on a heartbeat reply, and stores it here.
//!
//! For a task: if the store already holds the shard with the expected
//! BLAKE3 (a repeated task), it is done. If the task lists a copy of the
//! very shard (a move off a draining chunkserver), that copy is fetched and
//! stored as is. Otherwise k sources are fetched in parallel (a failed or
//! corrupt source is replaced by the next one; every fetched payload must
//! match its source's BLAKE3 from the manifest), the missing index is
//! reconstructed with the Reed-Solomon codec on the blocking pool, and the
//! result is stored only if its BLAKE3 equals the manifest's: a rebuilt
//! shard that does not match is never stored. Storing uses the store's
//! durable put (temp file, fsync, rename, directory fsync).
//!
//! Bounded: at most `concurrency` tasks run at once, at most
//! [`MAX_ACCEPTED`] are accepted (more are reported failed at once), and a
//! running task holds at most k fetched shards plus the codec's output
//! (k + m buffers of one shard length). Outcomes wait in memory until the
//! heartbeat worker takes them ([`RepairExecutor::take_reports`]) and
//! reports them; the leader then commits the new placement (or finds it
//! stale and garbage-collects the copy).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cairn_metadata::types::{RepairReport, RepairTask, ShardId};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{Notify, Semaphore};

use crate::client::ShardClient;
use crate::codec::Codec;
use crate::error::Error;
use crate::format::ShardMeta;
use crate::store::Store;

/// Tasks accepted (waiting or running) at most; the leader's per-target
/// limit keeps far below this.
pub const MAX_ACCEPTED: usize = 256;

/// Longest one task may take before it is abandoned (the leader forgets a
/// task after two minutes).
pub const TASK_TIMEOUT: Duration = Duration::from_secs(100);

/// Runs repair tasks in the background. Cheap to clone.
#[derive(Clone)]
pub struct RepairExecutor {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    client: ShardClient,
    slots: Semaphore,
    accepted: Mutex<HashSet<(u64, ShardId)>>,
    running: std::sync::atomic::AtomicU32,
    reports: Mutex<Vec<RepairReport>>,
    ready: Notify,
    /// Bytes of shards rebuilt and stored (reused copies not counted).
    rebuilt_bytes: std::sync::atomic::AtomicU64,
    /// Tasks that failed.
    failed: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for RepairExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepairExecutor")
            .field("running", &self.running())
            .finish_non_exhaustive()
    }
}

impl RepairExecutor {
    /// An executor storing into `store`, fetching with `client` (which
    /// carries the cluster secret), running `concurrency` tasks at once.
    pub fn new(store: Store, client: ShardClient, concurrency: usize) -> Self {
        RepairExecutor {
            inner: Arc::new(Inner {
                store,
                client,
                slots: Semaphore::new(concurrency.max(1)),
                accepted: Mutex::new(HashSet::new()),
                running: Default::default(),
                reports: Mutex::new(Vec::new()),
                ready: Notify::new(),
                rebuilt_bytes: Default::default(),
                failed: Default::default(),
            }),
        }
    }

    /// Starts `task` in the background (never blocks). A task already
    /// accepted (same id and shard) is ignored.
    pub fn submit(&self, task: RepairTask) {
        let key = (task.task, task.shard);
        let accepted = match self.inner.accepted.lock() {
            Ok(mut a) => {
                if a.contains(&key) {
                    return;
                }
                if a.len() >= MAX_ACCEPTED {
                    false
                } else {
                    a.insert(key);
                    true
                }
            }
            Err(_) => false,
        };
        if !accepted {
            self.inner
                .report(task, Err("too many repair tasks queued here".into()));
            return;
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let result = match inner.slots.acquire().await {
                Ok(_permit) => {
                    inner
                        .running
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let r = tokio::time::timeout(TASK_TIMEOUT, rebuild(&inner, &task)).await;
                    inner
                        .running
                        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    match r {
                        Ok(r) => r,
                        Err(_) => Err(format!("timed out after {TASK_TIMEOUT:?}")),
                    }
                }
                Err(_) => Err("repair executor closed".into()),
            };
            // Report first: a heartbeat never sees the task neither
            // accepted nor reported.
            inner.report(task, result);
            if let Ok(mut a) = inner.accepted.lock() {
                a.remove(&key);
            }
        });
    }

    /// Outcomes since the last call (the heartbeat sends them).
    pub fn take_reports(&self) -> Vec<RepairReport> {
        self.inner
            .reports
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }

    /// Puts back reports a heartbeat failed to deliver.
    /// Tasks running now.
    pub fn running(&self) -> u32 {
        self.inner
            .running
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes of shards rebuilt and stored since start (for `/metrics`).
    pub fn rebuilt_bytes(&self) -> u64 {
        self.inner
            .rebuilt_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Tasks that failed since start (for `/metrics`).
    pub fn failed(&self) -> u64 {
        self.inner.failed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Tasks accepted and not yet finished (running or waiting for a slot).
    pub fn accepted(&self) -> usize {
        self.inner.accepted.lock().map(|a| a.len()).unwrap_or(0)
    }

    /// Resolves when a report is ready (or at once if one is waiting).
    pub async fn report_ready(&self) {
        let has = self
            .inner
            .reports
            .lock()
            .map(|r| !r.is_empty())
            .unwrap_or(false);
        if !has {
            self.inner.ready.notified().await;
        }
    }
}

impl Inner {
    fn report(&self, task: RepairTask, result: Result<Reuse, String>) {
        use std::sync::atomic::Ordering::Relaxed;
        match &result {
            Ok(Reuse::Written) => {
                self.rebuilt_bytes.fetch_add(task.shard_len, Relaxed);
            }
            Ok(Reuse::Kept) => {}
            Err(_) => {
                self.failed.fetch_add(1, Relaxed);
            }
        }
        match &result {
            Ok(_) => tracing::info!(
                task = task.task,
                shard = %task.shard,
                index = task.index,
                "shard rebuilt"
            ),
            Err(e) => tracing::warn!(
                task = task.task,
                shard = %task.shard,
                index = task.index,
                error = %e,
                "repair failed"
            ),
        }
        let report = RepairReport {
            ok: result.is_ok(),
            reused: matches!(result, Ok(Reuse::Kept)),
            error: result.err(),
            task,
        };
        if let Ok(mut r) = self.reports.lock() {
            r.push(report);
        }
        self.ready.notify_one();
    }
}

/// How a repair task was satisfied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reuse {
    /// A new copy was written.
    Written,
    /// The copy already stored here was verified and kept (its age reset).
    Kept,
}

/// Rebuilds and stores `task`'s shard, or says why not.
async fn rebuild(inner: &Inner, task: &RepairTask) -> Result<Reuse, String> {
    let ec = task.ec;
    ec.validate().map_err(|e| e.to_string())?;
    let total = ec.total();
    let k = usize::from(ec.k);
    if usize::from(task.index) >= total {
        return Err(format!("shard index {} out of range for {ec}", task.index));
    }
    if task.shard_len == 0 || task.shard_len > inner.store.max_shard_size() {
        return Err(format!("invalid shard length {}", task.shard_len));
    }
    let want = blake3::Hash::from(task.blake3);
    let meta = ShardMeta {
        id: task.shard,
        stripe: task.stripe_id,
        index: task.index,
        params: ec,
        len: task.shard_len,
        blake3: want,
    };
    // Already here and intact (a repeated task, or an old copy): keep it,
    // but only after reading and verifying it, and reset its age like a PUT
    // of an identical shard does. Reported as reused: the metadata service
    // refuses it if this server confirmed deleting the shard meanwhile.
    if inner.store.contains(&task.shard) {
        match inner.store.get(task.shard).await {
            Ok((stored, payload)) if stored == meta => {
                if payload.len() as u64 != meta.len || blake3::hash(&payload) != want {
                    return Err(format!("the local copy of {} does not verify", task.shard));
                }
                store(inner, meta, payload).await?;
                return Ok(Reuse::Kept);
            }
            Ok((stored, _)) => {
                return Err(format!(
                    "a different shard {} is stored here ({stored:?})",
                    task.shard
                ))
            }
            // Quarantined or gone meanwhile: rebuild it.
            Err(Error::CorruptShard { .. }) | Err(Error::NoSuchShard { .. }) => {}
            Err(e) => return Err(format!("cannot check the local copy: {e}")),
        }
    }
    let len = usize::try_from(task.shard_len).map_err(|e| e.to_string())?;
    let mut errors: Vec<String> = Vec::new();

    // A move: copy the shard itself if its holder still serves it.
    for src in task.sources.iter().filter(|s| s.index == task.index) {
        if src.blake3 != task.blake3 {
            continue;
        }
        match inner
            .client
            .get(&src.addr, src.shard, None, Some(want))
            .await
        {
            Ok(p) if p.len() == len => return store(inner, meta, p).await.map(|()| Reuse::Written),
            Ok(p) => errors.push(format!("{}: {} bytes, want {len}", src.addr, p.len())),
            Err(e) => errors.push(format!("{}: {e}", src.addr)),
        }
    }

    // Fetch k other shards, replacing failed sources with the next ones.
    let mut shards: Vec<Option<Vec<u8>>> = vec![None; total];
    let mut have = 0usize;
    let mut next = task
        .sources
        .iter()
        .filter(|s| s.index != task.index && usize::from(s.index) < total);
    let mut fetching = FuturesUnordered::new();
    let fetch = |src: &cairn_metadata::types::RepairSource| {
        let client = inner.client.clone();
        let src = src.clone();
        async move {
            let r = client
                .get(
                    &src.addr,
                    src.shard,
                    None,
                    Some(blake3::Hash::from(src.blake3)),
                )
                .await;
            (src, r)
        }
    };
    let mut taken: HashSet<u8> = HashSet::new();
    while have < k {
        while have + fetching.len() < k {
            let Some(src) = next.find(|s| !taken.contains(&s.index)) else {
                break;
            };
            taken.insert(src.index);
            fetching.push(fetch(src));
        }
        let Some((src, r)) = fetching.next().await else {
            return Err(format!(
                "only {have} of {k} sources readable: {}",
                errors.join("; ")
            ));
        };
        match r {
            Ok(p) if p.len() == len => {
                shards[usize::from(src.index)] = Some(p.to_vec());
                have += 1;
            }
            Ok(p) => {
                errors.push(format!("{}: {} bytes, want {len}", src.addr, p.len()));
                taken.remove(&src.index);
            }
            Err(e) => {
                errors.push(format!("{} shard {}: {e}", src.addr, src.index));
                taken.remove(&src.index);
            }
        }
    }
    drop(fetching);
    let index = usize::from(task.index);
    let rebuilt = tokio::task::spawn_blocking(move || -> Result<Bytes, String> {
        let codec = Codec::new(ec).map_err(|e| e.to_string())?;
        codec.reconstruct(&mut shards).map_err(|e| e.to_string())?;
        let out = shards
            .get_mut(index)
            .and_then(Option::take)
            .ok_or_else(|| "reconstruction produced no shard".to_string())?;
        if blake3::hash(&out) != want {
            return Err("the rebuilt shard does not match the manifest's BLAKE3".into());
        }
        Ok(Bytes::from(out))
    })
    .await
    .map_err(|e| format!("rebuild task: {e}"))??;
    store(inner, meta, rebuilt).await.map(|()| Reuse::Written)
}

/// Stores a payload already verified against `meta.blake3` (by the shard
/// client for a copy, after reconstruction for a rebuild).
async fn store(inner: &Inner, meta: ShardMeta, payload: Bytes) -> Result<(), String> {
    inner
        .store
        .put(meta, payload)
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot store: {e}"))
}
