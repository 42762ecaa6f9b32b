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
        let dir = tempfile::tempdir()?;
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
        Proc::spawn_wrapped(
            &wrapper,
            &format!("meta{id}"),
            &dir,
            args,
            &[("CAIRN_SECRET", SECRET)],
        )
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
