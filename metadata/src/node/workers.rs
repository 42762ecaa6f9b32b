//! The node's own leader-only workers: the chunkserver failure detector and
//! the write-intent reaper.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::MetaNode;
use crate::leader::now_ms;
use crate::model;
use crate::types::*;
use crate::worker::{BoxFuture, Worker, WorkerState};

/// The leader's failure detector: marks silent chunkservers `Suspect`, then
/// `Down`, through the log.
pub(super) struct FailureDetector {
    pub(super) node: Arc<MetaNode>,
}

impl Worker for FailureDetector {
    fn name(&self) -> String {
        "chunkserver-failure-detector".into()
    }

    fn work(&mut self) -> BoxFuture<'_, Result<WorkerState, String>> {
        Box::pin(async move {
            let node = &self.node;
            let m = node.raft.metrics().borrow().clone();
            if m.current_leader != Some(node.cfg.id) {
                if let Ok(mut l) = node.liveness.lock() {
                    l.since = None;
                }
                return Ok(WorkerState::Throttled(Duration::from_millis(500)));
            }
            let now = Instant::now();
            let since = match node.liveness.lock() {
                Ok(mut l) => {
                    if l.since.is_none() || l.term != m.current_term {
                        l.since = Some(now);
                        l.term = m.current_term;
                        l.last_seen.clear();
                    }
                    l.since.unwrap_or(now)
                }
                Err(_) => now,
            };
            let all = node
                .read(model::chunkservers)
                .await
                .map_err(|e| e.to_string())?;
            for cs in all {
                let last = node
                    .liveness
                    .lock()
                    .ok()
                    .and_then(|l| l.last_seen.get(&cs.id).copied())
                    .unwrap_or(since);
                let silent = now.duration_since(last);
                let next = match cs.state {
                    ChunkserverState::Up | ChunkserverState::Suspect
                        if silent >= node.cfg.down_after =>
                    {
                        Some(ChunkserverState::Down)
                    }
                    ChunkserverState::Up if silent >= node.cfg.suspect_after => {
                        Some(ChunkserverState::Suspect)
                    }
                    _ => None,
                };
                if let Some(state) = next {
                    tracing::warn!(id = cs.id, ?state, ?silent, "chunkserver silent");
                    node.write(Command::SetChunkserverState { id: cs.id, state })
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            Ok(WorkerState::Throttled(Duration::from_millis(500)))
        })
    }
}

/// Write-intent rows the reaper removes per command: bounds the log entry's
/// work, however large the expired write was.
const REAP_BATCH: u32 = 10_000;

/// The leader's write-intent reaper: when some intent's lease has ended
/// (one range read of the expiry index), proposes `ExpireIntents`, which
/// drops the oldest expired intents and their shard rows, bounded per
/// command. Their uncommitted shards then become ordinary orphans.
pub(super) struct IntentReaper {
    pub(super) node: Arc<MetaNode>,
}

impl Worker for IntentReaper {
    fn name(&self) -> String {
        "write-intent-reaper".into()
    }

    fn work(&mut self) -> BoxFuture<'_, Result<WorkerState, String>> {
        Box::pin(async move {
            let node = &self.node;
            if !node.is_leader() {
                return Ok(WorkerState::Throttled(Duration::from_secs(1)));
            }
            let now = now_ms();
            let expired = node
                .read(move |txn| model::intents_expired(txn, now))
                .await
                .map_err(|e| e.to_string())?;
            if !expired {
                return Ok(WorkerState::Throttled(Duration::from_secs(1)));
            }
            tracing::info!("reaping expired write intents");
            node.write(Command::ExpireIntents { limit: REAP_BATCH })
                .await
                .map_err(|e| e.to_string())?;
            Ok(WorkerState::Busy)
        })
    }
}

/// Legacy secrets sealed per round.
const SEAL_BATCH: usize = 100;

/// The leader's key sealer: access keys whose secret is still plaintext
/// (rows written before secrets were sealed, in an older data dir) get it
/// replaced by the sealed form, through the log (`SealAccessKey`), as
/// soon as this node leads with a secrets key. Idle otherwise: checks
/// again every 30 s (a follower of an older build may still have
/// proposed plaintext during a rolling upgrade).
pub(super) struct KeySealer {
    pub(super) node: Arc<MetaNode>,
}

impl Worker for KeySealer {
    fn name(&self) -> String {
        "access-key-sealer".into()
    }

    fn work(&mut self) -> BoxFuture<'_, Result<WorkerState, String>> {
        Box::pin(async move {
            let node = &self.node;
            let idle = WorkerState::Throttled(Duration::from_secs(30));
            let Some(kek) = node.cfg.secrets_key.clone() else {
                return Ok(idle);
            };
            if !node.is_leader() {
                return Ok(WorkerState::Throttled(Duration::from_secs(1)));
            }
            let legacy = node
                .read(|txn| model::legacy_secrets(txn, SEAL_BATCH))
                .await
                .map_err(|e| e.to_string())?;
            if legacy.is_empty() {
                return Ok(idle);
            }
            let mut cmds = Vec::with_capacity(legacy.len());
            for k in &legacy {
                let sealed = kek.seal(&k.id, &k.secret).map_err(|e| e.to_string())?;
                cmds.push(Command::SealAccessKey {
                    id: k.id.clone(),
                    legacy_hash: model::legacy_secret_hash(&k.secret),
                    sealed: SecretString(sealed),
                });
            }
            tracing::info!(
                keys = cmds.len(),
                "sealing plaintext S3 secrets of an older data dir"
            );
            node.write(Command::Batch { cmds })
                .await
                .map_err(|e| e.to_string())?;
            Ok(WorkerState::Busy)
        })
    }
}
