//! Rolling restart (the README's "Rolling upgrade" procedure) under load:
//! 3 metadata nodes, 6 chunkservers in 3 zones and 2 S3 gateways, every
//! role on a fixed port (as on real hosts). A client loop PUTs and GETs
//! (and verifies) objects through the gateways, round-robin, the whole
//! time, while each metadata follower, then the leader, then each
//! chunkserver, then each gateway is stopped with SIGTERM and started
//! again, waiting for it to be ready before the next. A gateway is taken
//! out of the loop's rotation before it stops and put back once ready (what
//! a load balancer with health checks does). Zero failed requests: any
//! error status, transport error or wrong body is a failure; the only
//! retry is the one a load balancer makes, on the other gateway after a
//! connection was refused (nothing was sent).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use cairn_metadata::client::Consistency;
use cairn_metadata::net::NetError;
use cairn_metadata::types::{ChunkserverState, ListRequest, Query, QueryResult};
use hyper::{Method, StatusCode};

use crate::cluster::{free_port, now_ms, Cluster, Opts};
use crate::common::{data, Proc, SECRET};
use crate::s3::{drain, RawS3};

/// Ready within this long after a restart, or the test fails.
const READY_SECS: u64 = 60;

/// Concurrent client loops.
const LOOPS: usize = 2;

/// The gateways behind the loop's "load balancer", and which are in
/// rotation.
struct Balancer {
    s3: Vec<RawS3>,
    in_rotation: Vec<AtomicBool>,
    next: AtomicUsize,
}

/// One failed request, as the user would have seen it.
#[derive(Debug)]
struct Failure {
    phase: String,
    what: String,
}

impl Balancer {
    /// Sends one request to the next gateway in rotation; after a refused
    /// connection (nothing sent) tries the next one, as a load balancer
    /// does. Returns the status and body.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Vec<u8>)> {
        let n = self.s3.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = None;
        for attempt in 0..2 * n {
            let i = (start + attempt) % n;
            if !self.in_rotation[i].load(Ordering::SeqCst) {
                continue;
            }
            match self.s3[i]
                .send(
                    method.clone(),
                    path,
                    &[],
                    body.clone(),
                    Duration::from_secs(30),
                )
                .await
            {
                Ok(resp) => {
                    let status = resp.status();
                    let (bytes, cut) = drain(resp).await;
                    if let Some(cut) = cut {
                        bail!("gateway {i}: body cut: {cut}");
                    }
                    return Ok((status, bytes));
                }
                Err(e) if matches!(e.downcast_ref::<NetError>(), Some(NetError::Connect(_))) => {
                    last = Some(format!("gateway {i}: {e:#}"));
                }
                Err(e) => bail!("gateway {i}: {e:#}"),
            }
        }
        bail!("no gateway accepted a connection: {last:?}")
    }
}

/// PUT, GET and verify fresh objects (inline and erasure-coded sizes) until
/// `stop`; every failure is recorded with the phase it happened in.
async fn client_loop(
    lb: Arc<Balancer>,
    bucket: String,
    worker: usize,
    phase: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    ok_ops: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<Failure>>>,
) -> Vec<(String, u64, usize)> {
    let mut written = Vec::new();
    let mut n: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let key = format!("w{worker}/obj{n}");
        // 3 KiB inline, 300 KiB one 4+2 stripe, 1.5 MiB several stripes.
        let len = [3 << 10, 300 << 10, 1536 << 10][(n % 3) as usize];
        let seed = (worker as u64) << 32 | n;
        let body = Bytes::from(data(len, seed));
        let fail = |what: String| {
            let phase = phase.lock().map(|p| p.clone()).unwrap_or_default();
            if let Ok(mut f) = failures.lock() {
                f.push(Failure { phase, what });
            }
        };
        let path = format!("/{bucket}/{key}");
        match lb.send(Method::PUT, &path, body.clone()).await {
            Ok((StatusCode::OK, _)) => {
                ok_ops.fetch_add(1, Ordering::Relaxed);
                written.push((key.clone(), seed, len));
            }
            Ok((s, b)) => {
                fail(format!("PUT {key}: {s} {}", String::from_utf8_lossy(&b)));
                continue;
            }
            Err(e) => {
                fail(format!("PUT {key}: {e:#}"));
                continue;
            }
        }
        match lb.send(Method::GET, &path, Bytes::new()).await {
            Ok((StatusCode::OK, b)) if b == body => {
                ok_ops.fetch_add(1, Ordering::Relaxed);
            }
            Ok((StatusCode::OK, b)) => fail(format!(
                "GET {key}: wrong body ({} bytes, want {len})",
                b.len()
            )),
            Ok((s, b)) => fail(format!("GET {key}: {s} {}", String::from_utf8_lossy(&b))),
            Err(e) => fail(format!("GET {key}: {e:#}")),
        }
    }
    written
}

/// Polls `addr`'s `/health/ready` until it answers 200.
async fn wait_ready(addr: &str, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(READY_SECS);
    loop {
        let r = crate::common::http(
            Method::GET,
            &format!("http://{addr}/health/ready"),
            None,
            &[],
            Bytes::new(),
        )
        .await;
        if matches!(&r, Ok(r) if r.status == StatusCode::OK) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{what} not ready within {READY_SECS} s: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM `p`, wait for a clean exit, start it again with the same flags.
fn graceful_restart(p: &mut Proc) -> anyhow::Result<()> {
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        let status = p.terminate(Duration::from_secs(30))?;
        ensure!(status.success(), "exited with {status} after SIGTERM");
        p.restart()
    })
}

/// Waits until metadata node `i` has applied everything the leader had
/// applied when it was asked (so it can count toward a quorum again).
async fn wait_caught_up(c: &Cluster, i: usize) -> anyhow::Result<()> {
    let leader = c.leader().await?;
    let index = c.meta_at(leader).status().await?.last_applied.unwrap_or(0);
    c.wait_applied(i, index).await
}

/// Waits until every chunkserver is Up and chunkserver `addr` has
/// heartbeated since `since_ms`.
async fn wait_heartbeat(c: &Cluster, addr: &str, since_ms: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(READY_SECS);
    let meta = c.meta();
    loop {
        if let Ok(QueryResult::Chunkservers(list)) = meta
            .query(&Query::ListChunkservers, Consistency::Linearizable)
            .await
        {
            let all_up = list.iter().all(|s| s.state == ChunkserverState::Up);
            let fresh = list
                .iter()
                .any(|s| s.addr == addr && s.last_heartbeat_ms >= since_ms);
            if all_up && fresh {
                return Ok(());
            }
        }
        ensure!(
            Instant::now() < deadline,
            "chunkserver {addr} did not heartbeat within {READY_SECS} s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn gateway(c: &Cluster, port: u16) -> anyhow::Result<Proc> {
    Proc::spawn(
        &format!("gateway{port}"),
        c.dir.path(),
        [
            "gateway",
            "--plain-http",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metadata",
            &c.meta_addrs.join(","),
        ],
        &[("CAIRN_SECRET", SECRET)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_load_fails_no_request() -> anyhow::Result<()> {
    let mut c = Cluster::start(Opts::default())?;
    // Chunkservers on fixed ports, like hosts that keep their address.
    for i in 0..6 {
        let name = format!("cs{}", i + 1);
        let dir = c.dir.path().join(&name);
        let listen = format!("127.0.0.1:{}", free_port());
        let p = Proc::spawn(
            &name,
            &dir,
            [
                "chunkserver",
                "--data",
                &dir.join("data").to_string_lossy(),
                "--listen",
                &listen,
                "--zone",
                &format!("zone{}", i % 3),
                "--metadata",
                &c.meta_addrs.join(","),
                "--heartbeat-ms",
                "300",
            ],
            &[("CAIRN_SECRET", SECRET)],
        )?;
        c.chunkservers.push(p);
    }
    c.wait_chunkservers_up(6).await?;
    let out = c.cli(&["--json", "admin", "key", "create", "upgrade", "--admin"])?;
    ensure!(
        out.status.success(),
        "key create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let key = v["id"].as_str().context("no id")?.to_string();
    let secret = v["secret"].as_str().context("no secret")?.to_string();
    let mut gws = vec![gateway(&c, free_port())?, gateway(&c, free_port())?];
    for g in &gws {
        wait_ready(&g.addr_str(), "gateway").await?;
    }
    let lb = Arc::new(Balancer {
        s3: gws
            .iter()
            .map(|g| RawS3::new(&g.addr_str(), &key, &secret))
            .collect(),
        in_rotation: gws.iter().map(|_| AtomicBool::new(true)).collect(),
        next: AtomicUsize::new(0),
    });
    let bucket = "rolling";
    let (s, b) = lb
        .send(Method::PUT, &format!("/{bucket}"), Bytes::new())
        .await?;
    ensure!(
        s == StatusCode::OK,
        "create bucket: {s} {}",
        String::from_utf8_lossy(&b)
    );

    let phase = Arc::new(Mutex::new("warm-up".to_string()));
    let stop = Arc::new(AtomicBool::new(false));
    let ok_ops = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let loops: Vec<_> = (0..LOOPS)
        .map(|w| {
            tokio::spawn(client_loop(
                lb.clone(),
                bucket.to_string(),
                w,
                phase.clone(),
                stop.clone(),
                ok_ops.clone(),
                failures.clone(),
            ))
        })
        .collect();
    let set_phase = |p: String| {
        eprintln!(
            "rolling restart: {p} ({} requests ok so far)",
            ok_ops.load(Ordering::Relaxed)
        );
        if let Ok(mut g) = phase.lock() {
            *g = p;
        }
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();

    // 1. Metadata followers, one at a time; 2. the leader.
    let leader = c.leader().await?;
    let order: Vec<usize> = (0..3).filter(|i| *i != leader).chain([leader]).collect();
    for i in order {
        let role = if i == leader { "leader" } else { "follower" };
        set_phase(format!("metadata node {} ({role})", i + 1));
        graceful_restart(&mut c.metas[i]).with_context(|| format!("meta{}", i + 1))?;
        wait_ready(&c.meta_addrs[i], "metadata node").await?;
        wait_caught_up(&c, i).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // 3. Chunkservers, one at a time.
    for i in 0..c.chunkservers.len() {
        set_phase(format!("chunkserver {}", i + 1));
        let since = now_ms();
        graceful_restart(&mut c.chunkservers[i]).with_context(|| format!("cs{}", i + 1))?;
        let addr = c.chunkservers[i].addr_str();
        wait_ready(&addr, "chunkserver").await?;
        wait_heartbeat(&c, &addr, since).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // 4. Gateways: out of rotation, drain, restart, ready, back in.
    for (i, g) in gws.iter_mut().enumerate() {
        set_phase(format!("gateway {}", i + 1));
        lb.in_rotation[i].store(false, Ordering::SeqCst);
        // Requests already sent to it finish (graceful drain on SIGTERM).
        graceful_restart(g).with_context(|| format!("gateway {}", i + 1))?;
        wait_ready(&g.addr_str(), "gateway").await?;
        lb.in_rotation[i].store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    set_phase("after the restarts".into());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let mut written = Vec::new();
    for l in loops {
        written.extend(l.await?);
    }
    let ok = ok_ops.load(Ordering::Relaxed);
    let failures = std::mem::take(&mut *failures.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    eprintln!(
        "rolling restart: {} s, {ok} requests ok, {} failed, {} objects written",
        took.as_secs(),
        failures.len(),
        written.len()
    );
    assert!(
        failures.is_empty(),
        "{} requests failed during the rolling restart:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|f| format!("  [{}] {}", f.phase, f.what))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(ok >= 40, "only {ok} requests ran during the restarts");
    // Every acknowledged object is there, once, with its bytes.
    for (key, seed, len) in &written {
        let (s, b) = lb
            .send(Method::GET, &format!("/{bucket}/{key}"), Bytes::new())
            .await?;
        assert_eq!(s, StatusCode::OK, "{key}");
        assert!(
            b == data(*len, *seed),
            "{key}: wrong bytes after the restarts"
        );
    }
    // The listing holds each written key exactly once, page by page.
    let mut listed = Vec::new();
    let mut continuation = None;
    loop {
        let QueryResult::List(page) = c
            .meta()
            .query(
                &Query::ListObjects(ListRequest {
                    bucket: bucket.into(),
                    max_keys: 1000,
                    continuation: continuation.take(),
                    ..Default::default()
                }),
                Consistency::Linearizable,
            )
            .await?
        else {
            bail!("unexpected reply to ListObjects");
        };
        listed.extend(page.entries.into_iter().map(|e| e.key));
        if !page.truncated {
            break;
        }
        ensure!(
            page.next_continuation.is_some(),
            "truncated page without a token"
        );
        continuation = page.next_continuation;
    }
    let mut keys: Vec<&str> = written.iter().map(|(k, _, _)| k.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(listed, keys, "objects listed");
    Ok(())
}
