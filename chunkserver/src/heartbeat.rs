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
    ChunkserverCommand, ChunkserverId, HeartbeatRequest, InventoryEntry, InventoryPage,
    RepairReport, RepairTask, ShardId,
};
use cairn_metadata::worker::{BoxFuture, Worker, WorkerState};

use crate::repair::RepairExecutor;
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
    /// Runs the repair tasks of the replies.
    repair: Option<RepairExecutor>,
    /// Finished repairs, to report in the next heartbeat (kept until sent).
    repairs: Vec<RepairReport>,
    /// Wait before the next heartbeat (cut short by a finished repair).
    next_wait: Duration,
    /// The last heartbeat reported repairs: ask again soon for the tasks
    /// the leader plans next.
    reported_last: bool,
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
            repair: None,
            repairs: Vec::new(),
            next_wait: interval,
            reported_last: false,
        }
    }

    /// Executes the repair tasks of heartbeat replies with `exec` (without
    /// it they are reported failed at once).
    pub fn with_repair(mut self, exec: RepairExecutor) -> Self {
        self.repair = Some(exec);
        self
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
            repairs: self.take_repairs(),
            repairs_running: self.repair.as_ref().map_or(0, |r| r.accepted() as u32),
            scrub: Some(self.cs.scrub().progress()),
            data_dirs: served_identities(self.cs.store().disk_identities()),
        };
        let resp = self.meta.heartbeat(&req).await.map_err(|e| e.to_string())?;
        self.sent += 1;
        self.bad.clear();
        self.deleted.clear();
        self.repairs.clear();
        self.reported_last = !req.repairs.is_empty();
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
                ChunkserverCommand::Repair(task) => self.start_repair(task),
                ChunkserverCommand::SendInventory { round } => {
                    if let Err(e) = self.send_inventory(resp.id, round).await {
                        // The leader asks again next interval.
                        tracing::warn!(round, error = %e, "inventory not sent");
                    }
                }
                ChunkserverCommand::CheckShards { shards } => {
                    // Placed here by the metadata service but not stored:
                    // lost (a replaced or emptied disk). Reported as bad so
                    // the planner rebuilds them.
                    let absent: Vec<ShardId> = shards
                        .into_iter()
                        .filter(|s| !self.cs.store().contains(s))
                        .collect();
                    if !absent.is_empty() {
                        tracing::warn!(absent = absent.len(), "shards placed here are absent");
                        self.bad.extend(absent);
                    }
                }
            }
        }
        Ok(())
    }
}

impl Heartbeat {
    /// Finished repairs to report: the unsent ones plus the executor's new
    /// ones (kept until a heartbeat is answered).
    fn take_repairs(&mut self) -> Vec<RepairReport> {
        if let Some(r) = &self.repair {
            self.repairs.extend(r.take_reports());
        }
        self.repairs.clone()
    }

    /// Hands a repair task to the executor (never blocks the heartbeat).
    fn start_repair(&mut self, task: RepairTask) {
        match &self.repair {
            Some(r) => r.submit(task),
            None => self.repairs.push(RepairReport {
                task,
                ok: false,
                error: Some("this chunkserver runs no repair executor".into()),
                reused: false,
            }),
        }
    }

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
            if self.repair.is_none() {
                return Ok(WorkerState::Throttled(next));
            }
            self.next_wait = if self.reported_last {
                next.min(REPAIR_POLL)
            } else {
                next
            };
            Ok(WorkerState::Idle)
        })
    }

    /// A failed heartbeat is retried at the heartbeat interval (at least
    /// 1 s), never after the runner's 30 s maximum back-off: silent for
    /// the leader's suspect timeout (6 s by default) the chunkserver would be Suspect (no new
    /// shards) although it is up, and Down at 30 s (its shards rebuilt
    /// elsewhere), after a few fast failures such as a leader change.
    fn max_backoff(&self) -> Duration {
        self.interval.max(Duration::from_secs(1))
    }

    /// Sleeps the interval, but a finished repair is reported at once
    /// (after a short pause that lets others finishing with it join the
    /// same heartbeat): the leader commits it and can send the next task.
    fn wait_for_work(&mut self) -> BoxFuture<'_, ()> {
        let wait = self.next_wait;
        let repair = self.repair.clone();
        Box::pin(async move {
            let report = async {
                match repair {
                    Some(r) => {
                        r.report_ready().await;
                        tokio::time::sleep(REPORT_PAUSE).await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = report => {}
            }
        })
    }
}

/// Pause between a finished repair and the heartbeat that reports it.
const REPORT_PAUSE: Duration = Duration::from_millis(50);

/// After reporting repairs, the next heartbeat comes this soon: the leader
/// commits them and plans the next tasks in between.
const REPAIR_POLL: Duration = Duration::from_millis(250);

/// The data-dir identities a heartbeat reports. With every directory out
/// of service there is none to report, but an empty list means "not told"
/// to the metadata service; a placeholder that is never a real identity
/// makes the leader see the change and check (and so rebuild) every shard
/// placed here.
fn served_identities(ids: Vec<String>) -> Vec<String> {
    if ids.is_empty() {
        vec!["no-data-dir-in-service".to_string()]
    } else {
        ids
    }
}
