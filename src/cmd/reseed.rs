//! `cairn admin metadata reseed --id N [--data DIR]`: replace a metadata
//! node's stores (corrupted, or lost) by a fresh copy from the cluster.
//!
//! Steps, each refusing when it is not safe:
//! 1. node N must not answer its status endpoint (a live node is never
//!    reseeded: stop it first);
//! 2. the voters without N must still have a live majority among them,
//!    else removing N would lose quorum;
//! 3. the leader removes N from the voters (`/v1/admin/remove-node`);
//! 4. with `--data DIR` (run on N's host): N's store files move to
//!    `DIR/quarantine-<ms>/` (kept for inspection, never deleted) and the
//!    rejoin marker `DIR/rejoin.json` is written. Without `--data` the
//!    command prints the two steps for the operator to do there.
//!
//! The next `cairn metadata --id N --data DIR` finds the marker, starts
//! from empty stores, and asks the leader to add it back (learner, catch up
//! by log or snapshot, then voter), as `--join` does; the marker is removed
//! once it is a voter again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use cairn_metadata::client::{MetaClient, MetaClientOptions};
use cairn_metadata::node::RemoveNodeRequest;
use cairn_metadata::types::{NodeId, RaftStatus};
use serde::{Deserialize, Serialize};

/// Name of the rejoin marker in a metadata data dir.
pub const MARKER: &str = "rejoin.json";

/// Files of a metadata data dir that a reseed moves aside (the Raft log,
/// the state machine and the snapshot; temp files of an interrupted
/// snapshot are dropped at start anyway).
const STORE_FILES: &[&str] = &["raft-log.redb", "raft-sm.redb", "raft-snapshot.snap"];

/// The rejoin marker: written by a reseed, read by the node's next start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rejoin {
    /// The node's Raft id (a start with another `--id` refuses the dir).
    pub id: NodeId,
    /// Addresses of the remaining voters, to ask for re-admission.
    pub peers: Vec<String>,
    /// The node's address as the cluster knew it.
    pub addr: String,
}

/// Reads `dir/rejoin.json`, if there is one.
pub fn read_marker(dir: &Path) -> anyhow::Result<Option<Rejoin>> {
    let p = dir.join(MARKER);
    match std::fs::read(&p) {
        Ok(b) => {
            Ok(Some(serde_json::from_slice(&b).with_context(|| {
                format!("bad rejoin marker {}", p.display())
            })?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", p.display())),
    }
}

/// Removes the marker once the node is a voter again.
pub fn remove_marker(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(MARKER)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Moves the store files of `dir` into `dir/quarantine-<ms>/` and writes
/// the marker (durably: temp file, fsync, rename, fsync the dir). Returns
/// the quarantine dir.
pub fn quarantine(dir: &Path, marker: &Rejoin) -> anyhow::Result<PathBuf> {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let q = dir.join(format!("quarantine-{ms}"));
    std::fs::create_dir(&q).with_context(|| format!("create {}", q.display()))?;
    for f in STORE_FILES {
        let from = dir.join(f);
        if from.exists() {
            std::fs::rename(&from, q.join(f))
                .with_context(|| format!("move {} to {}", from.display(), q.display()))?;
        }
    }
    let tmp = dir.join(format!("{MARKER}.tmp"));
    {
        let mut file = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut file, &serde_json::to_vec_pretty(marker)?)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(MARKER))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(q)
}

/// A client pinned to `addr` that gives up quickly.
fn probe(addr: &str, secret: &str) -> MetaClient {
    MetaClient::new(
        vec![addr.to_string()],
        secret.to_string(),
        MetaClientOptions {
            request_timeout: Duration::from_secs(2),
            retry_deadline: Duration::from_secs(2),
            ..Default::default()
        },
    )
}

/// Runs the reseed of node `id` (see the module doc).
pub async fn run(
    meta: &MetaClient,
    addrs: &[String],
    secret: &str,
    id: NodeId,
    data: Option<&Path>,
) -> anyhow::Result<()> {
    // The leader's view (any node redirects there).
    let mut leader: Option<RaftStatus> = None;
    for a in addrs {
        if let Ok(s) = probe(a, secret).status().await {
            if s.leader == Some(s.id) {
                leader = Some(s);
                break;
            }
        }
    }
    let st = match leader {
        Some(s) => s,
        None => {
            let s = meta.status().await.context("no metadata node answers")?;
            let l = s.leader.context("the cluster has no leader")?;
            let addr = s
                .voters
                .get(&l)
                .context("the leader is not among the voters")?;
            probe(addr, secret).status().await?
        }
    };
    let addr = st
        .voters
        .get(&id)
        .or_else(|| st.learners.get(&id))
        .cloned()
        .with_context(|| format!("node {id} is not a member (voters {:?})", st.voters))?;
    if let Ok(s) = probe(&addr, secret).status().await {
        bail!(
            "node {id} at {addr} still answers (term {}, applied {:?}): stop it before reseeding",
            s.term,
            s.last_applied
        );
    }
    let rest: Vec<(NodeId, String)> = st
        .voters
        .iter()
        .filter(|(v, _)| **v != id)
        .map(|(v, a)| (*v, a.clone()))
        .collect();
    if rest.is_empty() {
        bail!("node {id} is the only voter: there is nothing to reseed it from");
    }
    let mut live = 0;
    for (_, a) in &rest {
        if probe(a, secret).status().await.is_ok() {
            live += 1;
        }
    }
    let need = rest.len() / 2 + 1;
    if live < need {
        bail!(
            "removing node {id} would lose quorum: {live} of the other {} voters answer, {need} needed",
            rest.len()
        );
    }
    if st.voters.contains_key(&id) {
        let s: RaftStatus = meta
            .call("/v1/admin/remove-node", &RemoveNodeRequest { id })
            .await
            .with_context(|| format!("remove node {id} from the voters"))?;
        outln!("node {id} removed; voters now {:?}", s.voters);
    }
    let marker = Rejoin {
        id,
        peers: rest.into_iter().map(|(_, a)| a).collect(),
        addr,
    };
    match data {
        Some(dir) => {
            let q = quarantine(dir, &marker)?;
            outln!(
                "stores moved to {}; start node {id} again with --data {}: it rejoins as a learner and becomes a voter once caught up",
                q.display(),
                dir.display()
            );
        }
        None => {
            outln!(
                "on node {id}'s host: run `cairn admin metadata reseed --id {id} --data DIR` \
                 again (it only moves the stores now), or move raft-log.redb, raft-sm.redb and \
                 raft-snapshot.snap out of DIR and write DIR/{MARKER}:\n{}",
                serde_json::to_string_pretty(&marker)?
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_moves_stores_and_writes_marker() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("raft-sm.redb"), b"sm").unwrap();
        std::fs::write(dir.path().join("raft-log.redb"), b"log").unwrap();
        let m = Rejoin {
            id: 2,
            peers: vec!["a:1".into()],
            addr: "b:2".into(),
        };
        let q = quarantine(dir.path(), &m).unwrap();
        assert!(!dir.path().join("raft-sm.redb").exists());
        assert_eq!(std::fs::read(q.join("raft-log.redb")).unwrap(), b"log");
        let back = read_marker(dir.path()).unwrap().unwrap();
        assert_eq!((back.id, back.peers), (2, vec!["a:1".to_string()]));
        remove_marker(dir.path()).unwrap();
        assert!(read_marker(dir.path()).unwrap().is_none());
    }
}
