//! Operating Cairn: every role's `/metrics` scraped and parsed after real
//! S3 traffic, the health probes' meaning (ready, and not ready once the
//! metadata service is gone), the request id of an S3 request in the
//! gateway's logs, and the CLI paper cuts (quiet on a closed pipe, `ls
//! cairn://`, newline-terminated output, `cairn dev` children dying with a
//! SIGKILLed parent).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use http::{Method, StatusCode};

use crate::cluster::{Cluster, Opts};
use crate::common::{http, Proc, SECRET};

/// One sample of a scrape: name, labels, value.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A strict parser of the OpenMetrics text `prometheus-client` writes:
/// `# HELP/TYPE/UNIT` comments, `name{k="v",...} value` samples, `# EOF`
/// last. Anything else is an error.
fn parse(text: &str) -> anyhow::Result<Vec<Sample>> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    let mut saw_eof = false;
    while let Some(line) = lines.next() {
        if line == "# EOF" {
            ensure!(lines.peek().is_none(), "text after # EOF");
            saw_eof = true;
            break;
        }
        if let Some(c) = line.strip_prefix("# ") {
            ensure!(
                c.starts_with("HELP ") || c.starts_with("TYPE ") || c.starts_with("UNIT "),
                "bad comment {line:?}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .with_context(|| format!("no value in {line:?}"))?;
        let value: f64 = value
            .parse()
            .with_context(|| format!("bad value in {line:?}"))?;
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .with_context(|| format!("unclosed labels in {line:?}"))?;
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once("=\"")
                        .with_context(|| format!("bad label in {line:?}"))?;
                    labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (name.to_string(), labels)
            }
        };
        ensure!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "bad metric name in {line:?}"
        );
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    ensure!(saw_eof, "no # EOF");
    Ok(out)
}

/// Scrapes `addr`'s `/metrics` without any secret.
pub(crate) async fn scrape(addr: &str) -> anyhow::Result<(String, Vec<Sample>)> {
    let r = http(
        Method::GET,
        &format!("http://{addr}/metrics"),
        None,
        &[],
        Bytes::new(),
    )
    .await?;
    ensure!(r.status == StatusCode::OK, "{addr}/metrics: {}", r.status);
    let ct = r
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    ensure!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = String::from_utf8(r.body.to_vec())?;
    ensure!(!text.contains(SECRET), "{addr}/metrics shows the secret");
    let samples = parse(&text).with_context(|| format!("{addr}/metrics:\n{text}"))?;
    Ok((text, samples))
}

/// The sum of the samples named `name` whose labels include `want`.
pub(crate) fn sum(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            want.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// The value of the unlabelled sample `name`.
fn one(samples: &[Sample], name: &str) -> anyhow::Result<f64> {
    samples
        .iter()
        .find(|s| s.name == name && s.labels.is_empty())
        .map(|s| s.value)
        .with_context(|| format!("no {name}"))
}

/// GETs `addr`'s `path`: status and body.
async fn probe(addr: &str, path: &str) -> anyhow::Result<(StatusCode, String)> {
    let r = http(
        Method::GET,
        &format!("http://{addr}{path}"),
        None,
        &[],
        Bytes::new(),
    )
    .await?;
    Ok((r.status, String::from_utf8_lossy(&r.body).into_owned()))
}

/// Polls `addr`'s `path` until it answers `want` (within `secs`).
async fn wait_probe(addr: &str, path: &str, want: StatusCode, secs: u64) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = probe(addr, path).await;
        if let Ok((s, body)) = &got {
            if *s == want {
                return Ok(body.clone());
            }
        }
        if Instant::now() > deadline {
            bail!("{addr}{path}: want {want}, last {got:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn gateway(cluster: &Cluster) -> anyhow::Result<Proc> {
    Proc::spawn(
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
    )
}

fn ok(out: &std::process::Output, what: &str) -> anyhow::Result<String> {
    ensure!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cairn ARGS | true` under bash with pipefail: the reader is gone
/// before cairn writes. Returns cairn's exit status and stderr.
fn into_closed_pipe(cluster: &Cluster, args: &[&str]) -> anyhow::Result<(i32, String)> {
    let out = Command::new("bash")
        .arg("-c")
        .arg("set -o pipefail; \"$@\" | true")
        .arg("bash")
        .arg(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("CAIRN_METADATA", cluster.meta_addrs.join(","))
        .env("CAIRN_SECRET", SECRET)
        .env("CAIRN_CONFIG", cluster.dir.path().join("no-config.json"))
        .stdin(Stdio::null())
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_request_ids_and_cli_paper_cuts() -> anyhow::Result<()> {
    let cluster = Cluster::start(Opts {
        chunkservers: 6,
        zones: 3,
        ..Default::default()
    })?;
    cluster.wait_chunkservers_up(6).await?;
    let v: serde_json::Value = serde_json::from_str(&ok(
        &cluster.cli(&["--json", "admin", "key", "create", "ops", "--admin"])?,
        "key create",
    )?)?;
    let key = v["id"].as_str().context("no id")?.to_string();
    let secret = v["secret"].as_str().context("no secret")?.to_string();
    let gw = gateway(&cluster)?;
    let gw_addr = gw.addr_str();
    let cs_addrs: Vec<String> = cluster.chunkservers.iter().map(|p| p.addr_str()).collect();

    // Health: every role live and ready, without any secret.
    for addr in cluster.meta_addrs.iter().chain(&cs_addrs).chain([&gw_addr]) {
        let (s, body) = probe(addr, "/health/live").await?;
        assert_eq!(s, StatusCode::OK, "{addr}: {body}");
        let body = wait_probe(addr, "/health/ready", StatusCode::OK, 20).await?;
        assert!(body.contains("\"ready\""), "{addr}: {body}");
    }

    // S3 traffic: 5 PUTs, then 2 more PUTs and 4 GETs (cairn bench).
    const SIZE: u64 = 200 * 1024;
    let endpoint = format!("http://{gw_addr}");
    let bench = |mode: &str, extra: &[&str]| -> anyhow::Result<serde_json::Value> {
        let mut args = vec![
            "--json",
            "bench",
            mode,
            "--endpoint",
            &endpoint,
            "--no-limits",
            "--keep",
            "--concurrency",
            "2",
            "--size",
            "200KiB",
        ];
        args.extend(extra);
        let out = cluster.cli_env(
            &args,
            &[
                ("AWS_ACCESS_KEY_ID", &key),
                ("AWS_SECRET_ACCESS_KEY", &secret),
            ],
        )?;
        Ok(serde_json::from_str(&ok(&out, mode)?)?)
    };
    let put = bench("put", &["--count", "5"])?;
    assert_eq!(put["errors"], 0, "{put:#}");
    let get = bench("get", &["--count", "4", "--objects", "2"])?;
    assert_eq!(get["errors"], 0, "{get:#}");
    let bucket = put["bucket"].as_str().context("no bucket")?.to_string();

    // Gateway metrics: counts by operation and status, bytes, shard calls.
    let (_, g) = scrape(&gw_addr).await?;
    let puts = sum(
        &g,
        "cairn_s3_requests_total",
        &[("op", "PutObject"), ("status", "200")],
    );
    assert_eq!(puts, 7.0, "PutObject 200");
    let gets = sum(
        &g,
        "cairn_s3_requests_total",
        &[("op", "GetObject"), ("status", "200")],
    );
    assert_eq!(gets, 4.0, "GetObject 200");
    assert_eq!(
        sum(
            &g,
            "cairn_s3_request_duration_seconds_count",
            &[("op", "PutObject")]
        ),
        sum(&g, "cairn_s3_requests_total", &[("op", "PutObject")]),
        "one latency sample per PutObject"
    );
    assert!(one(&g, "cairn_s3_received_bytes_total")? >= (7 * SIZE) as f64);
    assert!(one(&g, "cairn_s3_sent_bytes_total")? >= (4 * SIZE) as f64);
    // 4+2: one stripe per 200 KiB object, six shards each.
    let shard_puts = sum(
        &g,
        "cairn_shard_client_calls_total",
        &[("op", "put"), ("result", "ok")],
    );
    assert!(shard_puts >= 42.0, "shard puts {shard_puts}");
    let per_cs = g
        .iter()
        .filter(|s| s.name == "cairn_shard_client_calls_total")
        .filter_map(|s| s.labels.get("chunkserver"))
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(per_cs.len(), 6, "calls by chunkserver: {per_cs:?}");
    assert!(
        sum(
            &g,
            "cairn_shard_client_calls_total",
            &[("op", "get"), ("result", "ok")]
        ) >= 16.0
    );
    assert!(one(&g, "process_resident_memory_bytes")? > 1e6);
    assert!(one(&g, "process_open_fds")? >= 3.0);

    // Metadata metrics: one leader, the same for all; commits measured.
    let mut leaders = Vec::new();
    let mut leading = 0;
    for addr in &cluster.meta_addrs {
        let (_, m) = scrape(addr).await?;
        leaders.push(one(&m, "cairn_raft_leader_id")?);
        assert!(one(&m, "cairn_raft_term")? >= 1.0);
        assert!(one(&m, "cairn_raft_applied_index")? >= 1.0);
        if one(&m, "cairn_raft_is_leader")? == 1.0 {
            leading += 1;
            assert!(
                one(&m, "cairn_raft_commit_index")? >= one(&m, "cairn_raft_applied_index")? - 1.0
            );
            assert!(one(&m, "cairn_meta_commit_batch_size_count")? >= 1.0);
            assert!(one(&m, "cairn_meta_commit_duration_seconds_count")? >= 1.0);
            assert_eq!(one(&m, "cairn_raft_voters")?, 3.0);
            assert_eq!(sum(&m, "cairn_chunkservers", &[("state", "up")]), 6.0);
            assert!(one(&m, "cairn_gc_pending").is_ok());
            assert!(one(&m, "cairn_repair_queue").is_ok());
        }
    }
    assert_eq!(leading, 1, "leaders {leaders:?}");
    assert!(
        leaders[0] >= 1.0 && leaders.iter().all(|l| *l == leaders[0]),
        "{leaders:?}"
    );

    // Chunkserver metrics: disks, shards, requests.
    let mut shards = 0.0;
    let mut cs_puts = 0.0;
    for addr in &cs_addrs {
        let (_, c) = scrape(addr).await?;
        assert!(sum(&c, "cairn_disk_capacity_bytes", &[]) > 0.0, "{addr}");
        assert!(sum(&c, "cairn_disk_free_bytes", &[]) > 0.0, "{addr}");
        assert!(c
            .iter()
            .any(|s| s.name == "cairn_disk_used_bytes" && s.labels.contains_key("dir")));
        assert!(one(&c, "cairn_scrub_total_shards").is_ok());
        assert!(one(&c, "cairn_repair_rebuilt_bytes").is_ok());
        shards += sum(&c, "cairn_disk_shards", &[]);
        cs_puts += sum(
            &c,
            "cairn_chunkserver_requests_total",
            &[("method", "PUT"), ("status", "201")],
        );
    }
    assert!(shards >= 42.0, "shards {shards}");
    assert!(cs_puts >= 42.0, "chunkserver PUT 201: {cs_puts}");

    // Operations paths never shadow S3: a signed request or another
    // method goes to S3 (here: refused as unsigned, in S3 XML).
    let r = http(
        Method::PUT,
        &format!("http://{gw_addr}/metrics"),
        None,
        &[],
        Bytes::new(),
    )
    .await?;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&r.body).contains("AccessDenied"));
    let r = http(
        Method::GET,
        &format!("http://{gw_addr}/health/live"),
        None,
        &[("authorization", "AWS4-HMAC-SHA256 Credential=x".to_string())],
        Bytes::new(),
    )
    .await?;
    assert_ne!(r.status, StatusCode::OK, "a signed /health/live is S3");

    // Every S3 reply carries a request id, which the gateway's logs carry.
    let r = http(
        Method::GET,
        &format!("http://{gw_addr}/{bucket}"),
        None,
        &[],
        Bytes::new(),
    )
    .await?;
    let id = r
        .headers
        .get("x-amz-request-id")
        .and_then(|v| v.to_str().ok())
        .context("no x-amz-request-id")?
        .to_string();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gw.log_tail(200).contains(&id) {
        ensure!(
            Instant::now() < deadline,
            "request id {id} not in the gateway log"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // CLI: `ls cairn://` lists the buckets like `ls`.
    let plain = ok(&cluster.cli(&["ls"])?, "ls")?;
    let url = ok(&cluster.cli(&["ls", "cairn://"])?, "ls cairn://")?;
    assert!(plain.contains(&bucket), "{plain}");
    assert_eq!(plain, url);
    // `admin status` ends its output with a newline, text and JSON.
    for args in [&["admin", "status"][..], &["--json", "admin", "status"][..]] {
        let out = ok(&cluster.cli(args)?, "admin status")?;
        assert!(out.ends_with('\n'), "{args:?}: {out:?}");
    }
    // A closed pipe ends the CLI quietly and successfully.
    let file = cluster.dir.path().join("small.bin");
    std::fs::write(&file, vec![7u8; 64 * 1024])?;
    let obj = format!("cairn://{bucket}/pipe.bin");
    ok(
        &cluster.cli(&["put", file.to_str().context("path")?, &obj])?,
        "put",
    )?;
    let bucket_url = format!("cairn://{bucket}");
    for args in [
        vec!["stat", obj.as_str()],
        vec!["ls", "-r", bucket_url.as_str()],
        vec!["get", obj.as_str(), "-"],
        vec!["admin", "status"],
    ] {
        let (code, stderr) = into_closed_pipe(&cluster, &args)?;
        assert_eq!(code, 0, "cairn {args:?} | true: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "cairn {args:?}: {stderr}"
        );
    }
    Ok(())
}

/// Gateway readiness follows the metadata service: ready with a leader,
/// 503 once no leader is reachable; a metadata node without a leader is
/// not ready either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_without_a_metadata_leader() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(Opts::default())?;
    let gw = gateway(&cluster)?;
    let gw_addr = gw.addr_str();
    wait_probe(&gw_addr, "/health/ready", StatusCode::OK, 20).await?;
    let leader = cluster.leader().await?;
    for i in 0..cluster.metas.len() {
        wait_probe(&cluster.meta_addrs[i], "/health/ready", StatusCode::OK, 20).await?;
    }
    // Kill the leader and one follower: the survivor loses its leader.
    let follower = (leader + 1) % 3;
    let survivor = (leader + 2) % 3;
    cluster.metas[leader].kill_9();
    cluster.metas[follower].kill_9();
    let body = wait_probe(
        &cluster.meta_addrs[survivor],
        "/health/ready",
        StatusCode::SERVICE_UNAVAILABLE,
        20,
    )
    .await?;
    assert!(
        body.contains("not ready") && body.contains("leader"),
        "{body}"
    );
    let body = wait_probe(
        &gw_addr,
        "/health/ready",
        StatusCode::SERVICE_UNAVAILABLE,
        20,
    )
    .await?;
    assert!(body.contains("not ready"), "{body}");
    // Still live, and the probe answers fast (its own short deadline).
    let started = Instant::now();
    let (s, _) = probe(&gw_addr, "/health/ready").await?;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(probe(&gw_addr, "/health/live").await?.0, StatusCode::OK);
    Ok(())
}

/// The children of a process, from `/proc/*/stat`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces; split after ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// Alive: present and not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The permission bits of `p`.
fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0)
}

/// `cairn dev` also fixes a group/world-readable `dev-secret` from an
/// older version to 0600 and hands the secret to its children by file:
/// neither their command lines nor their environments hold it.
#[test]
fn dev_children_die_with_a_sigkilled_parent() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let base = crate::common::dev_base_port(23_000, 8_000);
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let secret_file = data.join("dev-secret");
    let old_secret = "0123456789abcdef0123456789abcdef";
    std::fs::write(&secret_file, old_secret)?;
    std::fs::set_permissions(
        &secret_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    let mut dev = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["dev", "--base-port", &base.to_string(), "--data"])
        .arg(&data)
        .arg("--config")
        .arg(dir.path().join("config.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = dev.id();
    // 3 metadata nodes, 6 chunkservers, 1 gateway.
    let deadline = Instant::now() + Duration::from_secs(30);
    let kids = loop {
        let kids = children_of(pid);
        if kids.len() >= 10 {
            break kids;
        }
        if Instant::now() > deadline {
            let _ = dev.kill();
            bail!("cairn dev started {} children", kids.len());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let config = dir.path().join("config.json");
    let secrets_ok = (|| -> anyhow::Result<()> {
        ensure!(
            mode(&secret_file) == 0o600,
            "dev-secret mode {:o}",
            mode(&secret_file)
        );
        ensure!(
            std::fs::read_to_string(&secret_file)? == old_secret,
            "dev-secret changed"
        );
        for k in &kids {
            let cmdline = std::fs::read(format!("/proc/{k}/cmdline"))?;
            let environ = std::fs::read(format!("/proc/{k}/environ"))?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            ensure!(cmdline.contains("--secret-file"), "child {k}: {cmdline}");
            for (what, text) in [
                ("cmdline", cmdline.to_string()),
                ("environ", String::from_utf8_lossy(&environ).to_string()),
            ] {
                ensure!(
                    !text.contains(old_secret),
                    "child {k}'s {what} holds the secret"
                );
            }
        }
        // The CLI config (it holds the secret) is 0600 from creation.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !config.exists() {
            ensure!(Instant::now() < deadline, "no config file");
            std::thread::sleep(Duration::from_millis(50));
        }
        ensure!(mode(&config) == 0o600, "config mode {:o}", mode(&config));
        Ok(())
    })();
    dev.kill()?; // SIGKILL
    dev.wait()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<u32> = kids.iter().copied().filter(|k| alive(*k)).collect();
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            for k in &left {
                let _ = Command::new("kill").args(["-9", &k.to_string()]).status();
            }
            bail!("children {left:?} outlived cairn dev");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    secrets_ok
}

/// `--secret-file` on a role and on the CLI: a group- or world-readable
/// file is refused with its path and the fix; a 0600 one is used (the
/// chunkserver then answers only requests carrying that secret).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_files_must_be_private() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("secret");
    std::fs::write(&file, "file-secret-0123456789\n")?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
    let data = dir.path().join("data");
    let role = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["chunkserver", "--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            .arg("--secret-file")
            .arg(&file)
            .args(extra)
            .env_remove("CAIRN_SECRET")
            .stdin(Stdio::null())
            .output()
    };
    for out in [
        role(&[])?,
        Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["ls", "--metadata", "127.0.0.1:1", "--secret-file"])
            .arg(&file)
            .env_remove("CAIRN_SECRET")
            .output()?,
    ] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "accepted a 0644 secret file: {stderr}"
        );
        assert!(
            stderr.contains(&file.display().to_string()) && stderr.contains("chmod 600"),
            "{stderr}"
        );
        assert!(!stderr.contains("file-secret-0123456789"), "{stderr}");
    }
    // Both a secret and a file: refused, not silently resolved.
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["chunkserver", "--data"])
        .arg(&data)
        .arg("--secret-file")
        .arg(&file)
        .env("CAIRN_SECRET", "other")
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass one"));
    // 0600: the chunkserver runs with the file's secret.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
    let cs = Proc::spawn(
        "cs",
        dir.path(),
        [
            "chunkserver".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data".into(),
            data.clone().into_os_string(),
            "--secret-file".into(),
            file.clone().into_os_string(),
        ],
        &[],
    )?;
    let url = format!("http://{}/v1/admin/workers", cs.addr_str());
    // Chunkservers take the data-plane key derived from the secret, never
    // the secret itself (which would open the metadata API to whoever
    // reads a chunkserver's traffic).
    let data_key = cairn_metadata::auth::data_key("file-secret-0123456789");
    for (secret, want) in [
        (data_key.as_str(), StatusCode::OK),
        ("file-secret-0123456789", StatusCode::UNAUTHORIZED),
        (SECRET, StatusCode::UNAUTHORIZED),
    ] {
        let r = http(Method::POST, &url, Some(secret), &[], Bytes::new()).await?;
        assert_eq!(
            r.status,
            want,
            "{secret}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    Ok(())
}
