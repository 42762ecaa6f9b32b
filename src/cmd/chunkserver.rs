//! `cairn chunkserver`: stores, verifies and serves shards.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use cairn_chunkserver::client::ShardClient;
use cairn_chunkserver::heartbeat::Heartbeat;
use cairn_chunkserver::repair::RepairExecutor;
use cairn_chunkserver::scrub::{ScrubConfig, Scrubber};
use cairn_chunkserver::store::DEFAULT_MAX_SHARD_SIZE;
use cairn_chunkserver::{Chunkserver, ChunkserverConfig, Reserve, StoreConfig};
use cairn_metadata::client::{MetaClient, MetaClientOptions};
use cairn_metadata::worker::WorkerRunner;
use tokio::net::TcpListener;

/// Options of `cairn chunkserver`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Data directory, one per disk; repeat the flag for several disks.
    #[arg(long = "data", value_name = "DIR", required = true)]
    pub data: Vec<PathBuf>,
    /// Address to listen on; port 0 picks a free port (see --addr-file).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7100")]
    pub listen: String,
    /// Failure zone (rack, room...) of this chunkserver.
    #[arg(long, default_value = "default")]
    pub zone: String,
    /// The cluster secret every request must carry (`--secret-file` or
    /// `--secret`).
    #[command(flatten)]
    pub secret: crate::cmd::secret::SecretArgs,
    /// Write the bound address to this file once listening.
    #[arg(long, value_name = "PATH")]
    pub addr_file: Option<PathBuf>,
    /// Free space kept on each disk: a percentage (5%), a size (1GiB), or
    /// `auto` = the smaller of 5% and 1 GiB.
    #[arg(long, default_value = "auto")]
    pub reserve: Reserve,
    /// Largest shard payload accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_SHARD_SIZE)]
    pub max_shard_size: u64,
    /// Longest a request may take, in seconds.
    #[arg(long, default_value_t = 60)]
    pub request_timeout_secs: u64,
    /// Metadata service addresses (`host:port`, comma-separated). Without
    /// them the chunkserver runs standalone: no heartbeat, no commands.
    #[arg(
        long,
        value_name = "ADDRS",
        value_delimiter = ',',
        env = "CAIRN_METADATA"
    )]
    pub metadata: Vec<String>,
    /// Address announced to the metadata service; defaults to the bound
    /// address (set it when listening on 0.0.0.0).
    #[arg(long, value_name = "ADDR")]
    pub advertise: Option<String>,
    /// Interval between heartbeats, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub heartbeat_ms: u64,
    /// Repair tasks (shard rebuilds) run at once on this chunkserver.
    #[arg(long, default_value_t = 4)]
    pub repair_concurrency: usize,
    /// Scrubber throughput cap in MB/s (0 = none); changeable at runtime
    /// with `cairn admin scrub`.
    #[arg(long, default_value_t = cairn_chunkserver::scrub::DEFAULT_MAX_MBPS)]
    pub scrub_mbps: u64,
    /// Scrubber tranquility: after each shard, sleep this many times the
    /// time it took.
    #[arg(long, default_value_t = cairn_chunkserver::scrub::DEFAULT_TRANQUILITY)]
    pub scrub_tranquility: u32,
    /// Seconds between the starts of full scrub passes (default 7 days).
    #[arg(long, default_value_t = cairn_chunkserver::scrub::DEFAULT_PERIOD.as_secs())]
    pub scrub_period_secs: u64,
}

/// Runs a chunkserver until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let secret = args
        .secret
        .require_for(cairn_metadata::auth::Role::Chunkserver)?;
    let mut store = StoreConfig::new(args.data);
    store.reserve = args.reserve;
    store.max_shard_size = args.max_shard_size;
    let mut cfg = ChunkserverConfig::new(store, args.zone, secret.clone());
    cfg.request_timeout = Duration::from_secs(args.request_timeout_secs.max(1));
    cfg.scrub = ScrubConfig {
        period: Duration::from_secs(args.scrub_period_secs.max(1)),
        max_mbps: args.scrub_mbps,
        tranquility: args.scrub_tranquility,
    };

    // Composition root: built once; background workers get clones of it.
    let cs = Chunkserver::open(cfg)
        .await
        .context("cannot open the shard store")?;

    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    if let Some(path) = &args.addr_file {
        cairn_metadata::net::write_addr_file(path, &addr)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    tracing::info!(%addr, zone = cs.zone(), shards = cs.store().shard_count(), "chunkserver listening");

    let (workers, stop_workers) = WorkerRunner::new();
    cs.attach_workers(workers.clone());
    workers.spawn(Scrubber::new(cs.store().clone(), cs.scrub().clone()));
    if !args.metadata.is_empty() {
        let advertise = args.advertise.clone().unwrap_or_else(|| addr.to_string());
        if args.advertise.is_none() && addr.ip().is_unspecified() {
            tracing::warn!(%addr, "announcing an unspecified address; set --advertise");
        }
        let meta = MetaClient::new(
            args.metadata.clone(),
            secret.clone(),
            MetaClientOptions::default(),
        );
        let interval = Duration::from_millis(args.heartbeat_ms.max(50));
        let shards = ShardClient::new(cairn_metadata::net::HttpClient::default(), secret.clone())
            .with_max_shard_size(args.max_shard_size);
        let repair = RepairExecutor::new(cs.store().clone(), shards, args.repair_concurrency);
        cs.attach_repair(repair.clone());
        workers.spawn(Heartbeat::new(cs.clone(), meta, advertise, interval).with_repair(repair));
    } else {
        tracing::info!("no --metadata given: running standalone");
    }

    cs.serve(listener, crate::cmd::shutdown_signal()).await;
    stop_workers.stop(Duration::from_secs(5)).await;
    tracing::info!("chunkserver stopped");
    Ok(())
}
