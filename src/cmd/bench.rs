//! `cairn bench`: Cairn's own load generator and the machine's ceilings.
//!
//! - `limits`: memcpy, BLAKE3, EC encode, the PUT and GET paths' CPU work
//!   per core, loopback TCP, fsync'd disk writes ([`limits`]).
//! - `meta`: committed metadata writes per second at several client counts.
//! - `meta-scale`: per-operation metadata costs after loading N synthetic
//!   objects ([`meta_scale`]).
//! - `put|get|mixed|small`: object load against an S3 endpoint
//!   (`--endpoint`, signed with `aws-sigv4`, [`s3`]) or the native client
//!   library (`--native`), driven by [`load`] and reported by [`report`]
//!   (throughput, latency percentiles from an HDR histogram, errors by kind,
//!   CPU seconds per GB, each figure next to the matching limit measured in
//!   the same process, since ratios from one run are what we compare on
//!   shared machines).
//!
//! Everything a run writes goes under a fresh key prefix in a bucket it
//! creates (`bench-<random>` unless `--bucket`), and is deleted at the end
//! together with the bucket if the run created it, unless `--keep`.

pub mod limits;
pub mod load;
pub mod meta_scale;
pub mod report;
pub mod s3;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_metadata::types::*;
use futures::StreamExt;

use crate::config::ConnArgs;
use limits::{limits_table, measure_limits};
use load::{Mix, Op, Run, Stop, Target, Work};
use report::{Objects, OpStats, Report, Row};

/// `cairn bench ...`
#[derive(clap::Subcommand, Debug)]
pub enum BenchCmd {
    /// This machine's ceilings: memcpy, BLAKE3, EC encode, the single-core
    /// PUT and GET CPU rates, loopback TCP, fsync'd writes.
    Limits(LimitArgs),
    /// Committed metadata writes per second at several client counts.
    Meta(MetaArgs),
    /// Metadata costs per operation after loading N synthetic objects
    /// (PUT, HEAD, LIST, inventory check, snapshot build, finding a lost
    /// chunkserver's shards). Scratch clusters only: see
    /// `scripts/meta-scale.sh`.
    MetaScale(meta_scale::MetaScaleArgs),
    /// PUT throughput: new objects of --size.
    Put(LoadArgs),
    /// GET throughput over a working set written first (not timed).
    Get(LoadArgs),
    /// A GET/PUT/DELETE mix (--mix, default 60,30,10) over a working set.
    Mixed(LoadArgs),
    /// Small objects (default 4 KiB): PUTs, then GETs, reported separately.
    Small(LoadArgs),
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

/// Flags of `cairn bench put|get|mixed|small`.
#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["endpoint", "native"])))]
pub struct LoadArgs {
    /// S3 endpoint, e.g. http://127.0.0.1:7900 (path-style requests);
    /// https:// needs --ca-file.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// PEM bundle of the CA(s) an https:// --endpoint is trusted by (e.g.
    /// the cluster CA's ca.pem); no other root is trusted.
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Use the native client library (metadata addresses from
    /// --metadata, CAIRN_METADATA or the config file).
    #[arg(long)]
    pub native: bool,
    /// S3 access key id.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub access_key: Option<String>,
    /// S3 secret key.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// S3 region to sign for.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Object size, e.g. 64MiB, 4KiB (default 64 MiB; 4 KiB for `small`).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Concurrent requests.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// How long each timed phase runs, e.g. 10s, 500ms, 2m (default 10s).
    #[arg(long, value_parser = parse_duration, conflicts_with = "count")]
    pub duration: Option<Duration>,
    /// Operations per timed phase instead of a duration.
    #[arg(long)]
    pub count: Option<u64>,
    /// Objects written before a `get` or `mixed` phase (default: about
    /// 256 MiB worth, at least 2 per worker, at most 1000).
    #[arg(long)]
    pub objects: Option<u64>,
    /// GET,PUT,DELETE weights of `mixed`.
    #[arg(long, default_value = "60,30,10")]
    pub mix: Mix,
    /// Erasure coding of the bucket when the bench creates it (S3: sent as
    /// `x-cairn-ec`). Default: the target's default (4+2 on Cairn).
    #[arg(long)]
    pub ec: Option<EcParams>,
    /// Bucket (default: a fresh `bench-<random>`); created if missing.
    #[arg(long)]
    pub bucket: Option<String>,
    /// Keep the objects (and the bucket) instead of deleting them.
    #[arg(long)]
    pub keep: bool,
    /// Native PUTs compute an MD5 ETag, as the S3 gateway does.
    #[arg(long)]
    pub md5: bool,
    /// Time allowed for one operation.
    #[arg(long, value_parser = parse_duration, default_value = "120s")]
    pub timeout: Duration,
    /// Skip measuring this machine's limits.
    #[arg(long)]
    pub no_limits: bool,
    /// Directory for the limits' disk test.
    #[arg(long, default_value = ".")]
    pub limits_dir: std::path::PathBuf,
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

/// Parses `10s`, `500ms`, `2m`, `1h`, `1.5s` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = [("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("h", 3600.0)]
        .iter()
        .find_map(|(suf, m)| t.strip_suffix(suf).map(|n| (n.trim(), *m)))
        .unwrap_or((t, 1.0));
    num.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0 && *v * unit <= 366.0 * 86400.0)
        .map(|v| Duration::from_secs_f64(v * unit))
        .ok_or_else(|| format!("bad duration {s:?}: expected e.g. 10s, 500ms, 2m"))
}

/// `64MiB`, `4KiB`, `1000B`.
pub fn human(n: u64) -> String {
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

/// Runs a bench command.
pub async fn run(conn: &ConnArgs, cmd: BenchCmd, json: bool) -> anyhow::Result<()> {
    let (mode, a) = match cmd {
        BenchCmd::Limits(a) => {
            let l = tokio::task::spawn_blocking(move || measure_limits(a.ec, &a.dir)).await??;
            if json {
                outln!("{}", serde_json::to_string_pretty(&l)?);
            } else {
                out!("{}", limits_table(&l));
            }
            return Ok(());
        }
        BenchCmd::Meta(a) => return bench_meta(conn, a, json).await,
        BenchCmd::MetaScale(a) => return meta_scale::run(conn, a, json).await,
        BenchCmd::Put(a) => ("put", a),
        BenchCmd::Get(a) => ("get", a),
        BenchCmd::Mixed(a) => ("mixed", a),
        BenchCmd::Small(a) => ("small", a),
    };
    let report = bench_load(conn, mode, a).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", report.to_table());
    }
    if report.errors > 0 {
        eprintln!("cairn bench: {} operations failed", report.errors);
    }
    Ok(())
}

/// Runs `put|get|mixed|small` and returns the report.
async fn bench_load(conn: &ConnArgs, mode: &str, a: LoadArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(
        (1..=4096).contains(&a.concurrency),
        "--concurrency must be 1 to 4096"
    );
    if let Some(ec) = a.ec {
        ec.validate().map_err(|e| anyhow::anyhow!("{}", e.0))?;
    }
    let default_size = if mode == "small" { 4096 } else { 64 << 20 };
    let size = a.size.unwrap_or(default_size);
    anyhow::ensure!(
        size <= 5 << 30,
        "--size above 5 GiB (S3's single PUT limit)"
    );
    let size_usize = usize::try_from(size).context("--size too large")?;
    let stop = match (a.count, a.duration) {
        (Some(0), _) => anyhow::bail!("--count must be at least 1"),
        (Some(n), _) => Stop::Count(n),
        (None, Some(d)) => Stop::Duration(d),
        (None, None) => Stop::Duration(Duration::from_secs(10)),
    };
    let bucket = match &a.bucket {
        Some(b) => b.clone(),
        None => format!("bench-{}", hex::encode(rand::random::<[u8; 6]>())),
    };
    validate_bucket_name(&bucket).map_err(|e| anyhow::anyhow!("--bucket: {}", e.0))?;

    let target = match &a.endpoint {
        Some(ep) => {
            let key = a
                .access_key
                .as_deref()
                .context("--endpoint needs --access-key (or AWS_ACCESS_KEY_ID)")?;
            let secret = a
                .secret_key
                .as_deref()
                .context("--endpoint needs --secret-key (or AWS_SECRET_ACCESS_KEY)")?;
            Target::S3(Box::new(s3::S3Target::new(
                ep,
                key,
                secret,
                &a.region,
                a.concurrency,
                a.timeout,
                a.ca_file.as_deref(),
            )?))
        }
        None => Target::native(crate::cmd::cli::client(conn).await?, a.md5),
    };

    // The limits first, while nothing else runs.
    let limits = if a.no_limits {
        None
    } else {
        let ec = a.ec.unwrap_or_default();
        let dir = a.limits_dir.clone();
        Some(tokio::task::spawn_blocking(move || measure_limits(ec, &dir)).await??)
    };

    let created = target
        .create_bucket(&bucket, a.ec)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create bucket {bucket}: {}: {}", e.kind, e.message))?;
    let run = Arc::new(Run::new(target, bucket.clone(), size_usize, a.timeout));
    let progress = true;
    let conc = a.concurrency;
    let working_set = a
        .objects
        .unwrap_or_else(|| ((256u64 << 20) / size.max(1)).clamp(2 * conc as u64, 1000));

    let mut rows: Vec<Row> = Vec::new();
    let res = async {
        match mode {
            "put" => {
                let p = run
                    .phase("put", Work::Only(Op::Put), conc, stop, progress)
                    .await?;
                rows.extend(p.rows(None, size, conc));
            }
            "get" | "mixed" => {
                let p = run
                    .phase(
                        "prepare",
                        Work::Only(Op::Put),
                        conc,
                        Stop::Count(working_set),
                        progress,
                    )
                    .await?;
                rows.extend(p.rows(Some("prepare"), size, conc));
                anyhow::ensure!(run.live() > 0, "could not write any object to read");
                let work = if mode == "get" {
                    Work::Only(Op::Get)
                } else {
                    Work::Mixed(a.mix)
                };
                let p = run.phase(mode, work, conc, stop, progress).await?;
                rows.extend(p.rows(None, size, conc));
            }
            "small" => {
                let p = run
                    .phase("put", Work::Only(Op::Put), conc, stop, progress)
                    .await?;
                rows.extend(p.rows(None, size, conc));
                anyhow::ensure!(run.live() > 0, "could not write any object to read");
                let p = run
                    .phase("get", Work::Only(Op::Get), conc, stop, progress)
                    .await?;
                rows.extend(p.rows(None, size, conc));
            }
            other => anyhow::bail!("unknown bench mode {other}"),
        }
        Ok(())
    }
    .await;

    let mut objects = Objects {
        written: run.written(),
        deleted: run.deleted(),
        live: run.live(),
        ..Default::default()
    };
    if !a.keep {
        let (cleaned, failed) = run.cleanup(conc).await;
        objects.cleaned = cleaned;
        objects.cleanup_errors = failed;
        if created && failed == 0 {
            if let Err(e) = run.target().delete_bucket(&bucket).await {
                eprintln!("cairn bench: cannot delete bucket {bucket}: {}", e.message);
            }
        }
    }
    res?;
    let mut report = Report {
        mode: mode.to_string(),
        target: run.target().name().to_string(),
        endpoint: a.endpoint.clone(),
        bucket,
        bucket_created: created,
        kept: a.keep,
        size,
        concurrency: conc,
        ec: a.ec.map(|e| e.to_string()),
        results: rows,
        errors: 0,
        objects,
        limits,
    };
    report.finish();
    Ok(report)
}

async fn bench_meta(conn: &ConnArgs, a: MetaArgs, json: bool) -> anyhow::Result<()> {
    let (addrs, secret) = conn.resolve()?;
    let meta = Arc::new(cairn_metadata::client::MetaClient::new(
        addrs,
        secret,
        Default::default(),
    ));
    let bucket = format!("bench-meta-{}", hex::encode(rand::random::<[u8; 4]>()));
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
    let seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for &clients in &a.clients {
        let deadline = Instant::now() + Duration::from_secs(a.duration);
        let cpu0 = load::cpu_seconds();
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..clients.max(1) {
            let (meta, seq, bucket) = (meta.clone(), seq.clone(), bucket.clone());
            tasks.push(tokio::spawn(async move {
                let mut stats = OpStats::default();
                while Instant::now() < deadline {
                    let i = seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
                                inline: None,
                                tags: Default::default(),
                            },
                            condition: PutCondition::None,
                        })
                        .await;
                    match r {
                        Ok(CommandResult::Ok) => stats.ok(0, t.elapsed()),
                        Ok(other) => stats.err(&format!("{other:?}")),
                        Err(e) => stats.err(&e.to_string()),
                    }
                }
                stats
            }));
        }
        let mut merged = OpStats::default();
        for t in tasks {
            merged.merge(&t.await?);
        }
        rows.push(Row::new(
            "meta-commit",
            0,
            clients,
            &merged,
            start.elapsed(),
            load::cpu_seconds() - cpu0,
        ));
    }
    // The keys are manifests without data: delete them and the bucket.
    let n = seq.load(std::sync::atomic::Ordering::Relaxed);
    let deletes = futures::stream::iter(0..n)
        .map(|i| {
            let (meta, bucket) = (meta.clone(), bucket.clone());
            async move {
                meta.write(&Command::DeleteObject {
                    bucket,
                    key: format!("k{i:09}"),
                    condition: PutCondition::None,
                })
                .await
                .is_ok()
            }
        })
        .buffer_unordered(64);
    let failed = deletes
        .filter(|ok| futures::future::ready(!ok))
        .count()
        .await;
    if failed == 0 {
        let _ = meta
            .write(&Command::DeleteBucket {
                name: bucket.clone(),
            })
            .await;
    } else {
        eprintln!("cairn bench: {failed} metadata test keys left in bucket {bucket}");
    }
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "results": rows }))?
        );
    } else {
        out!("{}", report::rows_table(&rows));
    }
    Ok(())
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
        assert_eq!(human(4096), "4KiB");
        assert_eq!(human(1000), "1000B");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("1e30h").is_err());
    }
}
