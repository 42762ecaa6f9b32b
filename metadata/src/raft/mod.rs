//! The Raft layer of the metadata service: openraft's type configuration,
//! the durable log and state-machine stores (redb), and the HTTP transport.
//!
//! # Layout
//! - [`log_store`]: [`LogStore`], the Raft log, vote and log pointers in
//!   `<dir>/raft-log.redb`.
//! - [`state_machine`]: [`StateMachineStore`], the model tables plus the
//!   applied state in `<dir>/raft-sm.redb`.
//! - [`snapshot`]: the snapshot stream and files (current snapshot in
//!   `<dir>/raft-snapshot.snap`), written and loaded in bounded memory.
//! - [`codec`]: postcard encodings of log entries and RPC bodies, with
//!   their format bytes.
//! - [`network`]: [`NetworkFactory`] (client side, postcard over HTTP POST to
//!   `/raft/append`, `/raft/vote`, `/raft/snapshot`) and [`handle_raft_rpc`]
//!   (server side).
//!
//! # Wiring (one place, in this order)
//! ```text
//! let config = Arc::new(openraft::Config { .. }.validate()?);
//! let (log, sm) = raft::open_stores(&data_dir).await?;
//! let db = sm.db();                                  // read handle for queries
//! let net = raft::NetworkFactory::new(id, http_client, secret);
//! let raft = raft::Raft::new(id, config, net, log, sm).await?;
//! // HTTP server: after the secret check and a body limit,
//! // `/raft/*` -> raft::handle_raft_rpc(&raft, path, body, disk_full)
//! ```
//!
//! Both stores run every redb operation on tokio's blocking pool
//! (`spawn_blocking`), so an fsync never stalls the reactor.

use std::path::Path;

use openraft::{BasicNode, TokioRuntime};

use crate::types::{Command, CommandResult, NodeId};

pub mod codec;
pub mod log_store;
pub mod network;
pub mod snapshot;
pub mod state_machine;

#[cfg(test)]
mod test;

pub use log_store::LogStore;
pub use network::{handle_raft_rpc, NetworkConnection, NetworkFactory};
pub use state_machine::StateMachineStore;

openraft::declare_raft_types!(
    /// Cairn's openraft type configuration: the log carries [`Command`]s and
    /// applying one yields a [`CommandResult`]; snapshot data is a file
    /// (see [`snapshot`]), sent in chunks by openraft.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = TokioRuntime,
);

/// A running Raft node of the metadata service.
pub type Raft = openraft::Raft<TypeConfig>;

/// A log entry of Cairn's Raft log.
pub type Entry = openraft::Entry<TypeConfig>;

/// A log id (term, leader, index).
pub type LogId = openraft::LogId<NodeId>;

/// openraft's storage error, as every store method returns it.
pub type StorageError = openraft::StorageError<NodeId>;

/// Metadata of a snapshot.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, BasicNode>;

/// The last applied membership as the state machine stores it.
pub type StoredMembership = openraft::StoredMembership<NodeId, BasicNode>;

/// A snapshot: its metadata and its bytes.
pub type Snapshot = openraft::Snapshot<TypeConfig>;

/// Failures inside the Raft stores, before they are wrapped into openraft's
/// [`StorageError`] (which records what was being done).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed (I/O below it, or a corrupted file).
    #[error("database error: {0}")]
    Db(#[from] redb::Error),
    /// A file operation outside redb failed (snapshot files).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Encoding or decoding a stored JSON value failed.
    #[error("encoding error: {0}")]
    Codec(#[from] serde_json::Error),
    /// Stored or received data does not have the expected shape.
    #[error("corrupt {what}: {why}")]
    Corrupt {
        /// Which data (e.g. "snapshot", "log entry").
        what: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// The on-disk format is one this build cannot read.
    #[error("unsupported {what} format version {found} (this build reads {supported})")]
    Version {
        /// Which file or stream.
        what: &'static str,
        /// The version found.
        found: u64,
        /// The version this build reads and writes.
        supported: u64,
    },
    /// A blocking task panicked or was cancelled.
    #[error("storage task failed: {0}")]
    Task(String),
    /// A store file failed redb's integrity check on open (torn write,
    /// bit rot, truncation): the node must not serve from it.
    #[error(
        "metadata store {} is corrupted ({why}); this node must not serve from it. \
         Reseed it from the cluster: `cairn admin metadata reseed --id <this node's id> \
         --data {}` (see ARCHITECTURE.md, \"Reseeding a metadata node\"), then start it again",
        file.display(),
        file.parent().map(|p| p.display().to_string()).unwrap_or_default()
    )]
    CorruptFile {
        /// The redb file.
        file: std::path::PathBuf,
        /// redb's finding.
        why: String,
    },
}

/// Opens (or creates) the redb file at `path` with every page checksum
/// verified first (`Builder::set_check_integrity_on_open`): a file altered
/// outside redb is refused with [`StoreError::CorruptFile`] instead of
/// being trusted. The check reads the whole file once per start.
pub(crate) fn open_checked(
    mut builder: redb::Builder,
    path: &std::path::Path,
) -> Result<redb::Database, StoreError> {
    builder.set_check_integrity_on_open(true);
    builder.create(path).map_err(|e| match e {
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(why)) => {
            StoreError::CorruptFile {
                file: path.to_path_buf(),
                why,
            }
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            StoreError::CorruptFile {
                file: path.to_path_buf(),
                why: format!("truncated: {io}"),
            }
        }
        other => StoreError::Db(other.into()),
    })
}

macro_rules! from_redb {
    ($($t:ty),*) => {
        $(impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        })*
    };
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl StoreError {
    /// A [`StoreError::Corrupt`].
    pub(crate) fn corrupt(what: &'static str, why: impl Into<String>) -> Self {
        StoreError::Corrupt {
            what,
            why: why.into(),
        }
    }
}

/// Runs blocking storage work on tokio's blocking pool and waits for it.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(StoreError::Task(e.to_string())),
    }
}

/// Opens (creating if needed) both Raft stores under `dir`: the log in
/// `raft-log.redb`, the state machine in `raft-sm.redb` (plus its snapshot
/// file). The directory is created if missing.
pub async fn open_stores(dir: &Path) -> Result<(LogStore, StateMachineStore), StorageError> {
    let dir = dir.to_path_buf();
    let log_dir = dir.clone();
    let log = blocking(move || {
        std::fs::create_dir_all(&log_dir)?;
        LogStore::open(&log_dir)
    })
    .await
    .map_err(|e| openraft::StorageIOError::<NodeId>::read_logs(openraft::AnyError::new(&e)))?;
    let sm = blocking(move || StateMachineStore::open(&dir))
        .await
        .map_err(|e| {
            openraft::StorageIOError::<NodeId>::read_state_machine(openraft::AnyError::new(&e))
        })?;
    Ok((log, sm))
}
