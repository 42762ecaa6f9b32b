//! The load generator behind `cairn bench put|get|mixed|small`.
//!
//! A run is a sequence of phases (`put`; `prepare` + `get`; `prepare` +
//! `mixed`; `put` + `get` of small objects). Each phase starts
//! `--concurrency` worker tasks that loop until the deadline (`--duration`)
//! or until the phase's operation tickets (`--count`) are used up. Every
//! worker keeps its own [`OpStats`] per operation kind; they are merged
//! when the phase ends, so nothing is shared on the hot path but a few
//! atomic counters for the progress line.
//!
//! Objects: every PUT writes a fresh key `<run prefix><sequence>` whose
//! body is a slice of one shared random buffer (offset by the sequence
//! number, so objects differ without a copy). Keys written and not yet
//! deleted are the *live set*; GETs and DELETEs pick from it at random. A
//! DELETE takes its key out of the live set first and then waits for the
//! key's write lock, which every GET in flight on that key holds for
//! reading, so a GET never races a DELETE into a spurious 404. At the end
//! the live set (and any key whose PUT or DELETE failed, which may or may
//! not exist) is deleted, and the bucket too if this run created it,
//! unless `--keep`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_client::{Client, PutOptions};
use cairn_metadata::types::EcParams;
use futures::StreamExt;
use rand::Rng;
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

use super::report::{OpStats, Row};
use super::s3::S3Target;

/// Spare random bytes after the object size: PUT bodies start at a
/// per-object offset inside them.
const BODY_SLACK: usize = 4096;

/// A failed operation: `kind` groups errors in the report (HTTP status and
/// S3 code, a transport failure, or the client library's error variant).
#[derive(Debug, Clone)]
pub struct OpError {
    /// What kind of failure.
    pub kind: String,
    /// Details (the first one of each kind is printed).
    pub message: String,
}

impl OpError {
    /// An error of `kind`.
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        OpError {
            kind: kind.to_string(),
            message: message.into(),
        }
    }

    fn client(e: &cairn_client::ClientError) -> Self {
        // The variant name: stable, short, and needs no list to maintain.
        let dbg = format!("{e:?}");
        let kind = dbg
            .split(|c: char| !c.is_ascii_alphanumeric())
            .next()
            .unwrap_or("Client");
        OpError::new(kind, e.to_string())
    }
}

/// The native target: the client library, as the CLI uses it.
pub struct NativeTarget {
    client: Client,
    md5: bool,
}

/// Where the load goes.
pub enum Target {
    /// An S3 endpoint.
    S3(Box<S3Target>),
    /// The cluster through the client library.
    Native(NativeTarget),
}

impl Target {
    /// The native target.
    pub fn native(client: Client, md5: bool) -> Target {
        Target::Native(NativeTarget { client, md5 })
    }

    /// `s3` or `native`.
    pub fn name(&self) -> &'static str {
        match self {
            Target::S3(_) => "s3",
            Target::Native(_) => "native",
        }
    }

    /// Creates the bucket; `Ok(false)` if it existed already.
    pub async fn create_bucket(&self, bucket: &str, ec: Option<EcParams>) -> Result<bool, OpError> {
        match self {
            Target::S3(s) => s.create_bucket(bucket, ec).await,
            Target::Native(n) => {
                match n
                    .client
                    .create_bucket(bucket, ec.unwrap_or_default(), 1 << 20)
                    .await
                {
                    Ok(()) => Ok(true),
                    Err(cairn_client::ClientError::BucketExists(_)) => Ok(false),
                    Err(e) => Err(OpError::client(&e)),
                }
            }
        }
    }

    /// Deletes the (empty) bucket.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<(), OpError> {
        match self {
            Target::S3(s) => s.delete_bucket(bucket).await,
            Target::Native(n) => n
                .client
                .delete_bucket(bucket)
                .await
                .map_err(|e| OpError::client(&e)),
        }
    }

    async fn put(&self, bucket: &str, key: &str, body: Bytes) -> Result<(), OpError> {
        match self {
            Target::S3(s) => s.put(bucket, key, body).await,
            Target::Native(n) => n
                .client
                .put(
                    bucket,
                    key,
                    std::io::Cursor::new(body),
                    PutOptions {
                        md5: n.md5,
                        ..Default::default()
                    },
                )
                .await
                .map(|_| ())
                .map_err(|e| OpError::client(&e)),
        }
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<u64, OpError> {
        match self {
            Target::S3(s) => s.get(bucket, key).await,
            Target::Native(n) => {
                let (_, mut stream) = n
                    .client
                    .get(bucket, key, None)
                    .await
                    .map_err(|e| OpError::client(&e))?;
                let mut len = 0u64;
                while let Some(chunk) = stream.next().await {
                    len += chunk.map_err(|e| OpError::client(&e))?.len() as u64;
                }
                Ok(len)
            }
        }
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), OpError> {
        match self {
            Target::S3(s) => s.delete(bucket, key).await,
            Target::Native(n) => n
                .client
                .delete(bucket, key)
                .await
                .map_err(|e| OpError::client(&e)),
        }
    }
}

/// When a phase ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this long.
    Duration(Duration),
    /// After this many operations (over all workers).
    Count(u64),
}

/// The share of each operation in a mixed phase (weights, any scale).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    /// GET weight.
    pub get: u32,
    /// PUT weight.
    pub put: u32,
    /// DELETE weight.
    pub delete: u32,
}

impl std::str::FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let v: Vec<u32> = s
            .split([',', '/'])
            .map(|p| p.trim().parse::<u32>())
            .collect::<Result<_, _>>()
            .map_err(|_| {
                format!("bad mix {s:?}: expected GET,PUT,DELETE weights, e.g. 60,30,10")
            })?;
        match v[..] {
            [get, put, delete] if u64::from(get) + u64::from(put) + u64::from(delete) > 0 => {
                Ok(Mix { get, put, delete })
            }
            _ => Err(format!(
                "bad mix {s:?}: expected three weights GET,PUT,DELETE, not all 0"
            )),
        }
    }
}

/// Operation kinds, also the index into a worker's stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// PutObject of a new key.
    Put = 0,
    /// GetObject of a live key.
    Get = 1,
    /// DeleteObject of a live key.
    Delete = 2,
}

impl Op {
    /// Lowercase name, as in the report.
    pub fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::Delete => "delete",
        }
    }
}

/// What a phase does.
#[derive(Debug, Clone, Copy)]
pub enum Work {
    /// Only this operation.
    Only(Op),
    /// A random mix.
    Mixed(Mix),
}

impl Work {
    fn pick(&self, rng: &mut impl Rng) -> Op {
        match *self {
            Work::Only(op) => op,
            Work::Mixed(m) => {
                let total = m.get + m.put + m.delete;
                let r = rng.random_range(0..total.max(1));
                if r < m.get {
                    Op::Get
                } else if r < m.get + m.put {
                    Op::Put
                } else {
                    Op::Delete
                }
            }
        }
    }
}

struct Key {
    name: String,
    lock: Arc<RwLock<()>>,
}

/// Counters the progress line reads.
#[derive(Default)]
pub struct Progress {
    ops: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

/// State shared by the workers of a run.
pub struct Run {
    target: Target,
    bucket: String,
    prefix: String,
    size: usize,
    body: Bytes,
    timeout: Duration,
    seq: AtomicU64,
    live: Mutex<Vec<Key>>,
    /// Keys whose PUT or DELETE failed: they may exist.
    maybe: Mutex<Vec<String>>,
    written: AtomicU64,
    deleted: AtomicU64,
    progress: Progress,
}

/// A phase's result: stats per operation kind and the time it took.
pub struct PhaseResult {
    /// Merged stats, indexed by `Op as usize`.
    pub stats: [OpStats; 3],
    /// Wall time.
    pub elapsed: Duration,
    /// Process CPU seconds.
    pub cpu_seconds: f64,
}

impl PhaseResult {
    /// One row per operation kind that ran (or failed), CPU time shared out
    /// by bytes moved (or operations, for a phase without payload).
    pub fn rows(&self, label: Option<&str>, size: u64, concurrency: usize) -> Vec<Row> {
        let total_bytes: u64 = self.stats.iter().map(|s| s.bytes).sum();
        let total_ops: u64 = self.stats.iter().map(|s| s.ops).sum();
        let mut rows = Vec::new();
        for op in [Op::Put, Op::Get, Op::Delete] {
            let s = &self.stats[op as usize];
            if s.ops == 0 && s.error_count() == 0 {
                continue;
            }
            let share = if total_bytes > 0 {
                s.bytes as f64 / total_bytes as f64
            } else if total_ops > 0 {
                s.ops as f64 / total_ops as f64
            } else {
                0.0
            };
            let row_size = if op == Op::Delete { 0 } else { size };
            rows.push(Row::new(
                label.unwrap_or(op.name()),
                row_size,
                concurrency,
                s,
                self.elapsed,
                self.cpu_seconds * share,
            ));
        }
        rows
    }
}

/// Process CPU seconds (user + system) so far.
pub fn cpu_seconds() -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the pointer we pass, which
    // points to enough zero-initialised memory for one.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return 0.0;
    }
    // SAFETY: getrusage succeeded, so the struct is initialised (it was
    // zeroed before anyway, and every field is a plain integer).
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

impl Run {
    /// A run writing objects of `size` bytes under a fresh key prefix.
    pub fn new(target: Target, bucket: String, size: usize, timeout: Duration) -> Run {
        let body = Bytes::from(super::limits::random_bytes(size + BODY_SLACK));
        Run {
            target,
            bucket,
            prefix: format!("bench-{}/", hex::encode(rand::random::<[u8; 4]>())),
            size,
            body,
            timeout,
            seq: AtomicU64::new(0),
            live: Mutex::new(Vec::new()),
            maybe: Mutex::new(Vec::new()),
            written: AtomicU64::new(0),
            deleted: AtomicU64::new(0),
            progress: Progress::default(),
        }
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Successful PUTs so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Successful DELETEs so far.
    pub fn deleted(&self) -> u64 {
        self.deleted.load(Ordering::Relaxed)
    }

    /// Keys written and not deleted.
    pub fn live(&self) -> u64 {
        self.live.lock().map(|l| l.len() as u64).unwrap_or(0)
    }

    /// Picks a random live key and locks it for reading (so no DELETE can
    /// run on it until the guard drops).
    fn pick_for_read(&self) -> Option<(String, OwnedRwLockReadGuard<()>)> {
        let live = self.live.lock().ok()?;
        if live.is_empty() {
            return None;
        }
        let k = &live[rand::rng().random_range(0..live.len())];
        // Keys in the live set are never write-locked (a DELETE takes the
        // key out first), so this succeeds.
        let guard = k.lock.clone().try_read_owned().ok()?;
        Some((k.name.clone(), guard))
    }

    /// Takes a random key out of the live set, for a DELETE.
    fn take_for_delete(&self) -> Option<Key> {
        let mut live = self.live.lock().ok()?;
        if live.is_empty() {
            return None;
        }
        let i = rand::rng().random_range(0..live.len());
        Some(live.swap_remove(i))
    }

    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, OpError>>,
    ) -> Result<T, OpError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(OpError::new(
                "timeout",
                format!("no answer within {:?}", self.timeout),
            )),
        }
    }

    /// One operation; records it in `stats`.
    async fn one(
        &self,
        op: Op,
        stats: &mut [OpStats; 3],
        first_errors: &Mutex<Vec<(String, String)>>,
    ) {
        // With nothing live, GET and DELETE turn into a PUT.
        let op = match op {
            Op::Get | Op::Delete if self.live() == 0 => Op::Put,
            op => op,
        };
        let start = Instant::now();
        let res: Result<u64, OpError> = match op {
            Op::Put => {
                let n = self.seq.fetch_add(1, Ordering::Relaxed);
                let key = format!("{}{n:010}", self.prefix);
                let off = (n as usize * 64) % BODY_SLACK;
                let body = self.body.slice(off..off + self.size);
                match self.timed(self.target.put(&self.bucket, &key, body)).await {
                    Ok(()) => {
                        self.written.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut l) = self.live.lock() {
                            l.push(Key {
                                name: key,
                                lock: Arc::new(RwLock::new(())),
                            });
                        }
                        Ok(self.size as u64)
                    }
                    Err(e) => {
                        if let Ok(mut m) = self.maybe.lock() {
                            m.push(key);
                        }
                        Err(e)
                    }
                }
            }
            Op::Get => match self.pick_for_read() {
                Some((key, _guard)) => {
                    match self.timed(self.target.get(&self.bucket, &key)).await {
                        Ok(n) if n == self.size as u64 => Ok(n),
                        Ok(n) => Err(OpError::new(
                            "short-body",
                            format!("{key}: {n} bytes, expected {}", self.size),
                        )),
                        Err(e) => Err(e),
                    }
                }
                None => Err(OpError::new("internal", "no live key to read")),
            },
            Op::Delete => match self.take_for_delete() {
                Some(k) => {
                    let _w = k.lock.clone().write_owned().await;
                    let start = Instant::now();
                    let r = self.timed(self.target.delete(&self.bucket, &k.name)).await;
                    match r {
                        Ok(()) => {
                            self.deleted.fetch_add(1, Ordering::Relaxed);
                            stats[Op::Delete as usize].ok(0, start.elapsed());
                            self.progress.ops.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        Err(e) => {
                            if let Ok(mut m) = self.maybe.lock() {
                                m.push(k.name);
                            }
                            Err(e)
                        }
                    }
                }
                None => Err(OpError::new("internal", "no live key to delete")),
            },
        };
        let s = &mut stats[op as usize];
        match res {
            Ok(bytes) => {
                s.ok(bytes, start.elapsed());
                self.progress.ops.fetch_add(1, Ordering::Relaxed);
                self.progress.bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Err(e) => {
                if !s.errors.contains_key(&e.kind) {
                    if let Ok(mut f) = first_errors.lock() {
                        let tag = format!("{} {}", op.name(), e.kind);
                        if !f.iter().any(|(t, _)| *t == tag) {
                            f.push((tag, e.message.clone()));
                        }
                    }
                }
                s.err(&e.kind);
                self.progress.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Runs one phase with `concurrency` workers.
    pub async fn phase(
        self: &Arc<Self>,
        label: &str,
        work: Work,
        concurrency: usize,
        stop: Stop,
        show_progress: bool,
    ) -> anyhow::Result<PhaseResult> {
        let tickets = Arc::new(AtomicU64::new(0));
        let first_errors: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        for c in [
            &self.progress.ops,
            &self.progress.bytes,
            &self.progress.errors,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        let cpu0 = cpu_seconds();
        let start = Instant::now();
        let deadline = match stop {
            Stop::Duration(d) => Some(start + d),
            Stop::Count(_) => None,
        };
        let done = Arc::new(AtomicBool::new(false));
        let ticker = show_progress.then(|| {
            let run = self.clone();
            let done = done.clone();
            let label = label.to_string();
            tokio::spawn(async move { run.progress_loop(&label, start, stop, &done).await })
        });
        let mut tasks = Vec::new();
        for _ in 0..concurrency.max(1) {
            let run = self.clone();
            let tickets = tickets.clone();
            let first_errors = first_errors.clone();
            tasks.push(tokio::spawn(async move {
                let mut stats: [OpStats; 3] = Default::default();
                loop {
                    match stop {
                        Stop::Duration(_) => {
                            if deadline.is_some_and(|d| Instant::now() >= d) {
                                break;
                            }
                        }
                        Stop::Count(n) => {
                            if tickets.fetch_add(1, Ordering::Relaxed) >= n {
                                break;
                            }
                        }
                    }
                    let op = work.pick(&mut rand::rng());
                    run.one(op, &mut stats, &first_errors).await;
                }
                stats
            }));
        }
        let mut merged: [OpStats; 3] = Default::default();
        let mut panicked = None;
        for t in tasks {
            match t.await {
                Ok(s) => {
                    for (m, s) in merged.iter_mut().zip(s.iter()) {
                        m.merge(s);
                    }
                }
                Err(e) => panicked = Some(e),
            }
        }
        let elapsed = start.elapsed();
        let cpu_seconds = cpu_seconds() - cpu0;
        done.store(true, Ordering::Relaxed);
        if let Some(t) = ticker {
            let _ = t.await;
        }
        if let Some(e) = panicked {
            anyhow::bail!("a bench worker failed: {e}");
        }
        if let Ok(f) = first_errors.lock() {
            for (tag, message) in f.iter() {
                eprintln!("cairn bench: {label}: first {tag} error: {message}");
            }
        }
        Ok(PhaseResult {
            stats: merged,
            elapsed,
            cpu_seconds,
        })
    }

    /// Prints the progress line: rewritten in place on a terminal, one line
    /// every 5 s otherwise.
    async fn progress_loop(&self, label: &str, start: Instant, stop: Stop, done: &AtomicBool) {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let every = if tty {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(5)
        };
        let mut last = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let finished = done.load(Ordering::Relaxed);
            if finished || last.elapsed() >= every {
                last = Instant::now();
                let secs = start.elapsed().as_secs_f64().max(1e-9);
                let ops = self.progress.ops.load(Ordering::Relaxed);
                let bytes = self.progress.bytes.load(Ordering::Relaxed);
                let errors = self.progress.errors.load(Ordering::Relaxed);
                let of = match stop {
                    Stop::Duration(d) => format!("/{:.0}s", d.as_secs_f64()),
                    Stop::Count(n) => format!(" ({ops}/{n} ops)"),
                };
                let line = format!(
                    "{label}: {secs:.1}s{of} {ops} ops {:.1} ops/s {:.1} MB/s {errors} errors",
                    ops as f64 / secs,
                    bytes as f64 / secs / 1e6
                );
                if tty {
                    eprint!("\r\x1b[2K{line}");
                    if finished {
                        eprintln!();
                    }
                } else if !finished {
                    eprintln!("{line}");
                }
            }
            if finished {
                return;
            }
        }
    }

    /// Deletes every object this run wrote that may still exist, with
    /// `concurrency` deletions in flight. Returns (deleted, failed).
    pub async fn cleanup(self: &Arc<Self>, concurrency: usize) -> (u64, u64) {
        let mut keys: Vec<String> = self
            .live
            .lock()
            .map(|mut l| l.drain(..).map(|k| k.name).collect())
            .unwrap_or_default();
        if let Ok(mut m) = self.maybe.lock() {
            keys.append(&mut m);
        }
        let results: Vec<bool> = futures::stream::iter(keys)
            .map(|k| {
                let run = self.clone();
                async move {
                    run.timed(run.target.delete(&run.bucket, &k))
                        .await
                        .map_err(|e| eprintln!("cairn bench: cleanup of {k}: {}", e.message))
                        .is_ok()
                }
            })
            .buffer_unordered(concurrency.clamp(1, 64))
            .collect()
            .await;
        let ok = results.iter().filter(|r| **r).count() as u64;
        (ok, results.len() as u64 - ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse() {
        assert_eq!(
            "60,30,10".parse::<Mix>(),
            Ok(Mix {
                get: 60,
                put: 30,
                delete: 10
            })
        );
        assert_eq!(
            "1/0/0".parse::<Mix>(),
            Ok(Mix {
                get: 1,
                put: 0,
                delete: 0
            })
        );
        assert!("0,0,0".parse::<Mix>().is_err());
        assert!("60,40".parse::<Mix>().is_err());
        assert!("a,b,c".parse::<Mix>().is_err());
    }

    #[test]
    fn mixed_work_follows_the_weights() {
        let w = Work::Mixed(Mix {
            get: 60,
            put: 30,
            delete: 10,
        });
        let mut rng = rand::rng();
        let mut n = [0u32; 3];
        for _ in 0..30_000 {
            n[w.pick(&mut rng) as usize] += 1;
        }
        // Put, Get, Delete around 9,000 / 18,000 / 3,000.
        assert!((8_000..10_000).contains(&n[0]), "{n:?}");
        assert!((17_000..19_000).contains(&n[1]), "{n:?}");
        assert!((2_400..3_600).contains(&n[2]), "{n:?}");
        assert_eq!(Work::Only(Op::Get).pick(&mut rng), Op::Get);
    }

    #[test]
    fn cpu_time_is_counted() {
        let t0 = cpu_seconds();
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(cpu_seconds() > t0);
    }

    #[test]
    fn client_errors_are_named_by_variant() {
        let e = OpError::client(&cairn_client::ClientError::NoSuchBucket("b".into()));
        assert_eq!(e.kind, "NoSuchBucket");
        let e = OpError::client(&cairn_client::ClientError::NotEnoughShards {
            stripe: 1,
            have: 2,
            need: 4,
        });
        assert_eq!(e.kind, "NotEnoughShards");
    }
}
