//! `cairn admin`: cluster health and membership.

use cairn_metadata::client::{Consistency, MetaClient, MetaClientOptions};
use cairn_metadata::node::{AddNodeRequest, RemoveNodeRequest};
use cairn_metadata::types::{NodeId, Query, QueryResult, RaftStatus};
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
    }
}
