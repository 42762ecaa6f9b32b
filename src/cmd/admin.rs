//! `cairn admin`: cluster health and membership.

use cairn_metadata::client::{Consistency, MetaClient, MetaClientOptions};
use cairn_metadata::node::{AddNodeRequest, RemoveNodeRequest};
use cairn_metadata::types::{
    BucketGrant, ChunkserverId, ChunkserverState, ClusterStatus, Command, CommandResult, NodeId,
    PlacementViolation, Query, QueryResult, RaftStatus, SecretString,
};
use serde::Serialize;

use anyhow::Context as _;

/// Wall-clock ms since the epoch (0 before it).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

use cairn_metadata::net::HttpClient;
use cairn_metadata::types::{ChunkserverInfo, ScrubControl, ScrubProgress};
use cairn_metadata::worker::WorkerInfo;

use crate::config::ConnArgs;

/// `cairn admin ...`
#[derive(clap::Subcommand, Debug)]
pub enum AdminCmd {
    /// Metadata nodes, leader and term; chunkservers with zone, state,
    /// capacity and scrub progress; objects, stripes by remaining
    /// redundancy, repair and GC queues.
    Status,
    /// Chunkserver life cycle: drain, remove.
    #[command(subcommand)]
    Chunkserver(ChunkserverCmd),
    /// Metadata membership changes.
    #[command(subcommand)]
    Metadata(MetadataCmd),
    /// S3 access keys.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Role tokens (least privilege between roles).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Chunkserver scrubbing: start a pass, pause, resume, or show
    /// progress; every chunkserver unless `--chunkserver`.
    Scrub(ScrubArgs),
    /// Background workers of every metadata node and chunkserver.
    Workers,
    /// Check every stripe of every object and uploaded part against the
    /// placement invariant (no two shards of a stripe on one chunkserver,
    /// at most the zone cap per zone, no shard on an unknown chunkserver);
    /// lists the violations and exits non-zero when there are any.
    AuditPlacement,
    /// Mean time to data loss per bucket (Markov model of its stripes on
    /// the live layout, the measured repair rate and an AFR), with its
    /// assumptions, the time to re-protect after losing a chunkserver and
    /// what another k+m or one more zone would do.
    Durability(super::durability::DurabilityArgs),
    /// Rebalancing: shards move from the fullest chunkservers to emptier
    /// ones (a new chunkserver starts empty) while their fullness differs
    /// by more than a threshold.
    #[command(subcommand)]
    Rebalance(super::rebalance::RebalanceCmd),
    /// The cluster CA (no cluster needed): `ca init --dir D`.
    #[command(subcommand)]
    Ca(super::ca::CaCmd),
    /// Certificates signed by the cluster CA (no cluster needed):
    /// `cert issue --ca-dir D --role gateway --name gw1 --san HOST --out-dir O`.
    #[command(subcommand)]
    Cert(super::ca::CertCmd),
    /// The audit log of admin actions, newest first: when, who (the role
    /// token's name), what, and the result.
    Audit {
        /// At most this many records.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// `cairn admin chunkserver ...`
#[derive(clap::Subcommand, Debug)]
pub enum ChunkserverCmd {
    /// Move every shard off a chunkserver (it takes no new shards); watch
    /// `cairn admin status` until it holds none, then `remove` it.
    Drain {
        /// Chunkserver id.
        id: ChunkserverId,
    },
    /// Forget a drained (or dead) chunkserver. Refused while any object or
    /// upload still places a shard on it.
    Remove {
        /// Chunkserver id.
        id: ChunkserverId,
    },
}

async fn chunkserver_cmd(meta: &MetaClient, cmd: ChunkserverCmd) -> anyhow::Result<()> {
    let (cmd, done) = match cmd {
        ChunkserverCmd::Drain { id } => (
            Command::SetChunkserverState {
                id,
                state: ChunkserverState::Draining,
            },
            format!("chunkserver {id} is draining"),
        ),
        ChunkserverCmd::Remove { id } => (
            Command::RemoveChunkserver { id },
            format!("chunkserver {id} removed"),
        ),
    };
    match meta.write(&cmd).await? {
        CommandResult::Err(e) => anyhow::bail!("{e}"),
        _ => {
            outln!("{done}");
            Ok(())
        }
    }
}

pub(crate) fn fmt_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn fmt_age(ms: Option<u64>) -> String {
    let Some(ms) = ms else {
        return "never".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let s = now.saturating_sub(ms) / 1000;
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}

async fn status_cmd(
    meta: &MetaClient,
    addrs: &[String],
    secret: &str,
    json: bool,
) -> anyhow::Result<()> {
    let mut nodes = Vec::new();
    for a in addrs {
        // Ask each node itself, not the leader: a dead node shows up.
        let one = MetaClient::new(
            vec![a.clone()],
            secret.to_string(),
            MetaClientOptions {
                retry_deadline: std::time::Duration::from_millis(500),
                ..Default::default()
            },
        );
        match one.status().await {
            Ok(s) => nodes.push(NodeView {
                addr: a.clone(),
                status: Some(s),
                error: None,
            }),
            Err(e) => nodes.push(NodeView {
                addr: a.clone(),
                status: None,
                error: Some(e.to_string()),
            }),
        }
    }
    let c: ClusterStatus = meta.cluster_status().await?;
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "metadata": nodes,
                "cluster": c,
            }))?
        );
        return Ok(());
    }
    outln!(
        "leader: node {} (term {})",
        c.raft
            .leader
            .map(|l| l.to_string())
            .unwrap_or_else(|| "none".into()),
        c.raft.term
    );
    outln!("metadata nodes:");
    for n in &nodes {
        match &n.status {
            Some(s) => outln!(
                "  {} id={} term={} leader={} applied={}",
                n.addr,
                s.id,
                s.term,
                s.leader
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "none".into()),
                s.last_applied
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "-".into())
            ),
            None => outln!("  {} DOWN ({})", n.addr, n.error.as_deref().unwrap_or("")),
        }
    }
    outln!("chunkservers:");
    for cs in &c.chunkservers {
        let scrub = match c.scrub.get(&cs.id) {
            Some(p) => format!(
                "scrub {:?} {}/{} last full pass {}",
                p.state,
                p.scanned_shards,
                p.total_shards,
                fmt_age(p.last_full_pass_ms)
            ),
            None => "scrub -".into(),
        };
        outln!(
            "  cs{} {} zone={} state={:?} capacity={} used={} free={} shards={} {scrub}",
            cs.id,
            cs.addr,
            cs.zone,
            cs.state,
            fmt_bytes(cs.capacity),
            fmt_bytes(cs.used),
            fmt_bytes(cs.free),
            cs.shard_count
        );
    }
    outln!("objects: {} ({})", c.objects, fmt_bytes(c.bytes));
    outln!("stripes by remaining redundancy (healthy shards - k; below 0 = lost):");
    for (r, n) in c.redundancy.iter().rev() {
        let note = if *r < 0 { "  LOST" } else { "" };
        outln!("  {r:>3}: {n}{note}");
    }
    outln!(
        "repair: {} waiting, {} in flight, {} done, {:.2}/s over the last minute (last plan {})",
        c.repair_queue,
        c.repairs_in_flight,
        c.repairs_done,
        c.repair_rate,
        fmt_age(c.last_plan_ms)
    );
    outln!(
        "gc: {} shards pending, {} orphans in their grace period",
        c.gc_pending,
        c.orphans_pending
    );
    outln!("{}", super::rebalance::summary(&c.rebalance));
    Ok(())
}

/// `cairn admin token ...`
#[derive(clap::Subcommand, Debug)]
pub enum TokenCmd {
    /// Issue a role token from the cluster secret: what a gateway,
    /// chunkserver or operator runs with instead of the secret (it opens
    /// only what its role needs; see ARCHITECTURE.md, "Threat model").
    Issue {
        /// admin, gateway or chunkserver.
        #[arg(long)]
        role: cairn_metadata::auth::Role,
        /// Who holds it (shown in logs and refusals): A-Z a-z 0-9 _ -.
        #[arg(long)]
        name: String,
        /// Write it to this file (created with mode 0600) instead of
        /// printing it.
        #[arg(long, value_name = "PATH")]
        out: Option<std::path::PathBuf>,
    },
}

fn issue_token_cmd(
    secret: &str,
    role: &cairn_metadata::auth::Role,
    name: &str,
    out: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use cairn_metadata::auth::{self, Role};
    anyhow::ensure!(
        *role != Role::Metadata,
        "metadata nodes run with the cluster secret itself, not a token"
    );
    anyhow::ensure!(
        !auth::is_token(secret),
        "issuing a token needs the cluster secret, not a role token"
    );
    let token = auth::issue_token(secret, *role, name)?;
    match out {
        Some(p) => {
            super::secret::write_private_file(p, token.as_bytes())?;
            outln!(
                "{role} token for {name} written to {} (mode 0600)",
                p.display()
            );
        }
        None => outln!("{token}"),
    }
    Ok(())
}

/// `cairn admin key ...`
#[derive(clap::Subcommand, Debug)]
pub enum KeyCmd {
    /// Create a key; prints its id and secret (the secret is shown only
    /// here).
    Create {
        /// A name for people.
        name: String,
        /// Full access to every bucket.
        #[arg(long)]
        admin: bool,
    },
    /// List keys (never their secrets): id, name, grants, created,
    /// expiry.
    List,
    /// Rotate a key: creates a new key (new id and secret, printed once,
    /// with the same name, admin flag and grants, and owner rights on the
    /// buckets the old key owns); the old key keeps working for the
    /// overlap, then is refused (403 InvalidAccessKeyId).
    Rotate {
        /// Key id.
        id: String,
        /// How long the old key keeps working, in seconds.
        #[arg(long, default_value_t = 86_400)]
        overlap_secs: u64,
    },
    /// Delete a key.
    Delete {
        /// Key id.
        id: String,
    },
    /// Grant a key rights on a bucket (replacing its earlier grant there).
    Allow {
        /// Key id.
        id: String,
        /// The bucket.
        #[arg(long)]
        bucket: String,
        /// Read objects and list.
        #[arg(long)]
        read: bool,
        /// Write and delete objects.
        #[arg(long)]
        write: bool,
        /// Everything, including deleting the bucket.
        #[arg(long)]
        owner: bool,
    },
}

async fn key_cmd(meta: &MetaClient, cmd: KeyCmd, json: bool) -> anyhow::Result<()> {
    let write = |cmd: Command| async move {
        match meta.write(&cmd).await? {
            CommandResult::Err(e) => anyhow::bail!("{e}"),
            _ => Ok(()),
        }
    };
    match cmd {
        KeyCmd::Create { name, admin } => {
            let key = crate::gateway::auth::generate_key(&name, admin);
            write(Command::PutAccessKey { key: key.clone() }).await?;
            if json {
                outln!(
                    "{}",
                    serde_json::json!({"id": key.id, "secret": key.secret, "name": key.name, "admin": key.admin})
                );
            } else {
                outln!("key id:     {}", key.id);
                outln!("secret key: {}", key.secret);
                outln!("(the secret is not shown again)");
            }
        }
        KeyCmd::List => {
            let keys = match meta
                .query(&Query::ListAccessKeys, Consistency::Linearizable)
                .await?
            {
                QueryResult::AccessKeys(k) => k,
                QueryResult::Err(e) => anyhow::bail!("{e}"),
                other => anyhow::bail!("unexpected reply {other:?}"),
            };
            if json {
                let v: Vec<_> = keys
                    .iter()
                    .map(|k| serde_json::json!({"id": k.id, "name": k.name, "admin": k.admin, "buckets": k.buckets, "created_ms": k.created_ms, "expires_ms": k.expires_ms}))
                    .collect();
                outln!("{}", serde_json::Value::Array(v));
            } else {
                for k in &keys {
                    let grants: Vec<String> = k
                        .buckets
                        .iter()
                        .map(|(b, g)| {
                            let mut r = String::new();
                            if g.read {
                                r.push('r');
                            }
                            if g.write {
                                r.push('w');
                            }
                            if g.owner {
                                r.push('o');
                            }
                            format!("{b}:{r}")
                        })
                        .collect();
                    let expiry = match k.expires_ms {
                        None => String::new(),
                        Some(e) if k.expired_at(now_ms()) => {
                            format!("  expired {}", crate::cmd::cli::fmt_time(e))
                        }
                        Some(e) => format!("  expires {}", crate::cmd::cli::fmt_time(e)),
                    };
                    outln!(
                        "{}  {}{}  {}  created {}{}",
                        k.id,
                        k.name,
                        if k.admin { " (admin)" } else { "" },
                        grants.join(","),
                        crate::cmd::cli::fmt_time(k.created_ms),
                        expiry
                    );
                }
            }
        }
        KeyCmd::Delete { id } => {
            write(Command::DeleteAccessKey { id }).await?;
        }
        KeyCmd::Allow {
            id,
            bucket,
            read,
            write: w,
            owner,
        } => {
            // The grant alone: the secret never leaves the metadata nodes.
            cairn_metadata::types::validate_bucket_name(&bucket)?;
            write(Command::SetAccessKeyGrant {
                id,
                bucket,
                grant: BucketGrant {
                    read,
                    write: w,
                    owner,
                },
            })
            .await?;
        }
        KeyCmd::Rotate { id, overlap_secs } => {
            let overlap_ms = overlap_secs
                .checked_mul(1000)
                .context("--overlap-secs is too large")?;
            // The new id and secret are made here and shown once, as by
            // `key create`; the metadata node seals the secret.
            let new = crate::gateway::auth::generate_key("", false);
            write(Command::RotateAccessKey {
                id: id.clone(),
                new_id: new.id.clone(),
                secret: SecretString(new.secret.clone()),
                overlap_ms,
            })
            .await?;
            let expires = now_ms().saturating_add(overlap_ms);
            if json {
                outln!(
                    "{}",
                    serde_json::json!({"id": new.id, "secret": new.secret, "replaces": id, "old_expires_ms": expires})
                );
            } else {
                outln!("key id:     {}", new.id);
                outln!("secret key: {}", new.secret);
                outln!("(the secret is not shown again)");
                outln!(
                    "{id} keeps working until {} (about; the leader's clock decides), then is refused",
                    crate::cmd::cli::fmt_time(expires)
                );
            }
        }
    }
    Ok(())
}

/// `cairn admin metadata ...`
#[derive(clap::Subcommand, Debug)]
pub enum MetadataCmd {
    /// Add a node (started with `cairn metadata --id N`): learner first, then
    /// voter.
    AddNode {
        /// Its Raft id.
        #[arg(long)]
        id: NodeId,
        /// Its address.
        #[arg(long)]
        addr: String,
    },
    /// Remove a node from the voters.
    RemoveNode {
        /// Its Raft id.
        #[arg(long)]
        id: NodeId,
    },
    /// Replace a stopped node's stores (corrupted or lost) by a fresh copy
    /// from the cluster: refuses while the node answers or if removing it
    /// would lose quorum; removes it from the voters; with --data (on the
    /// node's host) moves its stores to DIR/quarantine-<ms>/ and writes the
    /// rejoin marker, so its next start rejoins as a learner, then voter.
    Reseed {
        /// Its Raft id.
        #[arg(long)]
        id: NodeId,
        /// Its data dir (run on its host); without it the command prints
        /// what to do there.
        #[arg(long)]
        data: Option<std::path::PathBuf>,
    },
}

#[derive(Serialize)]
struct NodeView {
    addr: String,
    status: Option<RaftStatus>,
    error: Option<String>,
}

/// Runs an admin command.
pub async fn run(conn: &ConnArgs, cmd: AdminCmd, json: bool) -> anyhow::Result<()> {
    if let AdminCmd::Token(TokenCmd::Issue { role, name, out }) = &cmd {
        return issue_token_cmd(&conn.credential()?, role, name, out.as_deref());
    }
    // Offline: files only, no cluster address or secret needed.
    match &cmd {
        AdminCmd::Ca(c) => return super::ca::ca_cmd(c),
        AdminCmd::Cert(c) => return super::ca::cert_cmd(c),
        _ => {}
    }
    let (addrs, secret) = conn.resolve()?;
    let meta = MetaClient::new(addrs.clone(), secret.clone(), MetaClientOptions::default());
    match cmd {
        AdminCmd::Status => status_cmd(&meta, &addrs, &secret, json).await,
        AdminCmd::Chunkserver(c) => chunkserver_cmd(&meta, c).await,
        AdminCmd::Metadata(MetadataCmd::AddNode { id, addr }) => {
            let s: RaftStatus = meta
                .call("/v1/admin/add-node", &AddNodeRequest { id, addr })
                .await?;
            outln!("voters: {:?}", s.voters);
            Ok(())
        }
        AdminCmd::Metadata(MetadataCmd::RemoveNode { id }) => {
            let s: RaftStatus = meta
                .call("/v1/admin/remove-node", &RemoveNodeRequest { id })
                .await?;
            outln!("voters: {:?}", s.voters);
            Ok(())
        }
        AdminCmd::Metadata(MetadataCmd::Reseed { id, data }) => {
            super::reseed::run(&meta, &addrs, &secret, id, data.as_deref()).await
        }
        AdminCmd::Key(c) => key_cmd(&meta, c, json).await,
        AdminCmd::Token(TokenCmd::Issue { role, name, out }) => {
            issue_token_cmd(&secret, &role, &name, out.as_deref())
        }
        AdminCmd::Scrub(a) => scrub_cmd(&meta, &secret, a, json).await,
        AdminCmd::Workers => workers_cmd(&meta, &addrs, &secret, json).await,
        AdminCmd::AuditPlacement => audit_cmd(&meta, json).await,
        AdminCmd::Durability(a) => super::durability::run(&meta, &a, json).await,
        AdminCmd::Rebalance(c) => super::rebalance::run(&meta, c, json).await,
        AdminCmd::Audit { limit } => audit_log_cmd(&meta, limit, json).await,
        AdminCmd::Ca(_) | AdminCmd::Cert(_) => {
            anyhow::bail!("internal error: offline admin command reached the cluster path")
        }
    }
}

/// `cairn admin audit`.
async fn audit_log_cmd(meta: &MetaClient, limit: u32, json: bool) -> anyhow::Result<()> {
    let entries = match meta
        .query(&Query::AuditLog { limit }, Consistency::Linearizable)
        .await?
    {
        QueryResult::AuditLog(e) => e,
        QueryResult::Err(e) => anyhow::bail!("{e}"),
        other => anyhow::bail!("unexpected reply {other:?}"),
    };
    if json {
        outln!("{}", serde_json::to_string(&entries)?);
        return Ok(());
    }
    for e in &entries {
        outln!(
            "{}  {} ({})  {}  {}",
            crate::cmd::cli::fmt_time(e.at_ms),
            e.who,
            e.role,
            e.what,
            e.result
        );
    }
    Ok(())
}

/// What `cairn admin audit-placement --json` prints.
#[derive(Serialize)]
struct AuditReport {
    manifests: u64,
    stripes: u64,
    violations: Vec<PlacementViolation>,
}

async fn audit_cmd(meta: &MetaClient, json: bool) -> anyhow::Result<()> {
    let mut report = AuditReport {
        manifests: 0,
        stripes: 0,
        violations: Vec::new(),
    };
    let mut cursor = None;
    loop {
        let r = meta
            .query(
                &Query::AuditPlacement {
                    cursor: cursor.take(),
                    stripes: None,
                },
                Consistency::Linearizable,
            )
            .await?;
        let page = match r {
            QueryResult::Audit(p) => p,
            QueryResult::Err(e) => anyhow::bail!("{e}"),
            other => anyhow::bail!("unexpected reply {other:?}"),
        };
        report.manifests += page.manifests;
        report.stripes += page.stripes;
        report.violations.extend(page.violations);
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!(
            "{} manifests, {} stripes checked: {} placement violations",
            report.manifests,
            report.stripes,
            report.violations.len()
        );
        for v in &report.violations {
            let what = match (v.upload, v.part) {
                (Some(u), Some(p)) => {
                    format!("{}/{} upload {} part {p}", v.bucket, v.key, u.to_hex())
                }
                _ => format!("{}/{}", v.bucket, v.key),
            };
            outln!("  {what} stripe {}: {}", v.stripe, v.detail);
        }
    }
    if !report.violations.is_empty() {
        anyhow::bail!("{} placement violations", report.violations.len());
    }
    Ok(())
}

/// What `cairn admin scrub` does.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScrubAction {
    /// Start a new full pass now.
    Start,
    /// Pause (persisted across restarts).
    Pause,
    /// Resume where it paused.
    Resume,
    /// Show progress only.
    Status,
}

/// `cairn admin scrub ...`
#[derive(clap::Args, Debug)]
pub struct ScrubArgs {
    /// start, pause, resume or status.
    #[arg(value_enum)]
    pub action: ScrubAction,
    /// Only this chunkserver (default: every chunkserver).
    #[arg(long)]
    pub chunkserver: Option<cairn_metadata::types::ChunkserverId>,
    /// New throughput cap in MB/s (0 = none).
    #[arg(long)]
    pub max_mbps: Option<u64>,
    /// New tranquility factor.
    #[arg(long)]
    pub tranquility: Option<u32>,
}

/// Timeout of one admin call to a chunkserver or metadata node.
const ADMIN_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Serialize)]
struct ScrubView {
    id: cairn_metadata::types::ChunkserverId,
    addr: String,
    zone: String,
    progress: Option<ScrubProgress>,
    error: Option<String>,
}

async fn list_chunkservers(meta: &MetaClient) -> anyhow::Result<Vec<ChunkserverInfo>> {
    match meta
        .query(&Query::ListChunkservers, Consistency::Linearizable)
        .await?
    {
        QueryResult::Chunkservers(c) => Ok(c),
        QueryResult::Err(e) => anyhow::bail!("{e}"),
        other => anyhow::bail!("unexpected reply {other:?}"),
    }
}

/// Sends the scrub control to each chunkserver directly (the metadata
/// service never calls chunkservers), with the cluster secret.
async fn scrub_cmd(
    meta: &MetaClient,
    secret: &str,
    a: ScrubArgs,
    json: bool,
) -> anyhow::Result<()> {
    let mut targets = list_chunkservers(meta).await?;
    if let Some(id) = a.chunkserver {
        targets.retain(|c| c.id == id);
        anyhow::ensure!(!targets.is_empty(), "no chunkserver {id}");
    }
    let ctl = ScrubControl {
        action: match a.action {
            ScrubAction::Start => "start",
            ScrubAction::Pause => "pause",
            ScrubAction::Resume => "resume",
            ScrubAction::Status => "status",
        }
        .into(),
        max_mbps: a.max_mbps,
        tranquility: a.tranquility,
    };
    let http = HttpClient::default();
    // Chunkservers take the data-plane key, never the credential itself.
    let key = cairn_metadata::auth::data_key(secret);
    let calls = targets.iter().map(|c| {
        let url = format!("http://{}/v1/admin/scrub", c.addr);
        let (http, ctl, key) = (&http, &ctl, &key);
        async move {
            http.post_json::<_, ScrubProgress>(&url, key, ctl, ADMIN_CALL_TIMEOUT)
                .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let views: Vec<ScrubView> = targets
        .into_iter()
        .zip(results)
        .map(|(c, r)| {
            let (progress, error) = match r {
                Ok(p) => (Some(p), None),
                Err(e) => (None, Some(e.to_string())),
            };
            ScrubView {
                id: c.id,
                addr: c.addr,
                zone: c.zone,
                progress,
                error,
            }
        })
        .collect();
    if json {
        outln!("{}", serde_json::to_string_pretty(&views)?);
    } else {
        for v in &views {
            match &v.progress {
                Some(p) => outln!(
                    "cs{} {} {:?} {}/{} shards {} MB bad={} last-full-pass={} cap={} MB/s tranquility={}",
                    v.id,
                    v.addr,
                    p.state,
                    p.scanned_shards,
                    p.total_shards,
                    p.scanned_bytes / 1_000_000,
                    p.bad_found,
                    p.last_full_pass_ms
                        .map(|t| format!("{t} ms"))
                        .unwrap_or_else(|| "never".into()),
                    p.max_mbps,
                    p.tranquility
                ),
                None => outln!(
                    "cs{} {} UNREACHABLE ({})",
                    v.id,
                    v.addr,
                    v.error.as_deref().unwrap_or("")
                ),
            }
        }
    }
    let failed = views.iter().filter(|v| v.error.is_some()).count();
    if failed > 0 && (a.chunkserver.is_some() || failed == views.len()) {
        anyhow::bail!("{failed} chunkserver(s) did not answer");
    }
    Ok(())
}

#[derive(Serialize)]
struct WorkersView {
    role: &'static str,
    id: Option<u64>,
    addr: String,
    workers: Vec<WorkerInfo>,
    error: Option<String>,
}

/// Lists the workers of every metadata node and every chunkserver.
async fn workers_cmd(
    meta: &MetaClient,
    meta_addrs: &[String],
    secret: &str,
    json: bool,
) -> anyhow::Result<()> {
    let chunkservers = list_chunkservers(meta).await?;
    let mut targets: Vec<(&'static str, Option<u64>, String)> = meta_addrs
        .iter()
        .map(|a| ("metadata", None, a.clone()))
        .collect();
    targets.extend(
        chunkservers
            .into_iter()
            .map(|c| ("chunkserver", Some(c.id), c.addr)),
    );
    let http = HttpClient::default();
    let key = cairn_metadata::auth::data_key(secret);
    let calls = targets.iter().map(|(role, _, addr)| {
        let url = format!("http://{addr}/v1/admin/workers");
        let http = &http;
        // Metadata nodes verify the credential; chunkservers take the
        // data-plane key.
        let cred = if *role == "chunkserver" {
            key.as_str()
        } else {
            secret
        };
        async move {
            http.post_json::<_, Vec<WorkerInfo>>(&url, cred, &(), ADMIN_CALL_TIMEOUT)
                .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let views: Vec<WorkersView> = targets
        .into_iter()
        .zip(results)
        .map(|((role, id, addr), r)| {
            let (workers, error) = match r {
                Ok(w) => (w, None),
                Err(e) => (Vec::new(), Some(e.to_string())),
            };
            WorkersView {
                role,
                id,
                addr,
                workers,
                error,
            }
        })
        .collect();
    if json {
        outln!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(());
    }
    for v in &views {
        let who = match v.id {
            Some(id) => format!("{} cs{id} {}", v.role, v.addr),
            None => format!("{} {}", v.role, v.addr),
        };
        match &v.error {
            Some(e) => outln!("{who}: UNREACHABLE ({e})"),
            None => {
                outln!("{who}:");
                for w in &v.workers {
                    outln!(
                        "  {:<32} {:<10} errors={} {}",
                        w.name,
                        format!("{:?}", w.state).to_lowercase(),
                        w.errors,
                        w.status
                    );
                }
            }
        }
    }
    Ok(())
}
