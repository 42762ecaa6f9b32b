//! `cairn bench`: measures this machine's ceilings (`limits`), the metadata
//! service's commit rate (`meta`) and the native client's large-object
//! throughput (`put`, `get`), each with the machine's limits measured in the
//! same process so the figures can be read as ratios (absolute numbers are
//! noisy on shared machines).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use cairn_chunkserver::codec::{shard_len_for, Codec};
use cairn_client::PutOptions;
use cairn_metadata::types::*;
use futures::StreamExt;
use serde::Serialize;

use crate::config::ConnArgs;

/// `cairn bench ...`
#[derive(clap::Subcommand, Debug)]
pub enum BenchCmd {
    /// This machine's ceilings: memcpy, BLAKE3, EC encode, the single-core
    /// copy+BLAKE3+encode rate, fsync'd sequential writes.
    Limits(LimitArgs),
    /// Committed metadata writes per second at several client counts.
    Meta(MetaArgs),
    /// Large-object PUT throughput through the client library.
    Put(ObjArgs),
    /// Large-object GET throughput through the client library.
    Get(ObjArgs),
}

/// Flags of `cairn bench limits`.
#[derive(clap::Args, Debug, Clone)]
pub struct LimitArgs {
    /// Erasure coding to measure.
    #[arg(long, default_value = "4+2")]
    pub ec: EcParams,
    /// Directory for the disk test (default: the current directory).
    #[arg(long, default_value = ".")]
    pub dir: std::path::PathBuf,
}

/// Flags of `cairn bench meta`.
#[derive(clap::Args, Debug, Clone)]
pub struct MetaArgs {
    /// Concurrent clients, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,128")]
    pub clients: Vec<usize>,
    /// Seconds per client count.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
}

/// Flags of `cairn bench put|get`.
#[derive(clap::Args, Debug, Clone)]
pub struct ObjArgs {
    /// Object size, e.g. 64MiB.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub size: u64,
    /// Concurrency levels, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub concurrency: Vec<usize>,
    /// Objects per concurrency level.
    #[arg(long, default_value_t = 16)]
    pub count: usize,
    /// Bucket (created if missing, objects deleted afterwards).
    #[arg(long, default_value = "cairn-bench")]
    pub bucket: String,
    /// Erasure coding of the bench bucket when it is created.
    #[arg(long, default_value = "4+2")]
    pub ec: EcParams,
    /// Compute MD5 ETags on PUT (what the S3 gateway does).
    #[arg(long)]
    pub md5: bool,
}

/// Parses `64MiB`, `4KiB`, `1GiB`, `1000`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = [
        ("GiB", 1u64 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("KB", 1000),
        ("B", 1),
    ]
    .iter()
    .find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n.trim(), *m)))
    .unwrap_or((s, 1));
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("bad size {s:?}"))
}

/// Ceilings measured on this machine.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// memcpy, one thread, GB/s.
    pub memcpy_gbps: f64,
    /// BLAKE3 over 1 MiB buffers, one thread, GB/s.
    pub blake3_gbps: f64,
    /// EC encode of full stripes, one thread, GB/s of data.
    pub encode_gbps: f64,
    /// Copy + BLAKE3 of every shard + encode, one thread, GB/s of data: the
    /// CPU cost of the PUT path per core.
    pub put_cpu_gbps: f64,
    /// Copy + BLAKE3 of the data shards: the CPU cost of the GET path.
    pub get_cpu_gbps: f64,
    /// Sequential writes of 4 MiB followed by fdatasync, MB/s.
    pub fsync_write_mbps: f64,
}

fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64().max(1e-9) / 1e9
}

/// Repeats `f` (each call processing `bytes`) for at least `min`, returns GB/s.
fn rate(bytes: u64, min: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < min {
        f();
        n += 1;
    }
    gbps(bytes * n, start.elapsed())
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for c in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        c.copy_from_slice(&b[..c.len()]);
    }
    v
}

/// Measures the ceilings (takes a few seconds).
pub fn measure_limits(ec: EcParams, dir: &std::path::Path) -> anyhow::Result<Limits> {
    let t = Duration::from_millis(600);
    let stripe = usize::from(ec.k) << 20;
    let src = random_bytes(stripe);
    let mut dst = vec![0u8; stripe];
    let memcpy_gbps = rate(stripe as u64, t, || {
        dst.copy_from_slice(&src);
        std::hint::black_box(&dst);
    });
    let blake3_gbps = rate(1 << 20, t, || {
        std::hint::black_box(blake3::hash(&src[..1 << 20]));
    });
    let codec = Codec::new(ec)?;
    let shard_len = shard_len_for(stripe, ec.k);
    let encode_gbps = rate(stripe as u64, t, || {
        std::hint::black_box(codec.encode(&src, shard_len).ok());
    });
    let put_cpu_gbps = rate(stripe as u64, t, || {
        if let Ok(shards) = codec.encode(&src, shard_len) {
            for s in &shards {
                std::hint::black_box(blake3::hash(s));
            }
        }
    });
    let get_cpu_gbps = rate(stripe as u64, t, || {
        for s in src.chunks(shard_len) {
            std::hint::black_box(blake3::hash(s));
        }
        dst.copy_from_slice(&src);
        std::hint::black_box(&dst);
    });
    let path = dir.join(format!(".cairn-bench-{}", std::process::id()));
    let fsync = (|| -> anyhow::Result<f64> {
        let mut f = std::fs::File::create(&path)?;
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_secs(1) && n < 256 {
            f.write_all(&src[..4 << 20])?;
            f.sync_data()?;
            n += 1;
        }
        Ok((n * (4 << 20)) as f64 / start.elapsed().as_secs_f64() / 1e6)
    })();
    let _ = std::fs::remove_file(&path);
    Ok(Limits {
        memcpy_gbps,
        blake3_gbps,
        encode_gbps,
        put_cpu_gbps,
        get_cpu_gbps,
        fsync_write_mbps: fsync.context("disk test")?,
    })
}

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Worst.
    pub max_ms: f64,
}

fn latency(mut v: Vec<Duration>) -> Latency {
    v.sort();
    let q = |p: f64| -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i.min(v.len() - 1)].as_secs_f64() * 1e3
    };
    Latency {
        p50_ms: q(0.5),
        p90_ms: q(0.9),
        p99_ms: q(0.99),
        max_ms: q(1.0),
    }
}

/// One row of results.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured.
    pub op: String,
    /// Concurrency.
    pub concurrency: usize,
    /// Operations done.
    pub ops: u64,
    /// Errors.
    pub errors: u64,
    /// Operations per second.
    pub ops_per_sec: f64,
    /// MB/s (10^6 bytes), for data operations.
    pub mbps: f64,
    /// Latency.
    pub latency: Latency,
    /// Process CPU seconds per GB moved (data operations).
    pub cpu_s_per_gb: f64,
}

fn cpu_seconds() -> f64 {
    // utime + stime from /proc/self/stat, in clock ticks (100 Hz on Linux).
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs a bench command.
pub async fn run(conn: &ConnArgs, cmd: BenchCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Limits(a) => {
            let l = tokio::task::spawn_blocking(move || measure_limits(a.ec, &a.dir)).await??;
            if json {
                println!("{}", serde_json::to_string_pretty(&l)?);
            } else {
                print_limits(&l);
            }
            Ok(())
        }
        BenchCmd::Meta(a) => bench_meta(conn, a, json).await,
        BenchCmd::Put(a) => bench_objects(conn, a, json, true).await,
        BenchCmd::Get(a) => bench_objects(conn, a, json, false).await,
    }
}

fn print_limits(l: &Limits) {
    println!("machine limits (one thread):");
    println!("  memcpy                      {:>8.2} GB/s", l.memcpy_gbps);
    println!("  BLAKE3                      {:>8.2} GB/s", l.blake3_gbps);
    println!("  EC encode                   {:>8.2} GB/s", l.encode_gbps);
    println!("  copy+encode+BLAKE3 (PUT)    {:>8.2} GB/s", l.put_cpu_gbps);
    println!("  copy+BLAKE3 (GET)           {:>8.2} GB/s", l.get_cpu_gbps);
    println!(
        "  fsync'd sequential write    {:>8.0} MB/s",
        l.fsync_write_mbps
    );
}

async fn bench_meta(conn: &ConnArgs, a: MetaArgs, json: bool) -> anyhow::Result<()> {
    let (addrs, secret) = conn.resolve()?;
    let meta = Arc::new(cairn_metadata::client::MetaClient::new(
        addrs,
        secret,
        Default::default(),
    ));
    let bucket = format!("bench-meta-{}", std::process::id());
    meta.write(&Command::CreateBucket {
        bucket: BucketInfo {
            name: bucket.clone(),
            ec: EcParams::default(),
            shard_size: 1 << 20,
            created_ms: 0,
            owner: String::new(),
        },
    })
    .await?;
    let mut rows = Vec::new();
    for &clients in &a.clients {
        let deadline = Instant::now() + Duration::from_secs(a.duration);
        let lat: Arc<Mutex<Vec<Duration>>> = Arc::default();
        let errors = Arc::new(AtomicU64::new(0));
        let seq = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (meta, lat, errors, seq, bucket) = (
                meta.clone(),
                lat.clone(),
                errors.clone(),
                seq.clone(),
                bucket.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    let i = seq.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    let r = meta
                        .write(&Command::PutObject {
                            bucket: bucket.clone(),
                            key: format!("k{i:09}"),
                            manifest: ObjectManifest {
                                version: StripeId::random(),
                                size: 0,
                                etag: "d41d8cd98f00b204e9800998ecf8427e".into(),
                                content_type: None,
                                headers: Default::default(),
                                user_meta: Default::default(),
                                checksums: Default::default(),
                                created_ms: 0,
                                ec: EcParams::default(),
                                shard_size: 1 << 20,
                                stripes: Vec::new(),
                                parts: Vec::new(),
                            },
                            condition: PutCondition::None,
                        })
                        .await;
                    match r {
                        Ok(CommandResult::Ok) => {
                            if let Ok(mut l) = lat.lock() {
                                l.push(t.elapsed());
                            }
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
        let elapsed = start.elapsed();
        let l = lat.lock().map(|l| l.clone()).unwrap_or_default();
        rows.push(Row {
            op: "meta-commit".into(),
            concurrency: clients,
            ops: l.len() as u64,
            errors: errors.load(Ordering::Relaxed),
            ops_per_sec: l.len() as f64 / elapsed.as_secs_f64(),
            mbps: 0.0,
            latency: latency(l),
            cpu_s_per_gb: 0.0,
        });
    }
    print_rows(&rows, None, json)?;
    Ok(())
}

fn print_rows(rows: &[Row], limits: Option<&Limits>, json: bool) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "limits": limits, "results": rows })
            )?
        );
        return Ok(());
    }
    if let Some(l) = limits {
        print_limits(l);
    }
    println!(
        "{:<12} {:>5} {:>7} {:>6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "op",
        "conc",
        "ops",
        "errors",
        "ops/s",
        "MB/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "cpu s/GB"
    );
    for r in rows {
        println!(
            "{:<12} {:>5} {:>7} {:>6} {:>10.1} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            r.op,
            r.concurrency,
            r.ops,
            r.errors,
            r.ops_per_sec,
            r.mbps,
            r.latency.p50_ms,
            r.latency.p90_ms,
            r.latency.p99_ms,
            r.latency.max_ms,
            r.cpu_s_per_gb
        );
        if let Some(l) = limits {
            let base = if r.op.starts_with("put") {
                l.put_cpu_gbps
            } else {
                l.get_cpu_gbps
            };
            println!(
                "{:<12} {:>5} = {:.0}% of the single-core {} CPU rate ({:.2} GB/s)",
                "",
                "",
                r.mbps / 1e3 / base * 100.0,
                if r.op.starts_with("put") {
                    "copy+encode+BLAKE3"
                } else {
                    "copy+BLAKE3"
                },
                base
            );
        }
    }
    Ok(())
}

async fn bench_objects(conn: &ConnArgs, a: ObjArgs, json: bool, put: bool) -> anyhow::Result<()> {
    let limits = {
        let ec = a.ec;
        tokio::task::spawn_blocking(move || measure_limits(ec, std::path::Path::new("."))).await??
    };
    let client = crate::cmd::cli::client(conn).await?;
    match client.create_bucket(&a.bucket, a.ec, 1 << 20).await {
        Ok(()) | Err(cairn_client::ClientError::BucketExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let size = usize::try_from(a.size).context("size too large")?;
    let body = Bytes::from(random_bytes(size));
    let mut rows = Vec::new();
    let progress = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    for &conc in &a.concurrency {
        let keys: Vec<String> = (0..a.count)
            .map(|i| format!("bench/{size}/{conc}/{i}"))
            .collect();
        if !put {
            // GET needs the objects: write them first (not measured).
            for k in &keys {
                client
                    .put(
                        &a.bucket,
                        k,
                        std::io::Cursor::new(body.clone()),
                        PutOptions::default(),
                    )
                    .await?;
            }
        }
        let next = Arc::new(AtomicU64::new(0));
        let lat: Arc<Mutex<Vec<Duration>>> = Arc::default();
        let errors = Arc::new(AtomicU64::new(0));
        let keys = Arc::new(keys);
        let cpu0 = cpu_seconds();
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..conc.max(1) {
            let (client, next, lat, errors, keys, body, bucket) = (
                client.clone(),
                next.clone(),
                lat.clone(),
                errors.clone(),
                keys.clone(),
                body.clone(),
                a.bucket.clone(),
            );
            let md5 = a.md5;
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(key) = keys.get(i) else { break };
                    let t = Instant::now();
                    let ok = if put {
                        client
                            .put(
                                &bucket,
                                key,
                                std::io::Cursor::new(body.clone()),
                                PutOptions {
                                    md5,
                                    ..Default::default()
                                },
                            )
                            .await
                            .is_ok()
                    } else {
                        match client.get(&bucket, key, None).await {
                            Ok((_, mut s)) => {
                                let mut n = 0usize;
                                let mut ok = true;
                                while let Some(c) = s.next().await {
                                    match c {
                                        Ok(c) => n += c.len(),
                                        Err(_) => {
                                            ok = false;
                                            break;
                                        }
                                    }
                                }
                                ok && n == body.len()
                            }
                            Err(_) => false,
                        }
                    };
                    if ok {
                        if let Ok(mut l) = lat.lock() {
                            l.push(t.elapsed());
                        }
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    if progress {
                        eprint!(
                            "\r{} {}/{}",
                            if put { "put" } else { "get" },
                            i + 1,
                            keys.len()
                        );
                    }
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
        let elapsed = start.elapsed();
        let cpu = cpu_seconds() - cpu0;
        if progress {
            eprintln!();
        }
        let l = lat.lock().map(|l| l.clone()).unwrap_or_default();
        let bytes = l.len() as f64 * size as f64;
        rows.push(Row {
            op: format!("{}-{}", if put { "put" } else { "get" }, human(a.size)),
            concurrency: conc,
            ops: l.len() as u64,
            errors: errors.load(Ordering::Relaxed),
            ops_per_sec: l.len() as f64 / elapsed.as_secs_f64(),
            mbps: bytes / elapsed.as_secs_f64() / 1e6,
            latency: latency(l),
            cpu_s_per_gb: if bytes > 0.0 {
                cpu / (bytes / 1e9)
            } else {
                0.0
            },
        });
        for k in keys.iter() {
            let _ = client.delete(&a.bucket, k).await;
        }
    }
    print_rows(&rows, Some(&limits), json)
}

fn human(n: u64) -> String {
    if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
        format!("{}GiB", n >> 30)
    } else if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{}MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{}KiB", n >> 10)
    } else {
        format!("{n}B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("lots").is_err());
        assert_eq!(human(64 << 20), "64MiB");
    }

    #[test]
    fn latency_percentiles() {
        let l = latency((1..=100).map(Duration::from_millis).collect());
        assert_eq!(l.p50_ms.round(), 51.0);
        assert_eq!(l.max_ms.round(), 100.0);
    }
}
