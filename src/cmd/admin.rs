//! `cairn admin`: cluster health and membership.

use cairn_metadata::client::{Consistency, MetaClient, MetaClientOptions};
use cairn_metadata::node::{AddNodeRequest, RemoveNodeRequest};
use cairn_metadata::types::{
    BucketGrant, Command, CommandResult, NodeId, Query, QueryResult, RaftStatus,
};
use serde::Serialize;

use crate::config::ConnArgs;

/// `cairn admin ...`
#[derive(clap::Subcommand, Debug)]
pub enum AdminCmd {
    /// Metadata nodes, leader and term; chunkservers with zone, state and
    /// space; queues.
    Status,
    /// Metadata membership changes.
    #[command(subcommand)]
    Metadata(MetadataCmd),
    /// S3 access keys.
    #[command(subcommand)]
    Key(KeyCmd),
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
    /// List keys (never their secrets).
    List,
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
                println!(
                    "{}",
                    serde_json::json!({"id": key.id, "secret": key.secret, "name": key.name, "admin": key.admin})
                );
            } else {
                println!("key id:     {}", key.id);
                println!("secret key: {}", key.secret);
                println!("(the secret is not shown again)");
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
                    .map(|k| serde_json::json!({"id": k.id, "name": k.name, "admin": k.admin, "buckets": k.buckets, "created_ms": k.created_ms}))
                    .collect();
                println!("{}", serde_json::Value::Array(v));
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
                    println!(
                        "{}  {}{}  {}",
                        k.id,
                        k.name,
                        if k.admin { " (admin)" } else { "" },
                        grants.join(",")
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
            let mut key = match meta
                .query(
                    &Query::GetAccessKey { id: id.clone() },
                    Consistency::Linearizable,
                )
                .await?
            {
                QueryResult::AccessKey(k) => k,
                QueryResult::Err(e) => anyhow::bail!("{e}"),
                other => anyhow::bail!("unexpected reply {other:?}"),
            };
            cairn_metadata::types::validate_bucket_name(&bucket)?;
            key.buckets.insert(
                bucket,
                BucketGrant {
                    read,
                    write: w,
                    owner,
                },
            );
            write(Command::PutAccessKey { key }).await?;
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
}

#[derive(Serialize)]
struct NodeView {
    addr: String,
    status: Option<RaftStatus>,
    error: Option<String>,
}

/// Runs an admin command.
pub async fn run(conn: &ConnArgs, cmd: AdminCmd, json: bool) -> anyhow::Result<()> {
    let (addrs, secret) = conn.resolve()?;
    let meta = MetaClient::new(addrs.clone(), secret.clone(), MetaClientOptions::default());
    match cmd {
        AdminCmd::Status => {
            let mut nodes = Vec::new();
            for a in &addrs {
                // Ask each node itself, not the leader: a dead node shows up.
                let one = MetaClient::new(
                    vec![a.clone()],
                    secret.clone(),
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
            let chunkservers = match meta
                .query(&Query::ListChunkservers, Consistency::Linearizable)
                .await?
            {
                QueryResult::Chunkservers(c) => c,
                other => anyhow::bail!("unexpected reply {other:?}"),
            };
            let repairs = match meta
                .query(
                    &Query::RepairQueue { limit: 100_000 },
                    Consistency::Linearizable,
                )
                .await?
            {
                QueryResult::Repairs(r) => r.len(),
                _ => 0,
            };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "metadata": nodes,
                        "chunkservers": chunkservers,
                        "repair_queue": repairs,
                    }))?
                );
                return Ok(());
            }
            println!("metadata nodes:");
            for n in &nodes {
                match &n.status {
                    Some(s) => println!(
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
                    None => println!("  {} DOWN ({})", n.addr, n.error.as_deref().unwrap_or("")),
                }
            }
            println!("chunkservers:");
            for c in &chunkservers {
                println!(
                    "  cs{} {} zone={} state={:?} used={} free={} shards={}",
                    c.id, c.addr, c.zone, c.state, c.used, c.free, c.shard_count
                );
            }
            println!("repair queue: {repairs}");
            Ok(())
        }
        AdminCmd::Metadata(MetadataCmd::AddNode { id, addr }) => {
            let s: RaftStatus = meta
                .call("/v1/admin/add-node", &AddNodeRequest { id, addr })
                .await?;
            println!("voters: {:?}", s.voters);
            Ok(())
        }
        AdminCmd::Metadata(MetadataCmd::RemoveNode { id }) => {
            let s: RaftStatus = meta
                .call("/v1/admin/remove-node", &RemoveNodeRequest { id })
                .await?;
            println!("voters: {:?}", s.voters);
            Ok(())
        }
        AdminCmd::Key(c) => key_cmd(&meta, c, json).await,
    }
}
