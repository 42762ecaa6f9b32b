//! What the leader's background jobs (the repair planner) need from a
//! metadata node, and nothing more: its id, whether it leads and in which
//! term, its local state machine, a way to submit a command through Raft,
//! and a clock.
//!
//! [`LeaderCtx`] is defined here, in a module that imports neither
//! `node` nor `planner`, so the dependency runs one way: `node` builds the
//! planner with itself as the context (`impl LeaderCtx for MetaNode`), and
//! `planner` only sees this trait. [`ApiError`] lives here for the same
//! reason (`crate::node::ApiError` re-exports it).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{Response, StatusCode};
use redb::ReadableDatabase;

use crate::net::{self, Body};
use crate::types::{Command, CommandResult, NodeId};
use crate::worker::BoxFuture;

/// Errors of the metadata API, mapped to HTTP in one place.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// This node is not the leader.
    #[error("not the leader")]
    NotLeader(Option<String>),
    /// No quorum or shutting down.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Bad request.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Storage failure.
    #[error("internal error: {0}")]
    Internal(String),
    /// This node's data dir is below its free-space reserve
    /// ([`crate::disk`]): the write is refused before it reaches the
    /// stores. 507 `StorageFull`.
    #[error("storage full: {0}")]
    StorageFull(String),
    /// This node cannot seal or open an S3 secret (no `--secrets-key-file`,
    /// another key than the one a secret was sealed under, a corrupt
    /// value): 500 `SecretsKey`, not retried.
    #[error("secrets key: {0}")]
    Secrets(String),
}

impl ApiError {
    /// The HTTP answer for this error.
    pub(crate) fn into_response(self) -> Response<Body> {
        match self {
            ApiError::NotLeader(l) => net::error_response_with_leader(
                StatusCode::MISDIRECTED_REQUEST,
                "NotLeader",
                "this node is not the leader",
                l,
            ),
            ApiError::Unavailable(m) => {
                net::error_response(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", &m)
            }
            ApiError::BadRequest(m) => {
                net::error_response(StatusCode::BAD_REQUEST, "BadRequest", &m)
            }
            ApiError::Internal(m) => {
                net::error_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal", &m)
            }
            ApiError::StorageFull(m) => {
                net::error_response(StatusCode::INSUFFICIENT_STORAGE, STORAGE_FULL_CODE, &m)
            }
            ApiError::Secrets(m) => {
                net::error_response(StatusCode::INTERNAL_SERVER_ERROR, "SecretsKey", &m)
            }
        }
    }
}

/// Error code of a 507 answer: a node's metadata disk is below its
/// reserve.
pub const STORAGE_FULL_CODE: &str = "StorageFull";

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before
/// it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The narrow view of a metadata node that leader-only jobs use.
pub trait LeaderCtx: Send + Sync + 'static {
    /// This node's Raft id.
    fn id(&self) -> NodeId;
    /// The current term when this node is the leader, else `None`. Leader
    /// memory (planned tasks) is tied to the term it was built in: a
    /// command submitted under an older term is fenced by Raft itself, and
    /// the planner drops its state when the term changes.
    fn leading_term(&self) -> Option<u64>;
    /// The local state machine (the planner reads it without a
    /// linearizable barrier: every change it proposes commits with a
    /// condition checked in `apply`).
    fn state_db(&self) -> Arc<redb::Database>;
    /// Proposes `cmd` through Raft and waits until it is applied.
    fn submit(&self, cmd: Command) -> BoxFuture<'_, Result<CommandResult, ApiError>>;
    /// Wall-clock milliseconds (the leader's clock).
    fn now_ms(&self) -> u64 {
        now_ms()
    }
}

/// Runs `f` on a read transaction of `db`, off the reactor.
pub async fn read_db<T: Send + 'static>(
    db: Arc<redb::Database>,
    f: impl FnOnce(&redb::ReadTransaction) -> Result<T, redb::Error> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || {
        let txn = db.begin_read().map_err(redb::Error::from)?;
        f(&txn)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(e.to_string()))
}
