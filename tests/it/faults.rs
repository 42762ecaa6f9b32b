//! The S3 workload and the checks every network fault campaign shares
//! (`partition.rs`, `partition_cs.rs`): clients PUT, GET, DELETE and
//! conditionally PUT a set of registers through the gateway (and PUT a
//! fresh key now and then) while faults are injected; every operation is
//! recorded (invoke, ok / fail / unknown, times) and at the end the history
//! is checked with the linearizability checker, every acknowledged fresh
//! key must read back identical and no answer may carry bytes nobody
//! wrote. Also: metadata convergence, repair counters, and the
//! `CAIRN_FAULT_SECS` knob for long runs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use cairn_metadata::client::Consistency;
use cairn_metadata::types::*;
use hyper::{Method, StatusCode};

use crate::cluster::{wait_for, Cluster};
use crate::linearizability::{self, Event, Op, Ret};
use crate::netns::{get_same, S3Reply, S3};

/// Bucket the workload writes to (2+1: four chunkservers leave room to
/// lose one).
pub const BUCKET: &str = "faults";

/// Shared registers: the first half small (inline in the manifest), the
/// rest erasure coded.
pub const KEYS: usize = 6;

/// Concurrent S3 clients.
const WORKERS: usize = 4;

/// Length of an erasure-coded body before its tag line (above the 16 KiB
/// inline limit, one 2+1 stripe).
const EC_LEN: usize = 24 << 10;

/// Upper bound of one shard of a workload stripe: half an erasure-coded
/// body (2+1), tag line included (tags are short: `w3-12345`).
pub const MAX_SHARD: u64 = (EC_LEN as u64 + 64) / 2;

/// Seconds a campaign keeps its main fault going: `CAIRN_FAULT_SECS`, or
/// `default` (CI-short; `scripts/fault-campaigns.sh` passes longer runs).
pub fn fault_secs(default: u64) -> Duration {
    let secs = std::env::var("CAIRN_FAULT_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .unwrap_or(default);
    Duration::from_secs(secs)
}

/// Whether register `key` (or `KEYS`, a fresh key) is erasure coded.
pub fn is_ec(key: usize) -> bool {
    key >= KEYS / 2
}

/// The body a write of `tag` to register `key` carries: the tag, a
/// newline, then bytes derived from it (so a read proves which write it
/// returns and that every byte is right).
pub fn body_of(key: usize, tag: &str) -> Vec<u8> {
    let len = if is_ec(key) { EC_LEN } else { 300 };
    let seed = u64::from_le_bytes(
        blake3::hash(tag.as_bytes()).as_bytes()[..8]
            .try_into()
            .unwrap_or([0; 8]),
    );
    let mut b = format!("{tag}\n").into_bytes();
    b.extend(crate::common::data(len, seed));
    b
}

/// The S3 ETag of `body_of(key, tag)` (MD5, quoted), for `If-Match`.
fn etag_of(key: usize, tag: &str) -> String {
    use md5::Digest;
    format!("\"{}\"", hex_lower(&md5::Md5::digest(body_of(key, tag))))
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One finished S3 request, for per-phase checks.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Method and key (`PUT r3`, `CAS r1`, `DELETE r0`, `GET u-1-5`).
    pub what: String,
    /// Invocation, since the workload started.
    pub call: Duration,
    /// Reply (or give-up), since the workload started.
    pub done: Duration,
    /// Status, `None` when no reply came in time.
    pub status: Option<StatusCode>,
    /// S3 error code.
    pub code: Option<String>,
    /// S3 error message (why a request failed).
    pub message: Option<String>,
}

impl Outcome {
    /// A write (PUT, conditional PUT, DELETE) of an erasure-coded body:
    /// each one may place a shard on any chunkserver.
    pub fn ec_write(&self) -> bool {
        let Some((verb, key)) = self.what.split_once(' ') else {
            return false;
        };
        if verb != "PUT" && verb != "CAS" {
            return false;
        }
        match key.strip_prefix('r').and_then(|k| k.parse::<usize>().ok()) {
            Some(k) => is_ec(k),
            // Fresh keys are erasure coded.
            None => key.starts_with("u-"),
        }
    }

    fn ok(&self) -> bool {
        matches!(self.status, Some(StatusCode::OK | StatusCode::NO_CONTENT))
    }
}

/// What the workload recorded.
#[derive(Default)]
pub struct Record {
    /// Register operations, for the linearizability checker.
    pub history: Vec<Event>,
    /// Every request.
    pub outcomes: Vec<Outcome>,
    /// Unique keys acknowledged once, with their bodies.
    pub acked: Vec<(String, Vec<u8>)>,
    /// Bodies that decoded to no write we made (a wrong answer).
    pub wrong: Vec<String>,
}

/// S3 clients writing and reading `KEYS` registers (and one fresh key in
/// every fifth operation) until stopped.
pub struct Workload {
    /// When it started (the history's time zero).
    pub start: Instant,
    stop: Arc<AtomicBool>,
    rec: Arc<Mutex<Record>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    /// Starts `WORKERS` clients on `s3`.
    pub fn start(s3: Arc<S3>) -> Workload {
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let rec = Arc::new(Mutex::new(Record::default()));
        let tasks = (0..WORKERS)
            .map(|w| {
                let (s3, stop, rec) = (s3.clone(), stop.clone(), rec.clone());
                tokio::spawn(async move {
                    let mut n = 0usize;
                    while !stop.load(Ordering::SeqCst) {
                        n += 1;
                        one_op(&s3, &rec, start, w, n).await;
                    }
                })
            })
            .collect();
        Workload {
            start,
            stop,
            rec,
            tasks,
        }
    }

    /// Time since the workload started.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Stops the clients and returns what they recorded.
    pub async fn finish(self) -> anyhow::Result<Record> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await?;
        }
        let rec = std::mem::take(&mut *self.rec.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(rec)
    }

    /// Requests matching `f` so far.
    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        let rec = self.rec.lock().unwrap_or_else(|e| e.into_inner());
        rec.outcomes.iter().filter(|o| f(o)).count()
    }

    /// Acknowledged PUTs that completed inside `[from, to]`.
    pub fn acked_between(&self, from: Duration, to: Duration) -> usize {
        self.count(|o| {
            o.what.starts_with("PUT")
                && o.status == Some(StatusCode::OK)
                && o.done >= from
                && o.done <= to
        })
    }

    /// Successful GETs of erasure-coded registers that completed inside
    /// `[from, to]`.
    pub fn ec_reads_between(&self, from: Duration, to: Duration) -> usize {
        self.count(|o| {
            let ec = o
                .what
                .strip_prefix("GET r")
                .and_then(|k| k.parse::<usize>().ok())
                .is_some_and(is_ec);
            ec && o.status == Some(StatusCode::OK) && o.done >= from && o.done <= to
        })
    }
}

/// What one operation does, by its number `n` in a worker's sequence.
enum Kind {
    Get,
    Put,
    /// GET, then PUT with `If-Match` on the ETag just read.
    Cas,
    Delete,
    /// PUT of a key nobody else writes.
    Fresh,
}

/// Of every 20 operations: 8 GETs, 4 fresh keys, 5 PUTs, 2 swaps, 1
/// DELETE (rare, or registers would mostly read as absent). A worker
/// writes the registers of its own parity and reads the others'.
fn kind(n: usize) -> Kind {
    match n % 20 {
        0 | 5 | 10 | 15 => Kind::Fresh,
        4 | 14 => Kind::Cas,
        8 => Kind::Delete,
        m if m % 2 == 0 => Kind::Put,
        _ => Kind::Get,
    }
}

/// Time since `start`, in the history's unit.
fn ns(start: Instant) -> u128 {
    start.elapsed().as_nanos()
}

async fn one_op(s3: &S3, rec: &Mutex<Record>, start: Instant, w: usize, n: usize) {
    let key = (w + n) % KEYS;
    let tag = format!("w{w}-{n}");
    let name = format!("r{key}");
    match kind(n) {
        Kind::Fresh => {
            let name = format!("u-{w}-{n}");
            let body = body_of(KEYS, &tag);
            let (r, o) = timed(start, format!("PUT {name}"), async {
                s3.put(BUCKET, &name, Bytes::from(body.clone())).await
            })
            .await;
            let mut rec = lock(rec);
            if o.status == Some(StatusCode::OK) && r.is_ok_and(|r| r.cut.is_none()) {
                rec.acked.push((name, body));
            }
            rec.outcomes.push(o);
        }
        Kind::Put => {
            let body = Bytes::from(body_of(key, &tag));
            let call = ns(start);
            let (_, o) = timed(start, format!("PUT {name}"), s3.put(BUCKET, &name, body)).await;
            write_event(rec, name, Op::Put(tag), call, o, |s| s == StatusCode::OK);
        }
        Kind::Delete => {
            let call = ns(start);
            let (_, o) = timed(start, format!("DELETE {name}"), async {
                let path = format!("/{BUCKET}/{name}");
                s3.send(
                    Method::DELETE,
                    &path,
                    &[],
                    Bytes::new(),
                    Duration::from_secs(30),
                )
                .await
            })
            .await;
            write_event(rec, name, Op::Delete, call, o, |s| {
                s == StatusCode::NO_CONTENT || s == StatusCode::OK
            });
        }
        Kind::Get => {
            read(s3, rec, start, key).await;
        }
        Kind::Cas => {
            // Only a register that holds a value can be swapped.
            let Some(Some(expected)) = read(s3, rec, start, key).await else {
                return;
            };
            let body = Bytes::from(body_of(key, &tag));
            let hdr = [("if-match", etag_of(key, &expected))];
            let call = ns(start);
            let (_, o) = timed(start, format!("CAS {name}"), async {
                let path = format!("/{BUCKET}/{name}");
                s3.send(Method::PUT, &path, &hdr, body, Duration::from_secs(30))
                    .await
            })
            .await;
            let ret = match (o.status, o.code.as_deref()) {
                (Some(StatusCode::OK), _) => Ret::Cas(true),
                (Some(StatusCode::PRECONDITION_FAILED), Some("PreconditionFailed")) => {
                    Ret::Cas(false)
                }
                _ => Ret::Unknown,
            };
            let done = match ret {
                Ret::Unknown => u128::MAX,
                _ => o.done.as_nanos(),
            };
            let mut rec = lock(rec);
            rec.history.push(Event {
                key: name,
                op: Op::Cas { expected, new: tag },
                ret,
                call,
                done,
            });
            rec.outcomes.push(o);
        }
    }
}

fn lock(rec: &Mutex<Record>) -> std::sync::MutexGuard<'_, Record> {
    rec.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs one request, timing it.
async fn timed(
    start: Instant,
    what: String,
    f: impl std::future::Future<Output = anyhow::Result<S3Reply>>,
) -> (anyhow::Result<S3Reply>, Outcome) {
    let call = start.elapsed();
    let r = f.await;
    let done = start.elapsed();
    let (status, code, message) = match &r {
        Ok(r) => (Some(r.status), r.code(), r.message()),
        Err(e) => (None, None, Some(format!("{e:#}"))),
    };
    let o = Outcome {
        what,
        call,
        done,
        status,
        code,
        message,
    };
    (r, o)
}

/// Records a register write: acknowledged when `acked(status)`, else of
/// unknown outcome (it may still take effect).
fn write_event(
    rec: &Mutex<Record>,
    key: String,
    op: Op,
    call: u128,
    o: Outcome,
    acked: impl Fn(StatusCode) -> bool,
) {
    let ok = o.status.is_some_and(acked);
    let mut rec = lock(rec);
    rec.history.push(Event {
        key,
        op,
        ret: if ok { Ret::Ok } else { Ret::Unknown },
        call,
        done: if ok { o.done.as_nanos() } else { u128::MAX },
    });
    rec.outcomes.push(o);
}

/// GETs register `key` and records the read: `Some(value)` when it
/// answered (`Some(None)`: absent), `None` when it did not.
async fn read(s3: &S3, rec: &Mutex<Record>, start: Instant, key: usize) -> Option<Option<String>> {
    let name = format!("r{key}");
    let call = ns(start);
    let (r, o) = timed(start, format!("GET {name}"), s3.get(BUCKET, &name)).await;
    let mut rec = lock(rec);
    let done = o.done.as_nanos();
    rec.outcomes.push(o);
    let value = match &r {
        Ok(r) if r.status == StatusCode::OK && r.cut.is_none() => match decode(key, &r.body) {
            Some(tag) => Some(tag),
            None => {
                rec.wrong.push(format!(
                    "GET {name}: {} bytes not written by anyone",
                    r.body.len()
                ));
                return None;
            }
        },
        Ok(r) if r.status == StatusCode::NOT_FOUND && r.code().as_deref() == Some("NoSuchKey") => {
            None
        }
        // A read without an answer (or a cut body) tells nothing.
        _ => return None,
    };
    rec.history.push(Event {
        key: name,
        op: Op::Get,
        ret: Ret::Value(value.clone()),
        call,
        done,
    });
    Some(value)
}

/// The tag of a body read from register `key`, if every byte is the one
/// that write carried.
fn decode(key: usize, body: &[u8]) -> Option<String> {
    let got = body.split(|&b| b == b'\n').next().unwrap_or_default();
    let got = String::from_utf8_lossy(got).into_owned();
    (body_of(key, &got) == body).then_some(got)
}

/// Reads every register once more after the faults (into the history) and
/// checks it, then checks every acknowledged fresh key reads back
/// identical and no answer was wrong or other than a 503 failure.
pub async fn check_record(s3: &S3, start: Instant, mut rec: Record) -> anyhow::Result<()> {
    let t = Duration::from_secs(30);
    for key in 0..KEYS {
        let name = format!("r{key}");
        let deadline = Instant::now() + t;
        loop {
            let call = start.elapsed();
            let r = s3.get(BUCKET, &name).await?;
            let done = start.elapsed();
            let value = if r.status == StatusCode::OK {
                Some(
                    decode(key, &r.body)
                        .with_context(|| format!("final GET {name}: wrong bytes"))?,
                )
            } else if r.status == StatusCode::NOT_FOUND {
                None
            } else if Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            } else {
                bail!("final GET {name}: {} {:?}", r.status, r.code());
            };
            rec.history.push(Event {
                key: name.clone(),
                op: Op::Get,
                ret: Ret::Value(value),
                call: call.as_nanos(),
                done: done.as_nanos(),
            });
            break;
        }
    }
    if !rec.wrong.is_empty() {
        bail!("wrong answers: {:?}", rec.wrong);
    }
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for o in &rec.outcomes {
        let k = match (o.status, &o.code) {
            (Some(s), Some(c)) => format!("{} {c}", s.as_u16()),
            (Some(s), None) => s.as_u16().to_string(),
            (None, _) => "no reply".into(),
        };
        let verb = o.what.split(' ').next().unwrap_or_default();
        *by_status.entry(format!("{verb} {k}")).or_default() += 1;
    }
    let slowest = rec
        .outcomes
        .iter()
        .map(|o| o.done.saturating_sub(o.call))
        .max()
        .unwrap_or_default();
    eprintln!(
        "history: {} register ops, {} fresh keys acked, slowest reply {slowest:?}, outcomes {by_status:?}",
        rec.history.len(),
        rec.acked.len()
    );
    // Why requests failed, once per distinct reason.
    let mut why: BTreeMap<String, usize> = BTreeMap::new();
    let failed = |o: &&Outcome| o.status.is_none_or(|s| s.is_server_error());
    for o in rec.outcomes.iter().filter(failed) {
        if let Some(m) = &o.message {
            let verb = o.what.split(' ').next().unwrap_or_default();
            *why.entry(format!("{verb}: {m}")).or_default() += 1;
        }
    }
    if !why.is_empty() {
        eprintln!("failure reasons: {why:#?}");
    }
    // Failures are 503s the SDKs retry (a lost condition is a 412), never
    // another error, and every request was answered (no hang).
    for o in &rec.outcomes {
        let fine = o.ok()
            || o.status == Some(StatusCode::SERVICE_UNAVAILABLE)
            || (o.what.starts_with("GET") && o.status == Some(StatusCode::NOT_FOUND))
            || (o.what.starts_with("CAS") && o.status == Some(StatusCode::PRECONDITION_FAILED));
        if !fine {
            bail!("{} at {:?}: {:?} {:?}", o.what, o.call, o.status, o.code);
        }
    }
    // The conditional path was exercised: some swap was decided.
    let decided = rec
        .history
        .iter()
        .filter(|e| matches!(e.ret, Ret::Cas(_)))
        .count();
    if decided == 0 {
        bail!("no conditional PUT was ever decided (200 or 412)");
    }
    if let Err(e) = linearizability::check(&rec.history) {
        bail!("S3 history is not linearizable: {e}\n{:#?}", rec.history);
    }
    for (k, b) in &rec.acked {
        get_same(s3, BUCKET, k, b, t).await?;
    }
    Ok(())
}

/// Waits until every metadata node agrees on the leader and term and has
/// applied at least what the leader had applied when asked; with
/// `registers` (clients stopped), also until their local (stale) views of
/// every register are identical.
pub async fn converged(c: &Cluster, registers: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = match views_agree(c, registers).await {
            Ok(()) => return Ok(()),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!("metadata nodes did not converge: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn views_agree(c: &Cluster, registers: bool) -> anyhow::Result<()> {
    let l = c.leader().await?;
    let ls = status(c, l).await.context("leader status")?;
    for i in 0..c.metas.len() {
        let s = status(c, i)
            .await
            .with_context(|| format!("node {} silent", i + 1))?;
        if s.leader != ls.leader || s.term != ls.term || s.last_applied < ls.last_applied {
            bail!(
                "node {}: {:?}/{}/{:?}, leader {:?}/{}/{:?}",
                i + 1,
                s.leader,
                s.term,
                s.last_applied,
                ls.leader,
                ls.term,
                ls.last_applied
            );
        }
    }
    if !registers {
        return Ok(());
    }
    for key in 0..KEYS {
        let q = Query::GetObject {
            bucket: BUCKET.into(),
            key: format!("r{key}"),
        };
        let mut seen = Vec::new();
        for i in 0..c.metas.len() {
            let v = match c.meta_at(i).query(&q, Consistency::Stale).await? {
                QueryResult::Object(m) => Some(m.etag),
                _ => None,
            };
            seen.push(v);
        }
        if seen.iter().any(|v| *v != seen[0]) {
            bail!("nodes disagree on r{key}: {seen:?}");
        }
    }
    Ok(())
}

/// Raft id and term of node `i`'s view.
pub async fn status(c: &Cluster, i: usize) -> Option<RaftStatus> {
    c.meta_at(i).status().await.ok()
}

/// Waits until a node other than `old` leads in a term above `term`, as
/// seen by that node.
pub async fn new_leader(
    c: &Cluster,
    old: usize,
    term: u64,
    within: Duration,
) -> anyhow::Result<usize> {
    let deadline = Instant::now() + within;
    loop {
        for i in (0..c.metas.len()).filter(|&i| i != old) {
            if let Some(s) = status(c, i).await {
                if s.leader == Some(s.id) && s.term > term {
                    return Ok(i);
                }
            }
        }
        if Instant::now() > deadline {
            bail!("no new leader within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Bytes of shards the chunkservers' repair executors rebuilt and stored
/// since they started (`cairn_repair_rebuilt_bytes`, summed): counts every
/// rebuild, committed or refused, whichever node led.
pub async fn rebuilt_bytes(c: &Cluster) -> anyhow::Result<u64> {
    let mut total = 0.0;
    for p in &c.chunkservers {
        let (_, samples) = crate::ops::scrape(&p.addr_str()).await?;
        total += crate::ops::sum(&samples, "cairn_repair_rebuilt_bytes", &[]);
    }
    Ok(total as u64)
}

/// Waits for a planner pass that started after `since` (ms since the
/// epoch) and saw every stripe at full redundancy (`full` = m) with nothing
/// queued or in flight and every chunkserver Up.
pub async fn wait_full(
    c: &Cluster,
    full: i32,
    since: u64,
    secs: u64,
) -> anyhow::Result<ClusterStatus> {
    let r = wait_for("full redundancy, every chunkserver up", secs, || async {
        let st = c.meta().cluster_status().await?;
        let ok = st.last_plan_ms.is_some_and(|t| t > since)
            && st.redundancy.keys().all(|r| *r == full)
            && st.repair_queue == 0
            && st.repairs_in_flight == 0
            && st
                .chunkservers
                .iter()
                .all(|cs| cs.state == ChunkserverState::Up);
        Ok(ok.then_some(st))
    })
    .await;
    if r.is_err() {
        if let Ok(st) = c.meta().cluster_status().await {
            eprintln!(
                "redundancy {:?} queue {} in flight {} states {:?}",
                st.redundancy,
                st.repair_queue,
                st.repairs_in_flight,
                st.chunkservers
                    .iter()
                    .map(|cs| (cs.id, cs.state))
                    .collect::<Vec<_>>()
            );
        }
    }
    r
}
