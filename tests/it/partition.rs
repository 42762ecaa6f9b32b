//! Network fault campaigns on the multi-host harness (`netns.rs`, issue
//! 16). Clients write and read a set of keys through the S3 gateway while
//! faults are injected; every operation is recorded (invoke, ok / fail /
//! unknown, times) and the history is checked with the linearizability
//! checker; at the end every acknowledged object must read back identical,
//! every metadata node must converge and no log may show a panic.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use cairn_metadata::client::Consistency;
use cairn_metadata::types::*;
use hyper::{Method, StatusCode};

use crate::cluster::{create_bucket, fake_manifest, Cluster};
use crate::common::{http, SECRET};
use crate::linearizability::{self, Event, Op, Ret};
use crate::netns::{assert_no_panics, get_same, put_ok, signal, HostCluster, Net, S3};

/// Bucket the workload writes to (2+1: four chunkservers leave room to
/// lose one).
const BUCKET: &str = "faults";

/// Shared registers: the first half small (inline in the manifest), the
/// rest erasure coded.
const KEYS: usize = 6;

/// Concurrent S3 clients.
const WORKERS: usize = 4;

/// The body a write of `tag` to register `key` carries: the tag, a
/// newline, then bytes derived from it (so a read proves which write it
/// returns and that every byte is right).
fn body_of(key: usize, tag: &str) -> Vec<u8> {
    let len = if key < KEYS / 2 { 300 } else { 24 << 10 };
    let seed = u64::from_le_bytes(
        blake3::hash(tag.as_bytes()).as_bytes()[..8]
            .try_into()
            .unwrap_or([0; 8]),
    );
    let mut b = format!("{tag}\n").into_bytes();
    b.extend(crate::common::data(len, seed));
    b
}

/// One finished S3 request, for per-phase checks.
#[derive(Debug, Clone)]
struct Outcome {
    what: String,
    call: Duration,
    done: Duration,
    status: Option<StatusCode>,
    code: Option<String>,
}

/// What the workload recorded.
#[derive(Default)]
struct Record {
    history: Vec<Event>,
    outcomes: Vec<Outcome>,
    /// Unique keys acknowledged once, with their bodies.
    acked: Vec<(String, Vec<u8>)>,
    /// Bodies that decoded to no write we made (a wrong answer).
    wrong: Vec<String>,
}

/// S3 clients writing and reading `KEYS` registers (and one fresh key in
/// every fifth operation) until stopped.
struct Workload {
    start: Instant,
    stop: Arc<AtomicBool>,
    rec: Arc<Mutex<Record>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    fn start(s3: Arc<S3>) -> Workload {
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

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Stops the clients and returns what they recorded.
    async fn finish(self) -> anyhow::Result<Record> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await?;
        }
        let rec = std::mem::take(&mut *self.rec.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(rec)
    }

    /// Acknowledged PUTs that completed inside `[from, to]`.
    fn acked_between(&self, from: Duration, to: Duration) -> usize {
        let rec = self.rec.lock().unwrap_or_else(|e| e.into_inner());
        rec.outcomes
            .iter()
            .filter(|o| o.what.starts_with("PUT") && o.status == Some(StatusCode::OK))
            .filter(|o| o.done >= from && o.done <= to)
            .count()
    }
}

async fn one_op(s3: &S3, rec: &Mutex<Record>, start: Instant, w: usize, n: usize) {
    let key = (w + n) % KEYS;
    let unique = n.is_multiple_of(5);
    let is_put = unique || n.is_multiple_of(2);
    let tag = format!("w{w}-{n}");
    let (name, body) = if unique {
        (format!("u-{w}-{n}"), body_of(KEYS, &tag))
    } else {
        (format!("r{key}"), body_of(key, &tag))
    };
    let call = start.elapsed();
    let r = if is_put {
        s3.put(BUCKET, &name, Bytes::from(body.clone())).await
    } else {
        s3.get(BUCKET, &name).await
    };
    let done = start.elapsed();
    let mut rec = rec.lock().unwrap_or_else(|e| e.into_inner());
    let (status, code) = match &r {
        Ok(r) => (Some(r.status), r.code()),
        Err(_) => (None, None),
    };
    rec.outcomes.push(Outcome {
        what: format!("{} {name}", if is_put { "PUT" } else { "GET" }),
        call,
        done,
        status,
        code,
    });
    let ok = matches!(&r, Ok(r) if r.status == StatusCode::OK && r.cut.is_none());
    if is_put {
        if unique {
            if ok {
                rec.acked.push((name, body));
            }
            return;
        }
        rec.history.push(Event {
            key: name,
            op: Op::Put(tag),
            ret: if ok { Ret::Ok } else { Ret::Unknown },
            call: call.as_nanos(),
            done: if ok { done.as_nanos() } else { u128::MAX },
        });
        return;
    }
    let value = match &r {
        Ok(r) if ok => {
            let got = r.body.split(|&b| b == b'\n').next().unwrap_or_default();
            let got = String::from_utf8_lossy(got).into_owned();
            if body_of(key, &got) != r.body {
                rec.wrong.push(format!(
                    "GET {name}: {} bytes not written by anyone",
                    r.body.len()
                ));
                return;
            }
            Some(got)
        }
        Ok(r) if r.status == StatusCode::NOT_FOUND && r.code().as_deref() == Some("NoSuchKey") => {
            None
        }
        // A read without an answer tells nothing.
        _ => return,
    };
    rec.history.push(Event {
        key: name,
        op: Op::Get,
        ret: Ret::Value(value),
        call: call.as_nanos(),
        done: done.as_nanos(),
    });
}

/// Reads every register once more after the faults (into the history) and
/// checks it, then checks every acknowledged fresh key reads back
/// identical and no answer was wrong.
async fn check_record(s3: &S3, start: Instant, mut rec: Record) -> anyhow::Result<()> {
    let t = Duration::from_secs(30);
    for key in 0..KEYS {
        let name = format!("r{key}");
        let deadline = Instant::now() + t;
        loop {
            let call = start.elapsed();
            let r = s3.get(BUCKET, &name).await?;
            let done = start.elapsed();
            let value = if r.status == StatusCode::OK {
                let got = r.body.split(|&b| b == b'\n').next().unwrap_or_default();
                let got = String::from_utf8_lossy(got).into_owned();
                if body_of(key, &got) != r.body {
                    bail!("final GET {name}: wrong bytes");
                }
                Some(got)
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
        *by_status
            .entry(format!("{} {k}", &o.what[..3]))
            .or_default() += 1;
    }
    eprintln!(
        "history: {} register ops, {} fresh keys acked, outcomes {by_status:?}",
        rec.history.len(),
        rec.acked.len()
    );
    // Failures are 503s the SDKs retry, never another error.
    for o in &rec.outcomes {
        let fine = match o.status {
            Some(s) => {
                s == StatusCode::OK
                    || s == StatusCode::NOT_FOUND
                    || s == StatusCode::SERVICE_UNAVAILABLE
            }
            None => false,
        };
        if !fine {
            bail!("{} at {:?}: {:?} {:?}", o.what, o.call, o.status, o.code);
        }
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
async fn converged(c: &Cluster, registers: bool) -> anyhow::Result<()> {
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
async fn status(c: &Cluster, i: usize) -> Option<RaftStatus> {
    c.meta_at(i).status().await.ok()
}

/// Waits until a node other than `old` leads in a term above `term`, as
/// seen by that node.
async fn new_leader(c: &Cluster, old: usize, term: u64, within: Duration) -> anyhow::Result<usize> {
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

/// A write sent straight to node `i` (no leader following, no retry):
/// whether it was acknowledged.
async fn write_at(c: &Cluster, i: usize, cmd: Command) -> anyhow::Result<bool> {
    let once = Command::Once {
        id: StripeId::random(),
        inner: Box::new(cmd),
    };
    let url = format!("http://{}/v1/write", c.meta_addrs[i]);
    let body = Bytes::from(serde_json::to_vec(&once)?);
    let r = http(Method::POST, &url, Some(SECRET), &[], body).await?;
    if r.status != StatusCode::OK {
        return Ok(false);
    }
    let res: CommandResult = serde_json::from_slice(&r.body).context("write reply")?;
    Ok(matches!(res, CommandResult::Ok))
}

/// A linearizable read sent straight to node `i`: the register's ETag
/// (`Some(None)`: absent), or `None` when the node gave no answer.
async fn read_at(c: &Cluster, i: usize, key: &str) -> anyhow::Result<Option<Option<String>>> {
    let url = format!("http://{}/v1/read", c.meta_addrs[i]);
    let q = Query::GetObject {
        bucket: "probe".into(),
        key: key.into(),
    };
    let body = Bytes::from(serde_json::to_vec(&q)?);
    let Ok(r) = http(Method::POST, &url, Some(SECRET), &[], body).await else {
        return Ok(None);
    };
    if r.status != StatusCode::OK {
        return Ok(None);
    }
    Ok(
        match serde_json::from_slice::<QueryResult>(&r.body).context("read reply")? {
            QueryResult::Object(m) => Some(Some(m.etag)),
            QueryResult::Err(MetaError::NoSuchKey { .. }) => Some(None),
            other => bail!("read at node {}: {other:?}", i + 1),
        },
    )
}

fn put_probe(key: &str, tag: &str) -> Command {
    Command::PutObject {
        bucket: "probe".into(),
        key: key.into(),
        manifest: fake_manifest(tag),
        condition: PutCondition::None,
    }
}

/// Issue 16: the metadata leader is cut off from the other two nodes and
/// from the gateway while S3 clients write through the gateway on the
/// majority side: the majority elects a leader and writes continue; writes
/// sent straight to the isolated old leader are never acknowledged (nor
/// visible later); after healing every node converges. Then the gateway is
/// cut off from the majority: every request it answers meanwhile is a 503
/// (SlowDown / ServiceUnavailable) within the metadata client's deadline,
/// never a wrong answer; after healing writes succeed again.
#[test]
fn leader_partition_then_gateway_partition() -> anyhow::Result<()> {
    let net = Net::new(3, 4)?;
    net.run(|| async {
        let hc = HostCluster::start(&net, &[]).await?;
        let c = &hc.cluster;
        hc.s3.create_bucket(BUCKET, "2+1").await?;
        create_bucket(&c.meta(), "probe").await?;
        let s3 = hc.s3.clone();
        let wl = Workload::start(s3.clone());
        tokio::time::sleep(Duration::from_secs(2)).await;

        // Phase 1: the leader alone on its side.
        let l = c.leader().await?;
        let term = status(c, l).await.context("leader status")?.term;
        let hosts = &net.hosts;
        let others: Vec<_> = (0..3).filter(|&i| i != l).collect();
        let mut majority: Vec<_> = others.iter().map(|&i| &hosts.metas[i]).collect();
        majority.push(&hosts.gateway);
        net.partition(&[&hosts.metas[l]], &majority)?;
        let cut = wl.now();
        eprintln!("partitioned leader node {} (term {term}) at {cut:?}", l + 1);
        // Writes straight to the isolated old leader, from the client
        // host (which still reaches it): none may be acknowledged.
        let probes: Vec<_> = (0..3)
            .map(|i| {
                let (addr, cmd) = (i, put_probe("isolated", &format!("old-leader-{i}")));
                async move {
                    tokio::time::sleep(Duration::from_millis(300 * addr as u64)).await;
                    write_at(c, l, cmd).await
                }
            })
            .collect();
        let probe_results = futures::future::join_all(probes);
        let elected = new_leader(c, l, term, Duration::from_secs(15));
        let (probe_results, elected) = tokio::join!(probe_results, elected);
        let nl = elected?;
        for r in probe_results {
            // No reply at all (timeout) also means not acknowledged.
            if let Ok(true) = r {
                bail!("the isolated old leader acknowledged a write");
            }
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let acked = wl.acked_between(cut, wl.now());
        eprintln!(
            "new leader node {}; {acked} PUTs acknowledged during the partition",
            nl + 1
        );
        assert!(acked > 0, "writes must continue on the majority side");
        net.heal()?;
        converged(c, false).await?;
        match read_at(c, c.leader().await?, "isolated").await? {
            Some(None) => {}
            other => bail!("a write to the isolated leader became visible: {other:?}"),
        }

        // Phase 2: the gateway cut off from the majority (it still reaches
        // one follower, which can only point at a leader it cannot reach).
        let l = c.leader().await?;
        let f = (0..3).find(|&i| i != l).context("no follower")?;
        net.partition(&[&hosts.gateway], &[&hosts.metas[l], &hosts.metas[f]])?;
        let gw_cut = wl.now();
        tokio::time::sleep(Duration::from_secs(23)).await;
        // Taken before healing: the rules go away during `heal`.
        let gw_heal = wl.now();
        net.heal()?;
        put_ok(&s3, BUCKET, "after-heal", b"after", Duration::from_secs(30)).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let start = wl.start;
        let rec = wl.finish().await?;
        let inside: Vec<_> = rec
            .outcomes
            .iter()
            .filter(|o| o.done > gw_cut + Duration::from_secs(1) && o.done < gw_heal)
            .collect();
        eprintln!(
            "{} requests answered while the gateway was cut off",
            inside.len()
        );
        assert!(
            !inside.is_empty(),
            "requests must fail in bounded time, not hang"
        );
        for o in &inside {
            let slow = matches!(o.code.as_deref(), Some("SlowDown" | "ServiceUnavailable"));
            if o.status != Some(StatusCode::SERVICE_UNAVAILABLE) || !slow {
                bail!(
                    "{} while the gateway was cut off ({gw_cut:?}..{gw_heal:?}): {o:?}",
                    o.what
                );
            }
            assert!(
                o.done - o.call < Duration::from_secs(25),
                "{} took {:?}",
                o.what,
                o.done - o.call
            );
        }
        check_record(&s3, start, rec).await?;
        converged(c, true).await?;
        assert_no_panics(hc.procs())?;
        Ok(())
    })
}

/// Issue 16: the leader is paused (SIGSTOP) for longer than the election
/// timeout while S3 clients keep writing, then resumed: the others elect a
/// leader; the resumed node steps down (learns the new term) and, asked
/// straight away, never serves a stale read nor acknowledges a write that
/// is then missing; the history stays linearizable.
#[test]
fn paused_leader_steps_down() -> anyhow::Result<()> {
    let net = Net::new(3, 4)?;
    net.run(|| async {
        let hc = HostCluster::start(&net, &[]).await?;
        let c = &hc.cluster;
        hc.s3.create_bucket(BUCKET, "2+1").await?;
        let meta = c.meta();
        create_bucket(&meta, "probe").await?;
        let s3 = hc.s3.clone();
        let wl = Workload::start(s3.clone());
        tokio::time::sleep(Duration::from_secs(2)).await;

        let l = c.leader().await?;
        let term = status(c, l).await.context("leader status")?.term;
        if meta.write(&put_probe("fence", "before")).await? != CommandResult::Ok {
            bail!("probe write failed");
        }
        signal(&c.metas[l], libc::SIGSTOP)?;
        let paused = wl.now();
        eprintln!("paused leader node {} (term {term})", l + 1);
        let nl = new_leader(c, l, term, Duration::from_secs(15)).await?;
        // A write the new leader commits while the old one sleeps.
        let fence = c.meta_at(nl);
        if fence.write(&put_probe("fence", "after")).await? != CommandResult::Ok {
            bail!("fence write failed");
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
        let acked = wl.acked_between(paused, wl.now());
        eprintln!(
            "new leader node {}; {acked} PUTs acknowledged during the pause",
            nl + 1
        );
        assert!(acked > 0, "writes must continue while the leader is paused");
        signal(&c.metas[l], libc::SIGCONT)?;
        // Ask the resumed node at once, concurrently: reads must see the
        // fence write or fail; writes it acknowledges must survive.
        let mut probes = Vec::new();
        for i in 0..8u64 {
            probes.push(async move {
                tokio::time::sleep(Duration::from_millis(100 * i)).await;
                let read = read_at(c, l, "fence").await;
                let tag = format!("resumed-{i}");
                let wrote = write_at(c, l, put_probe(&format!("resumed-{i}"), &tag)).await;
                (i, read, wrote)
            });
        }
        let mut acked_probes = Vec::new();
        for (i, read, wrote) in futures::future::join_all(probes).await {
            match read? {
                // No answer: fine, it had not caught up yet.
                None => {}
                Some(Some(v)) if v == "after" => {}
                other => bail!("the resumed old leader served a stale read: {other:?}"),
            }
            if let Ok(true) = wrote {
                acked_probes.push(i);
            }
        }
        // It stepped down: it knows a newer term than the one it led.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = status(c, l).await {
                if s.term > term {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("the resumed node never learned the new term");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Whatever it acknowledged after resuming is in the cluster's state.
        for i in &acked_probes {
            let q = Query::GetObject {
                bucket: "probe".into(),
                key: format!("resumed-{i}"),
            };
            match meta.query(&q, Consistency::Linearizable).await? {
                QueryResult::Object(m) if m.etag == format!("resumed-{i}") => {}
                other => bail!("write resumed-{i} acknowledged but missing: {other:?}"),
            }
        }
        eprintln!(
            "{} writes acknowledged by the resumed node",
            acked_probes.len()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let start = wl.start;
        let rec = wl.finish().await?;
        check_record(&s3, start, rec).await?;
        converged(c, true).await?;
        assert_no_panics(hc.procs())?;
        Ok(())
    })
}
