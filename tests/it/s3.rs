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

struct S3Env {
    cluster: Cluster,
    gateway: Proc,
    key: String,
    secret: String,
    work: PathBuf,
}

impl S3Env {
    async fn start() -> anyhow::Result<S3Env> {
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

    fn endpoint(&self) -> String {
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
fn run(mut cmd: Command, what: &str) -> anyhow::Result<Output> {
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
fn have(tool: &str, args: &[&str]) -> bool {
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

fn stdout(o: &Output) -> String {
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
