//! A whole cluster of real processes for the metadata and end-to-end tests:
//! metadata nodes on fixed free ports (Raft membership names addresses, so a
//! restarted node must come back on its port), chunkservers on port 0
//! (their heartbeats re-announce the address).
#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cairn_client::{Client, ClientConfig};
use cairn_metadata::client::{Consistency, MetaClient, MetaClientOptions};
use cairn_metadata::types::*;

use crate::common::{Proc, SECRET};

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Cluster knobs.
#[derive(Clone, Debug)]
pub struct Opts {
    /// Metadata nodes.
    pub metas: usize,
    /// Chunkservers.
    pub chunkservers: usize,
    /// Zones (chunkserver i is in zone i % zones).
    pub zones: usize,
    /// Extra flags for every metadata node.
    pub meta_flags: Vec<String>,
    /// Extra flags for every chunkserver.
    pub cs_flags: Vec<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            metas: 3,
            chunkservers: 0,
            zones: 3,
            meta_flags: Vec::new(),
            cs_flags: Vec::new(),
        }
    }
}

/// A running cluster; everything is killed on drop.
pub struct Cluster {
    /// Keeps the data until the cluster is dropped.
    pub dir: tempfile::TempDir,
    /// Metadata nodes, index i has Raft id i + 1.
    pub metas: Vec<Proc>,
    /// Their addresses.
    pub meta_addrs: Vec<String>,
    /// Chunkservers.
    pub chunkservers: Vec<Proc>,
    /// Options it was started with.
    pub opts: Opts,
    /// The hosts (network namespaces) the roles run on, or `None` for
    /// 127.0.0.1 (see `netns.rs`).
    pub hosts: Option<crate::netns::Hosts>,
}

/// Flags that make elections and failure detection quick in tests.
pub const FAST_META: &[&str] = &[
    "--heartbeat-ms",
    "100",
    "--election-ms",
    "500",
    // Tests that do not test the GC delay want deletions at once; those that
    // do pass their own value (the last one wins).
    "--gc-delay-secs",
    "0",
];

impl Cluster {
    /// Starts metadata nodes (node 1 initializes them all) and chunkservers.
    pub fn start(opts: Opts) -> anyhow::Result<Cluster> {
        Cluster::start_on(opts, None)
    }

    /// As `start`, with metadata node i and chunkserver i on `hosts`
    /// (each in its own network namespace, as on separate machines).
    pub fn start_on(opts: Opts, hosts: Option<crate::netns::Hosts>) -> anyhow::Result<Cluster> {
        Cluster::start_in(tempfile::tempdir()?, opts, hosts)
    }

    /// As `start_on`, in `dir` (which a test may have prepared, e.g. with
    /// a small file system mounted at `meta{id}/data`).
    pub fn start_in(
        dir: tempfile::TempDir,
        opts: Opts,
        hosts: Option<crate::netns::Hosts>,
    ) -> anyhow::Result<Cluster> {
        let meta_addrs: Vec<String> = match &hosts {
            Some(h) => (0..opts.metas)
                .map(|i| {
                    h.meta(i)
                        .map(|m| format!("{}:{}", m.ip, crate::netns::META_PORT))
                })
                .collect::<anyhow::Result<_>>()?,
            None => (0..opts.metas)
                .map(|_| format!("127.0.0.1:{}", free_port()))
                .collect(),
        };
        let peers: Vec<String> = meta_addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect();
        let mut c = Cluster {
            dir,
            metas: Vec::new(),
            meta_addrs: meta_addrs.clone(),
            chunkservers: Vec::new(),
            opts: opts.clone(),
            hosts,
        };
        for (i, addr) in meta_addrs.iter().enumerate() {
            let mut extra = Vec::new();
            if i == 0 {
                extra.push("--init".to_string());
                extra.push("--peers".to_string());
                extra.push(peers.join(","));
            }
            let p = c.spawn_meta(i + 1, addr, &extra)?;
            c.metas.push(p);
        }
        for i in 0..opts.chunkservers {
            c.add_chunkserver(&format!("zone{}", i % opts.zones.max(1)))?;
        }
        Ok(c)
    }

    /// Starts metadata node `id` at `addr` (not yet in the cluster unless
    /// `extra` says so).
    pub fn spawn_meta(&self, id: usize, addr: &str, extra: &[String]) -> anyhow::Result<Proc> {
        let dir = self.dir.path().join(format!("meta{id}"));
        let mut args: Vec<OsString> = vec![
            "metadata".into(),
            "--id".into(),
            id.to_string().into(),
            "--listen".into(),
            addr.into(),
            "--data".into(),
            dir.join("data").into(),
        ];
        args.extend(FAST_META.iter().map(OsString::from));
        args.extend(self.opts.meta_flags.iter().map(OsString::from));
        args.extend(extra.iter().map(OsString::from));
        let wrapper = match &self.hosts {
            Some(h) => h.meta(id - 1)?.wrapper(),
            None => Vec::new(),
        };
        let key_file = self.secrets_key_file()?;
        Proc::spawn_wrapped(
            &wrapper,
            &format!("meta{id}"),
            &dir,
            args,
            &[
                ("CAIRN_SECRET", SECRET),
                ("CAIRN_SECRETS_KEY_FILE", &key_file.to_string_lossy()),
            ],
        )
    }

    /// The key file S3 secrets are sealed under, shared by every metadata
    /// node of the cluster (as on real hosts): created on first use with
    /// mode 0600 from its first byte.
    pub fn secrets_key_file(&self) -> anyhow::Result<PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let p = self.dir.path().join("secrets.key");
        if !p.exists() {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&p)
                .with_context(|| format!("cannot create {}", p.display()))?;
            f.write_all(cairn_metadata::secrets::SecretsKey::generate_hex().as_bytes())?;
            f.sync_all()?;
        }
        Ok(p)
    }

    /// Starts one more chunkserver in `zone`.
    pub fn add_chunkserver(&mut self, zone: &str) -> anyhow::Result<()> {
        let n = self.chunkservers.len() + 1;
        let name = format!("cs{n}");
        let dir = self.dir.path().join(&name);
        let (wrapper, listen) = match &self.hosts {
            Some(h) => {
                let host = h.chunkserver(n - 1)?;
                (host.wrapper(), format!("{}:0", host.ip))
            }
            None => (Vec::new(), "127.0.0.1:0".to_string()),
        };
        let mut args: Vec<OsString> = vec![
            "chunkserver".into(),
            "--data".into(),
            dir.join("data").into(),
            "--listen".into(),
            listen.into(),
            "--zone".into(),
            zone.into(),
            "--metadata".into(),
            self.meta_addrs.join(",").into(),
            "--heartbeat-ms".into(),
            "300".into(),
        ];
        args.extend(self.opts.cs_flags.iter().map(OsString::from));
        let p = Proc::spawn_wrapped(&wrapper, &name, &dir, args, &[("CAIRN_SECRET", SECRET)])?;
        self.chunkservers.push(p);
        Ok(())
    }

    /// The data directory of chunkserver `i` (0-based).
    pub fn cs_data(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("cs{}", i + 1)).join("data")
    }

    /// A metadata client over every node.
    pub fn meta(&self) -> MetaClient {
        MetaClient::new(
            self.meta_addrs.clone(),
            SECRET.into(),
            MetaClientOptions {
                retry_deadline: Duration::from_secs(30),
                ..Default::default()
            },
        )
    }

    /// A metadata client pinned to node `i` (no failover), for per-node
    /// checks.
    pub fn meta_at(&self, i: usize) -> MetaClient {
        MetaClient::new(
            vec![self.meta_addrs[i].clone()],
            SECRET.into(),
            MetaClientOptions {
                retry_deadline: Duration::from_secs(2),
                ..Default::default()
            },
        )
    }

    /// A client library handle.
    pub fn client(&self) -> Client {
        let mut cfg = ClientConfig::new(self.meta_addrs.clone(), SECRET.into());
        cfg.shard_timeout = Duration::from_secs(5);
        Client::new(cfg)
    }

    /// Index of the current leader: the node claiming leadership in the
    /// highest term any running node reports (a restarted old leader may
    /// briefly still think it leads an older term).
    pub async fn leader(&self) -> anyhow::Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut best: Option<(u64, usize)> = None;
            let mut max_term = 0;
            for (i, _) in self.meta_addrs.iter().enumerate() {
                if self.metas.get(i).is_none_or(|p| p.pid().is_none()) {
                    continue;
                }
                if let Ok(s) = self.meta_at(i).status().await {
                    max_term = max_term.max(s.term);
                    if s.leader == Some(s.id) && best.is_none_or(|(t, _)| s.term > t) {
                        best = Some((s.term, i));
                    }
                }
            }
            if let Some((t, i)) = best {
                if t == max_term {
                    return Ok(i);
                }
            }
            if Instant::now() > deadline {
                bail!("no leader within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `n` chunkservers are registered and up.
    pub async fn wait_chunkservers_up(&self, n: usize) -> anyhow::Result<Vec<ChunkserverInfo>> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let meta = self.meta();
        loop {
            if let Ok(QueryResult::Chunkservers(list)) = meta
                .query(&Query::ListChunkservers, Consistency::Linearizable)
                .await
            {
                let up: Vec<_> = list
                    .into_iter()
                    .filter(|c| c.state == ChunkserverState::Up)
                    .collect();
                if up.len() >= n {
                    return Ok(up);
                }
            }
            if Instant::now() > deadline {
                bail!("{n} chunkservers not up within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until node `i` has applied at least `index`.
    pub async fn wait_applied(&self, i: usize, index: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(s) = self.meta_at(i).status().await {
                if s.last_applied.unwrap_or(0) >= index {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("node {} did not apply index {index} within 60 s", i + 1);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs the `cairn` CLI against this cluster.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        self.cli_env(args, &[])
    }

    /// Runs the `cairn` CLI with extra environment variables.
    pub fn cli_env(
        &self,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<std::process::Output> {
        std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(args)
            .envs(envs.iter().copied())
            .env("CAIRN_METADATA", self.meta_addrs.join(","))
            .env("CAIRN_SECRET", SECRET)
            .env("CAIRN_CONFIG", self.dir.path().join("no-config.json"))
            .output()
            .context("cannot run cairn")
    }
}

/// A small manifest whose ETag carries `tag` (for metadata-only tests).
pub fn fake_manifest(tag: &str) -> ObjectManifest {
    ObjectManifest {
        version: StripeId::random(),
        size: 0,
        etag: tag.to_string(),
        content_type: None,
        headers: Default::default(),
        user_meta: Default::default(),
        checksums: Default::default(),
        created_ms: 1,
        ec: EcParams::default(),
        shard_size: 1 << 20,
        stripes: Vec::new(),
        parts: Vec::new(),
        inline: None,
        tags: Default::default(),
    }
}

/// Creates bucket `name` through `meta`.
pub async fn create_bucket(meta: &MetaClient, name: &str) -> anyhow::Result<()> {
    let r = meta
        .write(&Command::CreateBucket {
            bucket: BucketInfo {
                name: name.into(),
                ec: EcParams::default(),
                shard_size: 1 << 20,
                created_ms: 1,
                owner: String::new(),
            },
        })
        .await?;
    match r {
        CommandResult::Ok | CommandResult::Err(MetaError::BucketExists(_)) => Ok(()),
        other => bail!("create bucket: {other:?}"),
    }
}

/// Every file under `dir` (recursively).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    crate::common::find_files(dir, &|_| true)
}

impl Opts {
    /// The fault tests' cluster: one metadata node, `chunkservers` in
    /// `zones` (chunkserver i in zone i % zones: 8 in 3 zones is 3/3/2), a
    /// down mark after 3 s (short, but not so short that a loaded test
    /// machine flaps healthy chunkservers) and repair tasks forgotten after
    /// 20 s.
    pub fn faults(chunkservers: usize, zones: usize) -> Opts {
        Opts {
            metas: 1,
            chunkservers,
            zones,
            ..Opts::default()
        }
        .meta_flag("--chunkserver-down-secs", "3")
        .meta_flag("--repair-task-timeout-secs", "20")
    }

    /// One more metadata-node flag (a later one wins).
    pub fn meta_flag(mut self, flag: &str, value: &str) -> Opts {
        self.meta_flags.push(flag.into());
        self.meta_flags.push(value.into());
        self
    }
}

impl Cluster {
    /// The index in `chunkservers` of the process registered as `id`.
    pub async fn proc_of(&self, id: ChunkserverId) -> anyhow::Result<usize> {
        let st = self.meta().cluster_status().await?;
        let addr = st
            .chunkservers
            .iter()
            .find(|x| x.id == id)
            .map(|x| x.addr.clone())
            .with_context(|| format!("no chunkserver {id}"))?;
        self.chunkservers
            .iter()
            .position(|p| p.addr_str() == addr)
            .with_context(|| format!("no process at {addr}"))
    }

    /// The chunkserver id of process `i`.
    pub async fn cs_id(&self, i: usize) -> anyhow::Result<ChunkserverId> {
        let addr = self.chunkservers[i].addr_str();
        let st = self.meta().cluster_status().await?;
        st.chunkservers
            .iter()
            .find(|x| x.addr == addr)
            .map(|x| x.id)
            .with_context(|| format!("no chunkserver at {addr}"))
    }

    /// Sends `sig` (e.g. "-STOP") to chunkserver process `i`.
    pub fn signal(&self, i: usize, sig: &str) -> anyhow::Result<()> {
        signal(&self.chunkservers[i], sig)
    }
}

/// Sends `sig` (e.g. "-STOP", "-CONT") to process `p`.
pub fn signal(p: &Proc, sig: &str) -> anyhow::Result<()> {
    let pid = p.pid().context("not running")?;
    let st = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()?;
    if !st.success() {
        bail!("kill {sig} {pid} failed");
    }
    Ok(())
}

/// The result of `cairn admin audit-placement --json`.
#[derive(Debug)]
pub struct Audit {
    /// The command exited 0.
    pub ok: bool,
    /// Every violation found.
    pub violations: Vec<serde_json::Value>,
    /// Stripes walked.
    pub stripes: u64,
}

/// Runs `cairn admin audit-placement --json`.
pub fn audit_placement(c: &Cluster) -> anyhow::Result<Audit> {
    let out = c.cli(&["--json", "admin", "audit-placement"])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        anyhow::anyhow!(
            "audit output {e}: {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok(Audit {
        ok: out.status.success(),
        violations: v["violations"].as_array().cloned().unwrap_or_default(),
        stripes: v["stripes"].as_u64().unwrap_or(0),
    })
}

/// The placement auditor finds no violation (no two shards of a stripe on
/// one chunkserver, no zone over the cap, no shard on an unknown server)
/// and exits 0. Returns the stripes it walked.
pub fn assert_placement_clean(c: &Cluster) -> anyhow::Result<u64> {
    let a = audit_placement(c)?;
    if !a.ok || !a.violations.is_empty() {
        bail!(
            "audit-placement: exit ok {}, violations {:?}",
            a.ok,
            a.violations
        );
    }
    Ok(a.stripes)
}

/// Polls `f` until it yields `Some`, or fails after `secs`.
pub async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = String::new();
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e.to_string(),
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {secs} s (last error: {last})");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The whole body of `bucket/key`.
pub async fn get_all(
    c: &Client,
    bucket: &str,
    key: &str,
) -> Result<Vec<u8>, cairn_client::ClientError> {
    use futures::StreamExt;
    let (_, mut s) = c.get(bucket, key, None).await?;
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}
