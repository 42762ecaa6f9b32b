//! `cairn metadata`: run one node of the Raft-replicated metadata service.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use cairn_metadata::client::{MetaClient, MetaClientOptions};
use cairn_metadata::node::{MetaConfig, MetaNode};
use cairn_metadata::types::{NodeId, RaftStatus};

/// Flags of `cairn metadata`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// This node's Raft id (>= 1, unique in the cluster).
    #[arg(long)]
    pub id: NodeId,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub listen: SocketAddr,
    /// Address others reach this node at (default: the bound address).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Directory of the Raft log and state machine.
    #[arg(long)]
    pub data: PathBuf,
    /// The cluster secret (`--secret-file` or `--secret`).
    #[command(flatten)]
    pub secret: crate::cmd::secret::SecretArgs,
    /// Initialize a new cluster with these voters: `1=ADDR,2=ADDR,3=ADDR`
    /// (`self` may stand for this node's address).
    #[arg(long, requires = "init")]
    pub peers: Option<String>,
    /// Initialize the cluster (with --peers) if it is not yet initialized.
    #[arg(long)]
    pub init: bool,
    /// Join an existing cluster through any of its nodes: asks the leader to
    /// add this node as a learner, then as a voter.
    #[arg(long, conflicts_with = "init")]
    pub join: Option<String>,
    /// Write the bound address to this file once listening.
    #[arg(long)]
    pub addr_file: Option<PathBuf>,
    /// Raft heartbeat interval in ms.
    #[arg(long, default_value_t = 200)]
    pub heartbeat_ms: u64,
    /// Raft election timeout (min) in ms; max is twice this.
    #[arg(long, default_value_t = 1000)]
    pub election_ms: u64,
    /// Build a Raft snapshot after at least N log entries...
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_every: u64,
    /// ...and once the log appended since the last snapshot reaches this
    /// fraction of the snapshot's size (0: every N entries whatever the
    /// sizes).
    #[arg(long, default_value_t = cairn_metadata::node::DEFAULT_SNAPSHOT_LOG_RATIO)]
    pub snapshot_log_ratio: f64,
    /// Log entries kept behind a snapshot.
    #[arg(long, default_value_t = 1_000)]
    pub keep_logs: u64,
    /// Seconds of silence after which a chunkserver is marked down.
    #[arg(long, default_value_t = 30)]
    pub chunkserver_down_secs: u64,
    /// Repair tasks queued or running per target chunkserver.
    #[arg(long, default_value_t = 4)]
    pub repair_per_chunkserver: usize,
    /// Seconds after which a dispatched repair task that was not reported
    /// is forgotten and planned again.
    #[arg(long, default_value_t = 120)]
    pub repair_task_timeout_secs: u64,
    /// Orphan GC: a shard no manifest or upload names is deleted only once
    /// it is this many seconds old.
    #[arg(long, default_value_t = 3600)]
    pub orphan_grace_secs: u64,
    /// Orphan GC: ask each chunkserver for its inventory this often
    /// (seconds).
    #[arg(long, default_value_t = 3600)]
    pub inventory_every_secs: u64,
    /// GC minimum delay: a shard queued for deletion (overwrite, delete,
    /// repaired-away copy, orphan) is deleted only this many seconds after
    /// it was queued, so reads already streaming it finish. Given twice,
    /// the last wins.
    #[arg(long, default_value_t = 600, overrides_with = "gc_delay_secs")]
    pub gc_delay_secs: u64,
    /// Free space (MiB) kept on the data dir's file system: below it the
    /// node refuses writes (507 StorageFull; S3 writes get 503) instead of
    /// letting the Raft stores hit ENOSPC. Reads keep working; writes
    /// resume by themselves once space is freed.
    #[arg(long, default_value_t = cairn_metadata::disk::DEFAULT_RESERVE_MIB)]
    pub disk_reserve_mib: u64,
    /// File holding the key S3 secrets are sealed under at rest: 32
    /// random bytes as 64 hex digits (`openssl rand -hex 32`), mode 0600 or
    /// stricter, the same file on every metadata node, kept out of the
    /// data dir and its backups. Without it this node refuses to store or
    /// hand out S3 secrets. The environment variable CAIRN_SECRETS_KEY
    /// (the 64 hex digits themselves) may stand in for it.
    #[arg(long, env = "CAIRN_SECRETS_KEY_FILE", value_name = "PATH")]
    pub secrets_key_file: Option<PathBuf>,
}

/// Reads a `--secrets-key-file` (mode and size rules of a secret file).
pub fn load_secrets_key(
    path: &std::path::Path,
) -> anyhow::Result<cairn_metadata::secrets::SecretsKey> {
    let text = crate::cmd::secret::read_secret_file(path)
        .with_context(|| format!("--secrets-key-file {}", path.display()))?;
    cairn_metadata::secrets::SecretsKey::from_hex(&text)
        .with_context(|| format!("--secrets-key-file {}", path.display()))
}

/// Parses `1=ADDR,2=ADDR`.
pub fn parse_peers(
    s: &str,
    self_id: NodeId,
    self_addr: &str,
) -> anyhow::Result<BTreeMap<NodeId, String>> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .with_context(|| format!("bad peer {part:?}: expected ID=ADDR"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .with_context(|| format!("bad peer id in {part:?}"))?;
        let addr = if addr == "self" || id == self_id && addr.ends_with(":0") {
            self_addr.to_string()
        } else {
            addr.to_string()
        };
        out.insert(id, addr);
    }
    anyhow::ensure!(!out.is_empty(), "--peers lists no node");
    Ok(out)
}

/// Runs a metadata node until Ctrl-C / SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.id >= 1, "--id must be at least 1");
    let secret = args
        .secret
        .require_for(cairn_metadata::auth::Role::Metadata)?;
    // The key file, or the environment (Kubernetes Secrets as variables:
    // their volume files are group-readable under fsGroup).
    let from_env = std::env::var("CAIRN_SECRETS_KEY").ok();
    let secrets_key = match (&args.secrets_key_file, from_env) {
        (Some(p), None) => Some(load_secrets_key(p)?),
        (Some(_), Some(_)) => anyhow::bail!(
            "both --secrets-key-file (or CAIRN_SECRETS_KEY_FILE) and CAIRN_SECRETS_KEY are set: \
             pass one"
        ),
        (None, Some(hex)) => {
            Some(cairn_metadata::secrets::SecretsKey::from_hex(&hex).context("CAIRN_SECRETS_KEY")?)
        }
        (None, None) => {
            tracing::warn!(
                "no --secrets-key-file: this node refuses to store or hand out S3 secrets \
                 (they are kept only encrypted under that key)"
            );
            None
        }
    };
    // A reseed (`cairn admin metadata reseed`) left a marker: start from
    // empty stores and ask the cluster to take this node back.
    let rejoin = crate::cmd::reseed::read_marker(&args.data)?;
    if let Some(m) = &rejoin {
        anyhow::ensure!(
            m.id == args.id,
            "{} was reseeded for node {}, not --id {}",
            args.data.display(),
            m.id,
            args.id
        );
        tracing::info!(id = args.id, peers = ?m.peers, "reseeded: rejoining the cluster");
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let bound = listener.local_addr()?;
    let advertise = args.advertise.clone().unwrap_or_else(|| bound.to_string());
    let mut cfg = MetaConfig::new(
        args.id,
        args.data.clone(),
        advertise.clone(),
        secret.clone(),
    );
    cfg.heartbeat_interval = Duration::from_millis(args.heartbeat_ms);
    cfg.election_timeout_min = Duration::from_millis(args.election_ms);
    cfg.election_timeout_max = Duration::from_millis(args.election_ms * 2);
    cfg.snapshot_every = args.snapshot_every;
    anyhow::ensure!(
        args.snapshot_log_ratio.is_finite() && args.snapshot_log_ratio >= 0.0,
        "--snapshot-log-ratio must be a number >= 0"
    );
    cfg.snapshot_log_ratio = args.snapshot_log_ratio;
    cfg.keep_logs = args.keep_logs;
    cfg.down_after = Duration::from_secs(args.chunkserver_down_secs);
    cfg.suspect_after = cfg.down_after.min(Duration::from_secs(6));
    cfg.repair_per_chunkserver = args.repair_per_chunkserver.max(1);
    cfg.repair_task_timeout = Duration::from_secs(args.repair_task_timeout_secs.max(1));
    cfg.gc_delay = Duration::from_secs(args.gc_delay_secs);
    cfg.disk_reserve = args.disk_reserve_mib.saturating_mul(1 << 20);
    if let Some(k) = &secrets_key {
        tracing::info!(secrets_key = k.id(), "S3 secrets sealed under this key");
    }
    cfg.secrets_key = secrets_key;
    cfg.orphans = cairn_metadata::orphans::OrphanConfig {
        grace: Duration::from_secs(args.orphan_grace_secs),
        inventory_every: Duration::from_secs(args.inventory_every_secs.max(1)),
    };
    let node = match MetaNode::start(cfg).await {
        Ok(n) => n,
        Err(e) => {
            // A corrupted store names its file and the reseed command.
            tracing::error!(id = args.id, data = %args.data.display(), error = %e, "metadata node cannot start");
            return Err(e.into());
        }
    };
    tracing::info!(id = args.id, addr = %bound, "metadata node listening");
    if let Some(p) = &args.addr_file {
        cairn_metadata::net::write_addr_file(p, &bound)?;
    }
    if args.init && rejoin.is_some() {
        tracing::warn!("--init ignored: this node was reseeded and rejoins the cluster");
    } else if args.init {
        let peers = args.peers.as_deref().unwrap_or("self");
        let members = if peers == "self" {
            BTreeMap::from([(args.id, advertise.clone())])
        } else {
            parse_peers(peers, args.id, &advertise)?
        };
        node.initialize(members).await?;
    }
    let seeds = match (&rejoin, &args.join) {
        (Some(m), _) => Some(m.peers.clone()),
        (None, Some(seed)) => Some(vec![seed.clone()]),
        (None, None) => None,
    };
    if let Some(seeds) = seeds {
        let id = args.id;
        let addr = advertise.clone();
        let data = args.data.clone();
        let reseeded = rejoin.is_some();
        tokio::spawn(async move {
            let c = MetaClient::new(
                seeds,
                secret,
                MetaClientOptions {
                    retry_deadline: Duration::from_secs(120),
                    ..Default::default()
                },
            );
            let req = cairn_metadata::node::AddNodeRequest { id, addr };
            match c.call::<_, RaftStatus>("/v1/admin/add-node", &req).await {
                Ok(_) => {
                    tracing::info!("joined the cluster");
                    if reseeded {
                        if let Err(e) = crate::cmd::reseed::remove_marker(&data) {
                            tracing::warn!(error = %e, "cannot remove the rejoin marker");
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "could not join the cluster"),
            }
        });
    }
    node.serve(listener, crate::cmd::shutdown_signal()).await;
    Ok(())
}
