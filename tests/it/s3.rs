//! The S3 gateway against real S3 clients: the aws cli, boto3 (every
//! operation, presigned URLs, conditions, checksums and error codes, in
//! `s3_boto3.py`), rclone and s3cmd, then a download with a chunkserver
//! killed. One cluster and one gateway serve every case (2 cores).
//!
//! CI installs every client (`.ci/run`); locally a missing client is
//! skipped with a loud message. Only 127.0.0.1 is ever contacted.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, Context};
use cairn_metadata::types::EcParams;

use crate::cluster::{Cluster, Opts};
use crate::common::{Proc, SECRET};

/// The boto3 script (run with `python3 -`).
const BOTO3_SCRIPT: &str = include_str!("s3_boto3.py");

/// Size of the aws cli round trip (multipart at the cli's 8 MiB parts).
fn big_mib() -> usize {
    std::env::var("CAIRN_IT_S3_BIG_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

/// The gateway's peak RSS must stay under this while big objects stream
/// through it.
const MAX_GATEWAY_RSS_KIB: u64 = 256 * 1024;

pub(crate) struct S3Env {
    pub(crate) cluster: Cluster,
    pub(crate) gateway: Proc,
    pub(crate) key: String,
    pub(crate) secret: String,
    pub(crate) work: PathBuf,
}

impl S3Env {
    pub(crate) async fn start() -> anyhow::Result<S3Env> {
        let cluster = Cluster::start(Opts {
            chunkservers: 6,
            zones: 3,
            ..Default::default()
        })?;
        cluster.wait_chunkservers_up(6).await?;
        let out = cluster.cli(&["--json", "admin", "key", "create", "it", "--admin"])?;
        if !out.status.success() {
            bail!(
                "key create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("bad key json {:?}", String::from_utf8_lossy(&out.stdout)))?;
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
                "--domain",
                "s3.test",
            ],
            &[("CAIRN_SECRET", SECRET)],
        )?;
        let work = cluster.dir.path().join("s3work");
        std::fs::create_dir_all(&work)?;
        Ok(S3Env {
            cluster,
            gateway,
            key,
            secret,
            work,
        })
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.gateway.addr_str())
    }

    /// The aws cli with only these credentials (no user config).
    fn aws(&self, args: &[&str]) -> anyhow::Result<Output> {
        run(
            self.aws_as(&self.key, &self.secret, args),
            &format!("aws {}", args.join(" ")),
        )
    }

    /// The aws cli command for another key.
    fn aws_as(&self, key: &str, secret: &str, args: &[&str]) -> Command {
        let none = self.work.join("no-aws-config");
        let mut cmd = Command::new("aws");
        cmd.arg("--endpoint-url")
            .arg(self.endpoint())
            .args(args)
            .env("AWS_ACCESS_KEY_ID", key)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", &none)
            .env("AWS_SHARED_CREDENTIALS_FILE", &none)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(std::process::Stdio::null());
        cmd
    }

    /// Creates a non-admin key; returns (id, secret).
    fn create_key(&self, name: &str) -> anyhow::Result<(String, String)> {
        let out = self
            .cluster
            .cli(&["--json", "admin", "key", "create", name])?;
        if !out.status.success() {
            bail!(
                "key create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Ok((
            v["id"].as_str().context("no id")?.to_string(),
            v["secret"].as_str().context("no secret")?.to_string(),
        ))
    }

    fn rclone(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut cmd = Command::new("rclone");
        cmd.args(args)
            .env_remove("AWS_CA_BUNDLE")
            .env("RCLONE_CONFIG", self.work.join("rclone.conf"))
            .env("RCLONE_CONFIG_CAIRN_TYPE", "s3")
            .env("RCLONE_CONFIG_CAIRN_PROVIDER", "Other")
            .env("RCLONE_CONFIG_CAIRN_ACCESS_KEY_ID", &self.key)
            .env("RCLONE_CONFIG_CAIRN_SECRET_ACCESS_KEY", &self.secret)
            .env("RCLONE_CONFIG_CAIRN_ENDPOINT", self.endpoint())
            .env("RCLONE_CONFIG_CAIRN_REGION", "us-east-1")
            .env("RCLONE_CONFIG_CAIRN_FORCE_PATH_STYLE", "true");
        run(cmd, &format!("rclone {}", args.join(" ")))
    }

    fn s3cmd(&self, args: &[&str]) -> anyhow::Result<Output> {
        let cfg = self.work.join("s3cmd.cfg");
        let addr = self.gateway.addr_str();
        std::fs::write(
            &cfg,
            format!(
                "[default]\naccess_key = {}\nsecret_key = {}\nhost_base = {addr}\nhost_bucket = {addr}\n\
                 use_https = False\nsignature_v2 = False\nbucket_location = us-east-1\n",
                self.key, self.secret
            ),
        )?;
        let mut cmd = Command::new("s3cmd");
        cmd.arg("-c").arg(&cfg).args(args);
        run(cmd, &format!("s3cmd {}", args.join(" ")))
    }

    fn gateway_peak_rss_kib(&self) -> Option<u64> {
        let pid = self.gateway.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

/// Runs a command; fails with its output if it fails.
pub(crate) fn run(mut cmd: Command, what: &str) -> anyhow::Result<Output> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Whether `tool` runs; if not, says loudly that its case is skipped.
pub(crate) fn have(tool: &str, args: &[&str]) -> bool {
    let ok = Command::new(tool)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!(
            "\n!!!!!!!! SKIPPING the {tool} cases: `{tool}` is not installed here \
             (.ci/run installs it in CI) !!!!!!!!\n"
        );
    }
    ok
}

/// Writes `mib` MiB of deterministic pseudo-random bytes.
fn write_data(path: &Path, mib: usize, seed: u64) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        f.write_all(&buf)?;
    }
    f.flush()?;
    Ok(())
}

fn file_hash(path: &Path) -> anyhow::Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    std::io::copy(&mut f, &mut h)?;
    Ok(h.finalize())
}

fn make_tree(root: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(root.join("sub/deeper"))?;
    std::fs::write(root.join("a.txt"), b"alpha\n")?;
    std::fs::write(root.join("sub/b.txt"), b"bravo\n")?;
    write_data(&root.join("sub/deeper/c.bin"), 1, 7)?;
    Ok(())
}

fn same_tree(a: &Path, b: &Path) -> anyhow::Result<()> {
    for rel in ["a.txt", "sub/b.txt", "sub/deeper/c.bin"] {
        if file_hash(&a.join(rel))? != file_hash(&b.join(rel))? {
            bail!("{rel} differs between {} and {}", a.display(), b.display());
        }
    }
    Ok(())
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_clients_against_one_cluster() -> anyhow::Result<()> {
    let mut env = S3Env::start().await?;
    let work = env.work.clone();
    let big = work.join("big.bin");
    let mib = big_mib();
    write_data(&big, mib, 42)?;

    if have("aws", &["--version"]) {
        env.aws(&["s3", "mb", "s3://cli"])?;
        let b = big.to_string_lossy().into_owned();
        env.aws(&["s3", "cp", "--only-show-errors", &b, "s3://cli/big.bin"])?;
        let back = work.join("big.back");
        let back_s = back.to_string_lossy().into_owned();
        env.aws(&[
            "s3",
            "cp",
            "--only-show-errors",
            "s3://cli/big.bin",
            &back_s,
        ])?;
        assert_eq!(file_hash(&big)?, file_hash(&back)?, "aws cli round trip");
        let head = env.aws(&[
            "s3api",
            "head-object",
            "--bucket",
            "cli",
            "--key",
            "big.bin",
        ])?;
        let head: serde_json::Value = serde_json::from_slice(&head.stdout)?;
        assert_eq!(head["ContentLength"].as_u64(), Some((mib as u64) << 20));
        let parts = (mib as u64).div_ceil(8);
        let etag = head["ETag"].as_str().unwrap_or_default();
        if parts > 1 {
            assert!(
                etag.ends_with(&format!("-{parts}\"")),
                "multipart ETag {etag}"
            );
        }
        let ls = env.aws(&["s3", "ls", "s3://cli/"])?;
        assert!(stdout(&ls).contains("big.bin"), "s3 ls: {}", stdout(&ls));

        let tree = work.join("tree");
        make_tree(&tree)?;
        let tree_s = tree.to_string_lossy().into_owned();
        env.aws(&[
            "s3",
            "sync",
            "--only-show-errors",
            &tree_s,
            "s3://cli/tree/",
        ])?;
        let down = work.join("tree-down");
        let down_s = down.to_string_lossy().into_owned();
        env.aws(&[
            "s3",
            "sync",
            "--only-show-errors",
            "s3://cli/tree/",
            &down_s,
        ])?;
        same_tree(&tree, &down)?;
        let l = env.aws(&[
            "s3api",
            "list-objects-v2",
            "--bucket",
            "cli",
            "--prefix",
            "tree/",
            "--delimiter",
            "/",
        ])?;
        let l: serde_json::Value = serde_json::from_slice(&l.stdout)?;
        assert_eq!(
            l["CommonPrefixes"][0]["Prefix"].as_str(),
            Some("tree/sub/"),
            "{l}"
        );
        assert_eq!(l["Contents"][0]["Key"].as_str(), Some("tree/a.txt"), "{l}");
        env.aws(&[
            "s3",
            "rm",
            "--only-show-errors",
            "--recursive",
            "s3://cli/tree/",
        ])?;
        let ls = env.aws(&["s3", "ls", "--recursive", "s3://cli/"])?;
        assert!(!stdout(&ls).contains("tree/"), "after rm: {}", stdout(&ls));

        // Versioning through the aws cli: two versions, the old one read
        // back by id, a delete marker, list-object-versions.
        env.aws(&["s3", "mb", "s3://cli-versions"])?;
        env.aws(&[
            "s3api",
            "put-bucket-versioning",
            "--bucket",
            "cli-versions",
            "--versioning-configuration",
            "Status=Enabled",
        ])?;
        let mut ids = Vec::new();
        for body in ["one", "two"] {
            let f = work.join(format!("{body}.txt"));
            std::fs::write(&f, body)?;
            let f = f.to_string_lossy().into_owned();
            let out = env.aws(&[
                "s3api",
                "put-object",
                "--bucket",
                "cli-versions",
                "--key",
                "v",
                "--body",
                &f,
            ])?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            ids.push(v["VersionId"].as_str().unwrap_or_default().to_string());
        }
        assert!(
            ids.iter().all(|i| i.len() == 32) && ids[0] != ids[1],
            "{ids:?}"
        );
        let back = work.join("v-one.txt");
        let back_s = back.to_string_lossy().into_owned();
        env.aws(&[
            "s3api",
            "get-object",
            "--bucket",
            "cli-versions",
            "--key",
            "v",
            "--version-id",
            &ids[0],
            &back_s,
        ])?;
        assert_eq!(std::fs::read(&back)?, b"one");
        env.aws(&["s3", "rm", "--only-show-errors", "s3://cli-versions/v"])?;
        let l = env.aws(&["s3api", "list-object-versions", "--bucket", "cli-versions"])?;
        let l: serde_json::Value = serde_json::from_slice(&l.stdout)?;
        let listed: Vec<&str> = l["Versions"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v["VersionId"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(listed, vec![ids[1].as_str(), ids[0].as_str()], "{l}");
        assert_eq!(
            l["DeleteMarkers"][0]["IsLatest"].as_bool(),
            Some(true),
            "{l}"
        );

        let rss = env.gateway_peak_rss_kib().unwrap_or(0);
        eprintln!("gateway peak RSS after {mib} MiB up and down: {rss} KiB");
        assert!(rss < MAX_GATEWAY_RSS_KIB, "gateway peak RSS {rss} KiB");
    }

    if have("aws", &["--version"]) {
        // A key with a read grant on `cli` only: reads work, writes and
        // other buckets are AccessDenied; `key list` never shows secrets.
        env.aws(&["s3", "mb", "s3://other-b"])?;
        let (id, secret) = env.create_key("reader")?;
        let out = env
            .cluster
            .cli(&["admin", "key", "allow", &id, "--bucket", "cli", "--read"])?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let head = [
            "s3api",
            "head-object",
            "--bucket",
            "cli",
            "--key",
            "big.bin",
        ];
        run(env.aws_as(&id, &secret, &head), "reader head-object")?;
        let small = work.join("small.txt");
        std::fs::write(&small, b"small")?;
        let small_s = small.to_string_lossy().into_owned();
        for args in [
            vec!["s3", "cp", small_s.as_str(), "s3://cli/denied.txt"],
            vec!["s3", "ls", "s3://other-b/"],
            vec!["s3", "rb", "s3://cli"],
        ] {
            let out = env.aws_as(&id, &secret, &args).output()?;
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && err.contains("AccessDenied"),
                "{args:?}: {err}"
            );
        }
        let ls = run(env.aws_as(&id, &secret, &["s3", "ls"]), "reader ls")?;
        assert_eq!(
            stdout(&ls).lines().count(),
            1,
            "reader sees: {}",
            stdout(&ls)
        );
        let list = env.cluster.cli(&["admin", "key", "list"])?;
        let list = stdout(&list);
        assert!(list.contains(&id) && !list.contains(&secret) && !list.contains(&env.secret));
        let out = env.cluster.cli(&["admin", "key", "delete", &id])?;
        assert!(out.status.success());
    }

    if have("python3", &["-c", "import boto3"]) {
        let port = env.gateway.addr().port().to_string();
        let mut cmd = Command::new("python3");
        cmd.arg("-c")
            .arg(BOTO3_SCRIPT)
            .env("S3_ENDPOINT", env.endpoint())
            .env("S3_KEY", &env.key)
            .env("S3_SECRET", &env.secret)
            .env("S3_DOMAIN_PORT", &port)
            .env_remove("AWS_CONFIG_FILE")
            .env("AWS_CONFIG_FILE", work.join("no-aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", work.join("no-aws-config"));
        let out = run(cmd, "boto3 script")?;
        assert!(stdout(&out).contains("ALL OK"), "{}", stdout(&out));
        let b = env.cluster.client().bucket("ecb").await?;
        assert_eq!(b.ec, EcParams::new(3, 2)?, "x-cairn-ec");
    }

    if have("rclone", &["version"]) {
        let src = work.join("rc-src");
        make_tree(&src)?;
        let src_s = src.to_string_lossy().into_owned();
        env.rclone(&["mkdir", "cairn:rclone-b"])?;
        env.rclone(&["copy", &src_s, "cairn:rclone-b/tree"])?;
        env.rclone(&["check", &src_s, "cairn:rclone-b/tree"])?;
        std::fs::remove_file(src.join("a.txt"))?;
        std::fs::write(src.join("new.txt"), b"new\n")?;
        env.rclone(&["sync", &src_s, "cairn:rclone-b/tree"])?;
        env.rclone(&["check", &src_s, "cairn:rclone-b/tree"])?;
        let cat = env.rclone(&["cat", "cairn:rclone-b/tree/new.txt"])?;
        assert_eq!(cat.stdout, b"new\n");
        let ls = env.rclone(&["lsf", "cairn:rclone-b/tree"])?;
        assert!(
            !stdout(&ls).contains("a.txt"),
            "sync deletes: {}",
            stdout(&ls)
        );
    }

    if have("s3cmd", &["--version"]) {
        let f = work.join("s3cmd.in");
        write_data(&f, 3, 9)?;
        let f_s = f.to_string_lossy().into_owned();
        env.s3cmd(&["mb", "s3://s3c"])?;
        env.s3cmd(&["put", &f_s, "s3://s3c/dir/f"])?;
        let g = work.join("s3cmd.out");
        let g_s = g.to_string_lossy().into_owned();
        env.s3cmd(&["get", "--force", "s3://s3c/dir/f", &g_s])?;
        assert_eq!(file_hash(&f)?, file_hash(&g)?, "s3cmd round trip");
        let ls = env.s3cmd(&["ls", "--recursive", "s3://s3c"])?;
        assert!(stdout(&ls).contains("s3://s3c/dir/f"), "{}", stdout(&ls));
    }

    if have("aws", &["--version"]) {
        // Fault: one chunkserver dies; the download reads parity.
        env.cluster.chunkservers[0].kill_9();
        let back = work.join("big.degraded");
        let back_s = back.to_string_lossy().into_owned();
        env.aws(&[
            "s3",
            "cp",
            "--only-show-errors",
            "s3://cli/big.bin",
            &back_s,
        ])?;
        assert_eq!(file_hash(&big)?, file_hash(&back)?, "degraded download");
    }
    Ok(())
}

/// Runs a boto3 script (one of the `s3_*.py` files) against a fresh
/// cluster's gateway with its endpoint and key in the environment; the
/// script prints `ALL OK` at its end. Without boto3 the test is skipped
/// locally and fails in CI.
async fn boto3_script(script: &str, what: &str) -> anyhow::Result<()> {
    if !have("python3", &["-c", "import boto3"]) {
        if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0") {
            bail!("boto3 is not installed (python3 -m pip install boto3)");
        }
        return Ok(());
    }
    let env = S3Env::start().await?;
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(script)
        .env("S3_ENDPOINT", env.endpoint())
        .env("S3_KEY", &env.key)
        .env("S3_SECRET", &env.secret)
        .env("AWS_CONFIG_FILE", env.work.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            env.work.join("no-aws-config"),
        );
    let out = run(cmd, what)?;
    assert!(stdout(&out).contains("ALL OK"), "{}", stdout(&out));
    Ok(())
}

/// The issue 13 ("S3 breadth") operations through boto3
/// (`s3_breadth.py`): bucket versioning status, object tagging,
/// GetObjectAttributes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_breadth_with_boto3() -> anyhow::Result<()> {
    boto3_script(BREADTH_SCRIPT, "boto3 breadth script").await
}

/// The boto3 script of [`s3_breadth_with_boto3`].
const BREADTH_SCRIPT: &str = include_str!("s3_breadth.py");

/// S3 versioning through boto3 (`s3_versioning.py`): versions made by
/// PUT, copy and multipart completion, GET/HEAD/DELETE/copy by version,
/// delete markers, ListObjectVersions paging, suspended buckets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_versioning_with_boto3() -> anyhow::Result<()> {
    boto3_script(VERSIONING_SCRIPT, "boto3 versioning script").await
}

/// The boto3 script of [`s3_versioning_with_boto3`].
const VERSIONING_SCRIPT: &str = include_str!("s3_versioning.py");

/// S3 Object Lock through boto3 (`s3_object_lock.py`): lock-enabled
/// buckets, default retention, GOVERNANCE bypass, COMPLIANCE never
/// shortened, legal holds, refusals without Object Lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_object_lock_with_boto3() -> anyhow::Result<()> {
    boto3_script(OBJECT_LOCK_SCRIPT, "boto3 object lock script").await
}

/// The boto3 script of [`s3_object_lock_with_boto3`].
const OBJECT_LOCK_SCRIPT: &str = include_str!("s3_object_lock.py");

/// Issue 14's request hygiene through boto3 (`s3_security.py`): every
/// server-side-encryption request refused with 501 and nothing stored,
/// bucket encryption answers, SigV2 refused, SigV4 clock skew (botocore
/// signing with a clock 20 minutes off), presigned lifetime and expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_security_with_boto3() -> anyhow::Result<()> {
    boto3_script(SECURITY_SCRIPT, "boto3 security script").await
}

/// The boto3 script of [`s3_security_with_boto3`].
const SECURITY_SCRIPT: &str = include_str!("s3_security.py");

/// A minimal S3 client for raw-HTTP checks: path-style requests signed with
/// the `aws-sigv4` crate (UNSIGNED-PAYLOAD), over a pooled hyper client, so
/// a test sees exactly what an SDK would: status line, headers, and how the
/// body ends.
pub(crate) struct RawS3 {
    http: cairn_metadata::net::HttpClient,
    host: String,
    identity: aws_smithy_runtime_api::client::identity::Identity,
}

impl RawS3 {
    pub(crate) fn new(host: &str, key: &str, secret: &str) -> RawS3 {
        RawS3 {
            http: cairn_metadata::net::HttpClient::default(),
            host: host.to_string(),
            identity: aws_credential_types::Credentials::new(key, secret, None, None, "it").into(),
        }
    }

    /// Signs and sends one request; `timeout` covers the exchange up to
    /// the response headers.
    pub(crate) async fn send(
        &self,
        method: hyper::Method,
        path: &str,
        extra: &[(&str, String)],
        body: bytes::Bytes,
        timeout: std::time::Duration,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        use aws_sigv4::http_request::{
            sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
            SigningSettings, UriPathNormalizationMode,
        };
        let uri = format!("http://{}{path}", self.host);
        let len = body.len().to_string();
        let mut headers: Vec<(&str, &str)> = vec![("host", self.host.as_str())];
        if method == hyper::Method::PUT {
            headers.push(("content-length", len.as_str()));
        }
        headers.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&self.identity)
            .region("us-east-1")
            .name("s3")
            .time(std::time::SystemTime::now())
            .settings(settings)
            .build()?
            .into();
        let signable = SignableRequest::new(
            method.as_str(),
            uri.as_str(),
            headers.iter().copied(),
            SignableBody::UnsignedPayload,
        )?;
        let (instructions, _) = sign(signable, &params)?.into_parts();
        let mut b = hyper::Request::builder().method(method).uri(&uri);
        for (k, v) in &headers {
            b = b.header(*k, *v);
        }
        let mut req = b.body(cairn_metadata::net::full(body))?;
        instructions.apply_to_request_http1x(&mut req);
        Ok(self.http.send(req, timeout).await?)
    }
}

/// How a GET's body ended: the bytes received, and whether the transfer
/// failed (connection cut before the announced length) rather than ending
/// cleanly.
pub(crate) async fn drain(
    resp: hyper::Response<hyper::body::Incoming>,
) -> (Vec<u8>, Option<String>) {
    use http_body_util::BodyExt;
    let mut body = resp.into_body();
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(30), body.frame()).await {
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    out.extend_from_slice(&d);
                }
            }
            Ok(Some(Err(e))) => return (out, Some(e.to_string())),
            Ok(None) => return (out, None),
            Err(_) => return (out, Some("body stalled for 30 s".into())),
        }
    }
}

/// Creates an admin access key through the CLI: (id, secret).
pub(crate) fn admin_key(c: &Cluster) -> anyhow::Result<(String, String)> {
    let out = c.cli(&["--json", "admin", "key", "create", "it", "--admin"])?;
    if !out.status.success() {
        bail!(
            "key create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok((
        v["id"].as_str().context("no id")?.to_string(),
        v["secret"].as_str().context("no secret")?.to_string(),
    ))
}

/// Starts a gateway listening on `listen` (a fixed port survives restarts).
fn gateway(c: &Cluster, listen: &str) -> anyhow::Result<Proc> {
    Proc::spawn(
        "gateway",
        c.dir.path(),
        [
            "gateway",
            "--plain-http",
            "--listen",
            listen,
            "--metadata",
            &c.meta_addrs.join(","),
        ],
        &[("CAIRN_SECRET", SECRET)],
    )
}

/// Deletes the shard files of `stripe`'s shards `indices` from the
/// chunkservers' data directories (a lost disk, as the reader sees it).
async fn delete_shards(
    c: &Cluster,
    client: &cairn_client::Client,
    m: &cairn_metadata::types::ObjectManifest,
    stripe: usize,
    indices: &[usize],
) -> anyhow::Result<()> {
    let servers = client.chunkservers().await?;
    for &i in indices {
        let loc = &m.stripes[stripe].shards[i];
        let cs = loc.chunkserver.context("shard not placed")?;
        let addr = &servers
            .iter()
            .find(|s| s.id == cs)
            .context("unknown chunkserver")?
            .addr;
        let idx = c
            .chunkservers
            .iter()
            .position(|p| &p.addr_str() == addr)
            .context("not one of ours")?;
        let hex = loc.shard.to_string();
        let path = c
            .cs_data(idx)
            .join("shards")
            .join(&hex[0..2])
            .join(&hex[2..4])
            .join(&hex);
        std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
    }
    Ok(())
}

/// Issue 11 item 8: the gateway reads and verifies the first stripe a GET
/// needs before it answers. An object whose first stripe has fewer than k
/// shards left is answered 503 ServiceUnavailable with an S3 error document
/// (retryable), never 200 and a cut body; HEAD stays metadata-only; a range
/// that avoids the lost stripe is served. A stripe lost further in can only
/// cut the connection: the client sees a transfer that ends short of its
/// Content-Length with an error, never a clean short body. `cairn get`
/// fails without leaving a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get_of_an_unreadable_object_is_503_not_a_cut_200() -> anyhow::Result<()> {
    use cairn_client::PutOptions;
    use hyper::{Method, StatusCode};
    use std::time::Duration;

    let c = Cluster::start(Opts {
        chunkservers: 6,
        zones: 3,
        ..Default::default()
    })?;
    c.wait_chunkservers_up(6).await?;
    let (key, secret) = admin_key(&c)?;
    let gw = gateway(&c, "127.0.0.1:0")?;
    let client = c.client();
    // 64 KiB shards: 256 KiB stripes, three of them per object.
    client
        .create_bucket("bkt", EcParams::default(), 64 << 10)
        .await?;
    let size = 3 * (256 << 10) - 1000;
    let first = crate::common::data(size, 1);
    let middle = crate::common::data(size, 2);
    let m1 = client
        .put("bkt", "first-lost", &first[..], PutOptions::default())
        .await?;
    let m2 = client
        .put("bkt", "middle-lost", &middle[..], PutOptions::default())
        .await?;
    assert_eq!(m1.stripes.len(), 3);
    // Three of six shards gone: below k = 4.
    delete_shards(&c, &client, &m1, 0, &[0, 1, 4]).await?;
    delete_shards(&c, &client, &m2, 1, &[1, 2, 5]).await?;

    let s3 = RawS3::new(&gw.addr_str(), &key, &secret);
    let t = Duration::from_secs(30);

    let resp = s3
        .send(Method::GET, "/bkt/first-lost", &[], bytes::Bytes::new(), t)
        .await?;
    let status = resp.status();
    let (body, cut) = drain(resp).await;
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "GET of an object whose first stripe is lost: {status}, {} body bytes, {cut:?}",
        body.len()
    );
    assert!(cut.is_none(), "error reply cut: {cut:?}");
    assert!(
        text.contains("<Code>ServiceUnavailable</Code>") && text.contains("not enough shards"),
        "S3 error document: {text}"
    );

    // HEAD needs no shard.
    let resp = s3
        .send(Method::HEAD, "/bkt/first-lost", &[], bytes::Bytes::new(), t)
        .await?;
    assert_eq!(resp.status(), StatusCode::OK, "HEAD is metadata-only");
    // A range within the readable third stripe is served.
    let a = 2 * (256 << 10) + 10;
    let resp = s3
        .send(
            Method::GET,
            "/bkt/first-lost",
            &[("range", format!("bytes={a}-{}", a + 99))],
            bytes::Bytes::new(),
            t,
        )
        .await?;
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    let (body, cut) = drain(resp).await;
    assert!(cut.is_none(), "{cut:?}");
    assert!(body == first[a..a + 100], "range bytes differ");

    // The middle stripe is lost: 200 (the first stripe was fine), then the
    // connection is cut before the announced length.
    let resp = s3
        .send(Method::GET, "/bkt/middle-lost", &[], bytes::Bytes::new(), t)
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let announced: usize = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .context("content-length")?;
    assert_eq!(announced, size);
    let (body, cut) = drain(resp).await;
    assert!(
        cut.is_some() && body.len() < size,
        "a stripe lost mid-body must abort the transfer: got {} of {size} bytes, error {cut:?}",
        body.len()
    );
    assert!(
        body[..] == middle[..body.len()],
        "the bytes sent before the cut are the object's"
    );

    // The CLI refuses before creating the output file.
    let out_path = c.dir.path().join("got.bin");
    let out_s = out_path.to_string_lossy().into_owned();
    let out = c.cli(&["get", "cairn://bkt/first-lost", &out_s])?;
    assert!(!out.status.success(), "cairn get of an unreadable object");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not enough shards"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out_path.exists(), "no output file for a failed get");
    Ok(())
}

/// Issue 11 item 8, the PUT stalls: small S3 PUTs (10 KiB, inline) and a
/// 1 MiB writer keep going while a chunkserver is killed -9 and restarted,
/// the gateway is killed -9 and restarted on its port, and the metadata
/// leader is killed -9 and restarted, then a chunkserver and the leader are
/// each SIGSTOPped for a few seconds (no reset: requests hang). Every PUT must succeed (a writer
/// retries a failed attempt after 100 ms, as SDKs do) and none may take
/// longer than a few seconds (a leader election is ~1-3 s here), never the
/// 30-34 s stalls seen in the fault campaign.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_puts_stay_fast_through_faults() -> anyhow::Result<()> {
    use hyper::{Method, StatusCode};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    let mut c = Cluster::start(Opts {
        chunkservers: 6,
        zones: 3,
        ..Default::default()
    })?;
    c.wait_chunkservers_up(6).await?;
    let (key, secret) = admin_key(&c)?;
    let listen = format!("127.0.0.1:{}", crate::cluster::free_port());
    let mut gw = gateway(&c, &listen)?;
    let s3 = Arc::new(RawS3::new(&listen, &key, &secret));
    let resp = s3
        .send(
            Method::PUT,
            "/bkt",
            &[],
            bytes::Bytes::new(),
            Duration::from_secs(20),
        )
        .await?;
    anyhow::ensure!(
        resp.status() == StatusCode::OK,
        "create bucket: {}",
        resp.status()
    );

    // (started at, took, attempts, writer and last failure)
    type Sample = (f64, f64, usize, String);
    let stop = Arc::new(AtomicBool::new(false));
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let failed: Arc<Mutex<Vec<String>>> = Arc::default();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..4usize {
        let (s3, stop, samples, failed) =
            (s3.clone(), stop.clone(), samples.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let size = if w == 0 { 1 << 20 } else { 10 << 10 };
            let body = bytes::Bytes::from(crate::common::data(size, w as u64));
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let path = format!("/bkt/w{w}/{n}");
                let start = Instant::now();
                let mut tries = 0;
                let mut last = String::new();
                let ok = loop {
                    tries += 1;
                    match s3
                        .send(
                            Method::PUT,
                            &path,
                            &[],
                            body.clone(),
                            Duration::from_secs(60),
                        )
                        .await
                    {
                        Ok(r) if r.status() == StatusCode::OK => {
                            let _ = drain(r).await;
                            break true;
                        }
                        Ok(r) => {
                            last = format!("status {}", r.status());
                            let _ = drain(r).await;
                        }
                        Err(e) => last = e.to_string(),
                    }
                    if start.elapsed() > Duration::from_secs(60) {
                        break false;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                if !ok {
                    if let Ok(mut f) = failed.lock() {
                        f.push(format!("w{w} {path}: {last}"));
                    }
                }
                if let Ok(mut l) = samples.lock() {
                    l.push((
                        start.duration_since(t0).as_secs_f64(),
                        start.elapsed().as_secs_f64(),
                        tries,
                        format!("w{w} {last}"),
                    ));
                }
            }
        }));
    }
    let mark = |what: &str| eprintln!("{:7.2}s fault: {what}", t0.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(2)).await;
    mark("kill -9 a chunkserver");
    c.chunkservers[0].kill_9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    mark("restart it");
    c.chunkservers[0].restart()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    mark("kill -9 the gateway, restart it on its port");
    gw.kill_9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    gw.restart()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let l = c.leader().await?;
    mark("kill -9 the metadata leader");
    c.metas[l].kill_9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    mark("restart it");
    c.metas[l].restart()?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // SIGSTOP, unlike SIGKILL, sends no reset: connects succeed into the
    // backlog and requests wait, the way a hung or partitioned host looks.
    mark("SIGSTOP a chunkserver for 6 s (inside its down mark)");
    crate::cluster::signal(&c.chunkservers[1], "-STOP")?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    crate::cluster::signal(&c.chunkservers[1], "-CONT")?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let l = c.leader().await?;
    mark("SIGSTOP the metadata leader for 4 s");
    crate::cluster::signal(&c.metas[l], "-STOP")?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    crate::cluster::signal(&c.metas[l], "-CONT")?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let samples = samples.lock().map(|l| l.clone()).unwrap_or_default();
    let failed = failed.lock().map(|l| l.clone()).unwrap_or_default();
    for s in samples.iter().filter(|s| s.1 > 1.0) {
        eprintln!(
            "slow PUT at {:7.2}s took {:6.2}s in {} attempts ({})",
            s.0, s.1, s.2, s.3
        );
    }
    let small_max = samples
        .iter()
        .filter(|s| !s.3.starts_with("w0"))
        .map(|s| s.1)
        .fold(0.0, f64::max);
    let max = samples.iter().map(|s| s.1).fold(0.0, f64::max);
    let mut small: Vec<f64> = samples
        .iter()
        .filter(|s| !s.3.starts_with("w0"))
        .map(|s| s.1)
        .collect();
    small.sort_by(f64::total_cmp);
    let p99 = small
        .get((small.len() * 99 / 100).min(small.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0);
    eprintln!(
        "{} PUTs, small p99 {p99:.3}s, slowest small {small_max:.2}s, slowest {max:.2}s",
        samples.len()
    );
    assert!(p99 < 3.0, "small PUT p99 {p99:.3}s through the faults");
    assert!(failed.is_empty(), "PUTs that never succeeded: {failed:?}");
    assert!(samples.len() > 100, "too few PUTs: {}", samples.len());
    assert!(
        small_max < 8.0,
        "a 10 KiB PUT took {small_max:.2}s after a fault"
    );
    assert!(max < 15.0, "a 1 MiB PUT took {max:.2}s after a fault");
    Ok(())
}
