//! `cairn bench` against a real cluster and S3 gateway: every mode (put,
//! get, mixed, small) through S3 and through the native client library,
//! about a second each with `--keep --json`; the report must show no errors
//! and the bucket must hold exactly the objects the report says are live.
//! Then one run without `--keep` must leave neither objects nor bucket.
//! No timing assertions: the figures are for humans.

use anyhow::{bail, Context};
use cairn_client::{Client, ClientError};
use cairn_metadata::types::{EcParams, ListRequest};

use crate::cluster::{Cluster, Opts};
use crate::common::{Proc, SECRET};

/// Object size of the large-object modes: above the 16 KiB inline limit,
/// so shards are really written, and small enough for a quick test.
const SIZE: &str = "200KiB";

struct Env {
    cluster: Cluster,
    gateway: Proc,
    key: String,
    secret: String,
}

impl Env {
    async fn start() -> anyhow::Result<Env> {
        let cluster = Cluster::start(Opts {
            chunkservers: 6,
            zones: 3,
            ..Default::default()
        })?;
        cluster.wait_chunkservers_up(6).await?;
        let out = cluster.cli(&["--json", "admin", "key", "create", "bench", "--admin"])?;
        if !out.status.success() {
            bail!(
                "key create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let key = v["id"].as_str().context("no id")?.to_string();
        let secret = v["secret"].as_str().context("no secret")?.to_string();
        let gateway = Proc::spawn(
            "gateway",
            cluster.dir.path(),
            [
                "gateway",
                "--plain-http",
                "--listen",
                "127.0.0.1:0",
                "--metadata",
                &cluster.meta_addrs.join(","),
            ],
            &[("CAIRN_SECRET", SECRET)],
        )?;
        Ok(Env {
            cluster,
            gateway,
            key,
            secret,
        })
    }

    /// Runs `cairn --json bench MODE ...` against S3 or native; returns the
    /// parsed report.
    fn bench(&self, mode: &str, s3: bool, extra: &[&str]) -> anyhow::Result<serde_json::Value> {
        let endpoint = format!("http://{}", self.gateway.addr_str());
        let limits_dir = self.cluster.dir.path().to_string_lossy().into_owned();
        let mut args = vec!["--json", "bench", mode];
        if s3 {
            args.extend(["--endpoint", &endpoint]);
        } else {
            args.push("--native");
        }
        args.extend([
            "--concurrency",
            "3",
            "--no-limits",
            "--limits-dir",
            &limits_dir,
        ]);
        args.extend(extra);
        let out = self.cluster.cli_env(
            &args,
            &[
                ("AWS_ACCESS_KEY_ID", &self.key),
                ("AWS_SECRET_ACCESS_KEY", &self.secret),
            ],
        )?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!("cairn {} failed: {stderr}", args.join(" "));
        }
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "bad report from cairn {}: {}\nstderr: {stderr}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

/// Every key in `bucket`.
async fn count_objects(client: &Client, bucket: &str) -> anyhow::Result<u64> {
    let mut n = 0u64;
    let mut continuation = None;
    loop {
        let page = client
            .list(ListRequest {
                bucket: bucket.to_string(),
                prefix: String::new(),
                delimiter: None,
                start_after: None,
                continuation: continuation.take(),
                max_keys: 1000,
            })
            .await?;
        n += page.entries.len() as u64;
        if !page.truncated {
            return Ok(n);
        }
        continuation = page.next_continuation;
        if continuation.is_none() {
            bail!("truncated listing without a continuation token");
        }
    }
}

fn u(v: &serde_json::Value) -> anyhow::Result<u64> {
    v.as_u64().with_context(|| format!("not a count: {v}"))
}

/// Checks a `--keep` report against the cluster: no errors, the rows the
/// mode must have, and as many objects in the bucket as the report says
/// are live.
async fn check_kept(
    client: &Client,
    report: &serde_json::Value,
    mode: &str,
    target: &str,
) -> anyhow::Result<()> {
    let what = format!("{target} {mode}");
    assert_eq!(report["mode"], mode, "{what}");
    assert_eq!(report["target"], target, "{what}");
    assert_eq!(u(&report["errors"])?, 0, "{what}: errors in {report:#}");
    assert_eq!(report["kept"], true, "{what}");
    let rows = report["results"].as_array().context("no results")?;
    let ops: Vec<&str> = rows.iter().filter_map(|r| r["op"].as_str()).collect();
    let want: &[&str] = match mode {
        "put" => &["put"],
        "get" => &["prepare", "get"],
        "small" => &["put", "get"],
        // mixed: the prepare row, then at least GETs and PUTs in about a
        // second of a 60/30/10 mix.
        _ => &["prepare", "put", "get"],
    };
    for w in want {
        assert!(ops.contains(w), "{what}: no {w} row in {ops:?}");
    }
    for r in rows {
        assert_eq!(u(&r["errors"])?, 0, "{what}: {r:#}");
        assert!(u(&r["ops"])? > 0, "{what}: a row without operations: {r:#}");
        if r["op"] != "delete" {
            assert_eq!(
                u(&r["bytes"])?,
                u(&r["ops"])? * u(&report["size"])?,
                "{what}: bytes != ops x size in {r:#}"
            );
        }
    }
    let objects = &report["objects"];
    let written = u(&objects["written"])?;
    let deleted = u(&objects["deleted"])?;
    let live = u(&objects["live"])?;
    assert!(written > 0, "{what}: nothing written");
    assert_eq!(written - deleted, live, "{what}: {objects}");
    assert_eq!(u(&objects["cleaned"])?, 0, "{what}: --keep cleaned up");
    let bucket = report["bucket"].as_str().context("no bucket")?;
    let listed = count_objects(client, bucket).await?;
    assert_eq!(
        listed, live,
        "{what}: bucket {bucket} lists {listed}, report says {live}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_modes_match_the_cluster() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let client = env.cluster.client();

    for s3 in [true, false] {
        let target = if s3 { "s3" } else { "native" };
        for mode in ["put", "get", "mixed", "small"] {
            let mut extra = vec!["--keep", "--duration", "1s"];
            if mode != "small" {
                extra.extend(["--size", SIZE, "--objects", "8"]);
            }
            let report = env.bench(mode, s3, &extra)?;
            check_kept(&client, &report, mode, target).await?;
        }
    }

    // --ec reaches the bucket through S3's x-cairn-ec header and natively.
    for s3 in [true, false] {
        let report = env.bench(
            "put",
            s3,
            &["--keep", "--count", "3", "--size", SIZE, "--ec", "3+2"],
        )?;
        assert_eq!(u(&report["results"][0]["ops"])?, 3);
        let bucket = report["bucket"].as_str().context("no bucket")?;
        let info = client.bucket(bucket).await?;
        assert_eq!(info.ec, EcParams { k: 3, m: 2 }, "s3={s3}");
        assert_eq!(count_objects(&client, bucket).await?, 3);
    }

    // Without --keep everything goes: objects and the bucket it created.
    for s3 in [true, false] {
        let report = env.bench("mixed", s3, &["--count", "20", "--size", SIZE])?;
        assert_eq!(u(&report["errors"])?, 0, "{report:#}");
        let objects = &report["objects"];
        assert_eq!(objects["cleaned"], objects["live"], "{objects}");
        assert_eq!(u(&objects["cleanup_errors"])?, 0);
        let bucket = report["bucket"].as_str().context("no bucket")?;
        match client.bucket(bucket).await {
            Err(ClientError::NoSuchBucket(_)) => {}
            other => bail!("bucket {bucket} still there after cleanup: {other:?}"),
        }
    }

    // A wrong secret: the report counts the failures by S3 code, and the
    // run itself fails only to create its bucket.
    let endpoint = format!("http://{}", env.gateway.addr_str());
    let out = env.cluster.cli_env(
        &[
            "--json",
            "bench",
            "put",
            "--endpoint",
            &endpoint,
            "--no-limits",
            "--count",
            "1",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", &env.key),
            ("AWS_SECRET_ACCESS_KEY", "wrong"),
        ],
    )?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SignatureDoesNotMatch"), "{stderr}");
    Ok(())
}
