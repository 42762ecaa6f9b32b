//! The leader's chunkserver-facing endpoints: heartbeats (liveness, bad
//! shards, finished repairs, GC and repair commands in the reply), orphan
//! inventories and the cluster status.

use std::collections::BTreeSet;
use std::time::Instant;

use super::MetaNode;
use crate::absent;
use crate::leader::{now_ms, ApiError};
use crate::model;
use crate::orphans::{self, InventoryReply};
use crate::planner;
use crate::types::*;

impl MetaNode {
    pub(super) async fn heartbeat(
        &self,
        hb: HeartbeatRequest,
    ) -> Result<HeartbeatResponse, ApiError> {
        if !self.is_leader() {
            return Err(ApiError::NotLeader(self.leader_addr()));
        }
        let now = Instant::now();
        let known = match hb.id {
            Some(id) => {
                self.read(move |txn| Ok(model::chunkservers(txn)?.into_iter().find(|c| c.id == id)))
                    .await?
            }
            None => None,
        };
        let Some(info) = known else {
            let r = self
                .write(Command::RegisterChunkserver {
                    addr: hb.addr.clone(),
                    zone: hb.zone.clone(),
                    capacity: hb.capacity,
                    free: hb.free,
                    now_ms: now_ms(),
                })
                .await?;
            let id = match r {
                CommandResult::Registered { id } => id,
                other => return Err(ApiError::Internal(format!("register: {other:?}"))),
            };
            tracing::info!(id, addr = %hb.addr, zone = %hb.zone, "chunkserver registered");
            if let Ok(mut l) = self.liveness.lock() {
                l.last_seen.insert(id, now);
                l.last_stats.insert(id, now);
            }
            return Ok(HeartbeatResponse {
                id,
                commands: Vec::new(),
            });
        };
        let id = info.id;
        let write_stats = match self.liveness.lock() {
            Ok(mut l) => {
                l.last_seen.insert(id, now);
                let due = l
                    .last_stats
                    .get(&id)
                    .is_none_or(|t| now.duration_since(*t) >= self.cfg.stats_every);
                let changed = info.addr != hb.addr || info.zone != hb.zone;
                if due || changed {
                    l.last_stats.insert(id, now);
                }
                due || changed
            }
            Err(_) => true,
        };
        let came_back = matches!(
            info.state,
            ChunkserverState::Suspect | ChunkserverState::Down
        );
        if came_back {
            tracing::info!(id, "chunkserver is back up");
            self.write(Command::SetChunkserverState {
                id,
                state: ChunkserverState::Up,
            })
            .await?;
        }
        // Stats are telemetry: while the disk is below its reserve they are
        // skipped, so heartbeats keep being answered (GC and repair
        // commands still ride on them).
        if write_stats && self.disk.check().is_ok() {
            self.write(Command::ChunkserverStats {
                id,
                addr: hb.addr.clone(),
                zone: hb.zone.clone(),
                capacity: hb.capacity,
                free: hb.free,
                used: hb.used,
                shard_count: hb.shard_count,
                now_ms: now_ms(),
            })
            .await?;
        }
        // Repairs before deletions: a repair this heartbeat reports finished
        // before (or while) the server deleted the same shard must meet the
        // GC row still in place, so `CommitRepair` refuses it; after
        // `GcDone` only a tombstone would tell (see `model::commit_repair`).
        self.repair_heartbeat(id, &hb).await?;
        if !hb.deleted.is_empty() {
            self.write(Command::GcDone {
                chunkserver: id,
                shards: hb.deleted.clone(),
            })
            .await?;
        }
        let done: BTreeSet<ShardId> = hb.deleted.iter().copied().collect();
        let due_before = now_ms().saturating_sub(self.cfg.gc_delay.as_millis() as u64);
        let pending = self
            .read(move |txn| model::gc_due(txn, id, model::GC_BATCH, due_before))
            .await?;
        // Never delete a copy an accepted repair task reads or writes.
        let busy = self.repairs.busy_shards();
        let pending: Vec<ShardId> = pending
            .into_iter()
            .filter(|s| !done.contains(s) && !busy.contains(s))
            .collect();
        let mut commands = Vec::new();
        if !pending.is_empty() {
            commands.push(ChunkserverCommand::Delete { shards: pending });
        }
        let round = self.inventory_due(id);
        if let Some(round) = round {
            commands.push(ChunkserverCommand::SendInventory { round });
        }
        let term = self.raft.metrics().borrow().current_term;
        // Named but absent (`crate::absent`): only chunkservers that report
        // their data-dir identities understand `CheckShards`.
        if !hb.data_dirs.is_empty() {
            if self
                .absent
                .observe(id, term, &hb.data_dirs, came_back || round.is_some())
            {
                tracing::info!(id, "checking that the chunkserver holds its shards");
            }
            if let Some(cursor) = self.absent.cursor(id, term) {
                let (page, done) = self
                    .read(move |txn| absent::placed_page(txn, id, cursor, absent::PAGE))
                    .await?;
                self.absent.advance(id, term, page.last().copied(), done);
                if !page.is_empty() {
                    commands.push(ChunkserverCommand::CheckShards { shards: page });
                }
            }
        }
        commands.extend(
            self.repairs
                .take_tasks(id, term, hb.repairs_running == 0 && hb.repairs.is_empty())
                .into_iter()
                .map(ChunkserverCommand::Repair),
        );
        Ok(HeartbeatResponse { id, commands })
    }

    /// The repair side of a heartbeat: record bad shards, commit finished
    /// repairs, keep the scrub progress.
    async fn repair_heartbeat(
        &self,
        id: ChunkserverId,
        hb: &HeartbeatRequest,
    ) -> Result<(), ApiError> {
        if !hb.bad_shards.is_empty() {
            tracing::warn!(
                id,
                bad = hb.bad_shards.len(),
                "chunkserver reports bad shards"
            );
            self.write(Command::ReportBadShards {
                chunkserver: id,
                shards: hb.bad_shards.clone(),
            })
            .await?;
            self.repairs.trigger();
        }
        if !hb.repairs.is_empty() {
            planner::handle_reports(self, &self.repairs, id, &hb.repairs).await?;
        }
        if let Some(p) = &hb.scrub {
            self.repairs.set_scrub(id, p.clone());
        }
        Ok(())
    }

    /// The leader's cluster health view.
    pub(super) async fn cluster_status(&self) -> Result<ClusterStatus, ApiError> {
        if !self.is_leader() {
            return Err(ApiError::NotLeader(self.leader_addr()));
        }
        let (chunkservers, gc) = self
            .read(|txn| Ok((model::chunkservers(txn)?, model::gc_len(txn)?)))
            .await?;
        let mut st = self.repairs.status(self.status(), chunkservers, gc);
        st.orphans_pending = self.orphans_pending();
        Ok(st)
    }

    /// The inventory round to ask chunkserver `id` for, when due.
    fn inventory_due(&self, id: ChunkserverId) -> Option<u64> {
        let term = self.raft.metrics().borrow().current_term;
        self.orphans.inventory_due(id, term)
    }

    /// Orphans found by inventory reconciliation that are still inside the
    /// grace period (for `ClusterStatus::orphans_pending`).
    pub fn orphans_pending(&self) -> u64 {
        self.orphans.pending()
    }

    /// Checks one inventory page (see [`crate::orphans`]): after the page
    /// arrived, confirm leadership (so every committed write is applied
    /// here), sort its entries on one read transaction, and queue the old
    /// unnamed ones for deletion through the log.
    pub(super) async fn inventory(&self, page: InventoryPage) -> Result<InventoryReply, ApiError> {
        if !self.is_leader() {
            return Err(ApiError::NotLeader(self.leader_addr()));
        }
        if page.shards.len() > orphans::MAX_PAGE {
            return Err(ApiError::BadRequest(format!(
                "an inventory page holds at most {} shards",
                orphans::MAX_PAGE
            )));
        }
        let id = page.id;
        let known = self
            .read(move |txn| Ok(model::chunkservers(txn)?.iter().any(|c| c.id == id)))
            .await?;
        if !known {
            return Err(ApiError::BadRequest(format!("unknown chunkserver {id}")));
        }
        // A chunkserver posting its inventory is alive, even if the pages
        // delay its next heartbeat.
        if let Ok(mut l) = self.liveness.lock() {
            l.last_seen.insert(id, Instant::now());
        }
        let _scan = self.orphans.scan_permit().await;
        self.linearize().await?;
        let grace_ms = self.orphans.config().grace.as_millis() as u64;
        let entries = page.shards.clone();
        let verdict = self
            .read(move |txn| orphans::check_page(txn, id, &entries, grace_ms))
            .await?;
        for chunk in verdict.orphans.chunks(model::GC_BATCH) {
            tracing::info!(
                chunkserver = id,
                orphans = chunk.len(),
                "queueing orphan shards for deletion"
            );
            match self
                .write(Command::QueueGc {
                    chunkserver: id,
                    shards: chunk.to_vec(),
                })
                .await?
            {
                CommandResult::Ok => {}
                other => return Err(ApiError::Internal(format!("queue gc: {other:?}"))),
            }
        }
        // Seen healthy again: a bad report or repair-queue item for a shard
        // this inventory lists is stale (a quarantined or absent shard is
        // never listed; one listed was stored with a matching BLAKE3, e.g.
        // rebuilt in place, or a read merely failed to reach it).
        let listed: Vec<ShardId> = page.shards.iter().map(|e| e.shard).collect();
        let stale = self
            .read(move |txn| model::stale_reports(txn, id, &listed))
            .await?;
        if !stale.is_empty() {
            tracing::info!(
                chunkserver = id,
                shards = stale.len(),
                "clearing stale bad reports"
            );
            self.write(Command::ClearBadShards {
                chunkserver: id,
                shards: stale,
            })
            .await?;
        }
        self.orphans.record(&page, verdict.pending);
        Ok(InventoryReply {
            queued: verdict.orphans.len() as u64,
            pending: verdict.pending,
        })
    }
}
