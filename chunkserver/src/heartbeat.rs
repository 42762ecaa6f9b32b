//! The heartbeat worker: a chunkserver's only conversation with the
//! metadata service. Every interval it reports its address, zone, space and
//! the shards it found bad or deleted; the reply assigns its id on first
//! contact and carries commands (delete these shards), as in HDFS. The
//! metadata service never calls a chunkserver.
//!
//! Each heartbeat also carries the scrubber's progress and the bad shards it
//! (or a read) found. On `SendInventory` the worker posts the whole shard
//! list with ages, in pages of at most [`INVENTORY_PAGE`] shards, to the
//! metadata leader (orphan GC, `cairn_metadata::orphans`) before its next
//! heartbeat, so a repair it reports cannot overtake its inventory.
//!
//! # The id file (format version 1)
//! `<first data dir>/chunkserver-id`: the id in ASCII decimal, written
//! temp-file + fsync + rename + fsync-dir, so a restart keeps its identity.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn_metadata::client::MetaClient;
use cairn_metadata::types::{
    ChunkserverCommand, ChunkserverId, HeartbeatRequest, InventoryEntry, InventoryPage, ShardId,
};
use cairn_metadata::worker::{BoxFuture, Worker, WorkerState};

use crate::server::Chunkserver;
use crate::Error;

/// Shards per inventory page: the metadata service's limit
/// (`cairn_metadata::orphans::MAX_PAGE`).
pub const INVENTORY_PAGE: usize = cairn_metadata::orphans::MAX_PAGE;

/// Name of the id file in the first data directory.
pub const ID_FILE: &str = "chunkserver-id";

/// Reads the persisted chunkserver id, if any.
pub fn read_id(dir: &Path) -> Option<ChunkserverId> {
    std::fs::read_to_string(dir.join(ID_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|id| *id != 0)
}

/// Persists the chunkserver id durably.
pub fn write_id(dir: &Path, id: ChunkserverId) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{ID_FILE}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(id.to_string().as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(ID_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Sends heartbeats and executes the commands of the replies.
pub struct Heartbeat {
    cs: Arc<Chunkserver>,
    meta: MetaClient,
    addr: String,
    id_dir: PathBuf,
    id: Option<ChunkserverId>,
    interval: Duration,
    /// Shards deleted on command, to confirm in the next heartbeat.
    deleted: Vec<ShardId>,
    /// Shards found bad, to report in the next heartbeat (kept until sent).
    bad: Vec<ShardId>,
    sent: u64,
}

impl Heartbeat {
    /// A heartbeat worker for `cs`, which serves shards at `addr`.
    pub fn new(cs: Arc<Chunkserver>, meta: MetaClient, addr: String, interval: Duration) -> Self {
        let id_dir = cs
            .store()
            .data_dirs()
            .into_iter()
            .next()
            .unwrap_or_else(|| PathBuf::from("."));
        let id = read_id(&id_dir);
        Heartbeat {
            cs,
            meta,
            addr,
            id_dir,
            id,
            interval,
            deleted: Vec::new(),
            bad: Vec::new(),
            sent: 0,
        }
    }

    async fn beat(&mut self) -> Result<(), String> {
        let disks = self.cs.store().stats().await.map_err(|e| e.to_string())?;
        let capacity = disks.iter().map(|d| d.capacity).sum();
        let free = disks.iter().map(|d| d.free.saturating_sub(d.reserve)).sum();
        let used = disks.iter().map(|d| d.used_by_shards).sum();
        let shard_count = disks.iter().map(|d| d.shard_count).sum();
        let (events, _) = self.cs.store().take_corrupt_events();
        self.bad.extend(events.into_iter().map(|e| e.id));
        let req = HeartbeatRequest {
            id: self.id,
            addr: self.addr.clone(),
            zone: self.cs.zone().to_string(),
            capacity,
            free,
            used,
            shard_count,
            bad_shards: self.bad.clone(),
            deleted: self.deleted.clone(),
            repairs: Vec::new(),
            repairs_running: 0,
            scrub: Some(self.cs.scrub().progress()),
        };
        let resp = self.meta.heartbeat(&req).await.map_err(|e| e.to_string())?;
        self.sent += 1;
        self.bad.clear();
        self.deleted.clear();
        if self.id != Some(resp.id) {
            write_id(&self.id_dir, resp.id).map_err(|e| format!("cannot persist id: {e}"))?;
            tracing::info!(id = resp.id, "registered with the metadata service");
            self.id = Some(resp.id);
        }
        for cmd in resp.commands {
            match cmd {
                ChunkserverCommand::Delete { shards } => {
                    for s in shards {
                        match self.cs.store().delete(s).await {
                            Ok(()) | Err(Error::NoSuchShard { .. }) => self.deleted.push(s),
                            Err(e) => tracing::warn!(shard = %s, error = %e, "delete failed"),
                        }
                    }
                }
                // Executed by the repair worker (issue 6).
                ChunkserverCommand::Repair(_) => {}
                ChunkserverCommand::SendInventory { round } => {
                    if let Err(e) = self.send_inventory(resp.id, round).await {
                        // The leader asks again next interval.
                        tracing::warn!(round, error = %e, "inventory not sent");
                    }
                }
            }
        }
        Ok(())
    }
}

impl Heartbeat {
    /// Posts the whole inventory, page by page, to the metadata leader.
    async fn send_inventory(&mut self, id: ChunkserverId, round: u64) -> Result<(), String> {
        let mut after = None;
        let mut pages = 0u64;
        let mut queued = 0u64;
        loop {
            let list = self
                .cs
                .store()
                .list_with_age(after, INVENTORY_PAGE)
                .await
                .map_err(|e| e.to_string())?;
            let last = list.len() < INVENTORY_PAGE;
            after = list.last().map(|(s, _)| *s);
            let page = InventoryPage {
                id,
                round,
                shards: list
                    .into_iter()
                    .map(|(shard, age_ms)| InventoryEntry { shard, age_ms })
                    .collect(),
                last,
            };
            let reply = self
                .meta
                .inventory(&page)
                .await
                .map_err(|e| e.to_string())?;
            pages += 1;
            queued += reply.queued;
            if last {
                break;
            }
        }
        tracing::debug!(round, pages, queued, "inventory sent");
        Ok(())
    }
}

impl Worker for Heartbeat {
    fn name(&self) -> String {
        "heartbeat".into()
    }

    fn status(&self) -> String {
        format!(
            "id {} , {} heartbeats sent",
            self.id
                .map(|i| i.to_string())
                .unwrap_or_else(|| "unassigned".into()),
            self.sent
        )
    }

    fn work(&mut self) -> BoxFuture<'_, Result<WorkerState, String>> {
        Box::pin(async move {
            self.beat().await?;
            // Commands were executed: confirm them soon rather than a whole
            // interval later.
            let next = if self.deleted.is_empty() {
                self.interval
            } else {
                self.interval.min(Duration::from_millis(200))
            };
            Ok(WorkerState::Throttled(next))
        })
    }
}
