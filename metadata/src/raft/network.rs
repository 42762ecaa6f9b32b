//! The Raft transport: postcard over HTTP POST, on the pooled [`HttpClient`].
//!
//! | RPC             | path             | request body                  | reply body (200)                                   |
//! |-----------------|------------------|-------------------------------|----------------------------------------------------|
//! | append entries  | `/raft/append`   | `AppendEntriesRequest`        | `Result<AppendEntriesResponse, RaftError>`         |
//! | vote            | `/raft/vote`     | `VoteRequest`                 | `Result<VoteResponse, RaftError>`                  |
//! | snapshot chunk  | `/raft/snapshot` | `InstallSnapshotRequest`      | `Result<InstallSnapshotResponse, RaftError<_, InstallSnapshotError>>` |
//!
//! Every body (request and 200 reply) is one byte of wire version
//! ([`codec::WIRE_VERSION`]) then postcard (see [`codec`]); the content type
//! is [`WIRE_CONTENT_TYPE`]. Every request carries the cluster secret in
//! [`SECRET_HEADER`]. The reply is always 200 with a serde `Result` once the
//! peer's Raft handled the request, so the client tells a remote Raft error
//! ([`RPCError::RemoteError`]) from a transport failure; any other status is
//! a transport-level failure. A request of another wire version (an older
//! build's JSON) is refused with 400 `RaftWireVersion`, whose message names
//! both versions; it is never decoded.
//!
//! Error mapping on the client side:
//! - connection refused / connect failure, or a peer that answers but
//!   cannot serve Raft (401, 404, 5xx..., and 507 `StorageFull` from a
//!   follower whose disk is below its reserve): [`RPCError::Unreachable`], so
//!   openraft backs off before retrying that peer;
//! - no reply within the RPC's hard TTL: [`RPCError::Timeout`];
//! - 413 on append: [`RPCError::PayloadTooLarge`] with half the entries as
//!   a hint, so openraft splits the batch;
//! - anything else (a reset mid-request, an undecodable reply):
//!   [`RPCError::Network`] (openraft retries on its next tick).
//!
//! Snapshot chunks are postcard byte sequences (one byte per byte plus a
//! length): openraft's default `snapshot_max_chunk_size` of 3 MiB stays well
//! under [`MAX_JSON_BODY`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{codec, Raft, TypeConfig};
use crate::net::{self, HttpClient, NetError, MAX_JSON_BODY, SECRET_HEADER};
use crate::types::NodeId;

/// Path of the append-entries RPC.
pub const APPEND_PATH: &str = "/raft/append";
/// Path of the vote RPC.
pub const VOTE_PATH: &str = "/raft/vote";
/// Path of the install-snapshot (chunk) RPC.
pub const SNAPSHOT_PATH: &str = "/raft/snapshot";
/// Content type of Raft RPC bodies.
pub const WIRE_CONTENT_TYPE: &str = "application/x-cairn-raft";
/// Prefix of every Raft RPC path: the server routes it to [`handle_raft_rpc`].
pub const RAFT_PATH_PREFIX: &str = "/raft/";

/// Builds one [`NetworkConnection`] per target node for openraft.
#[derive(Clone)]
pub struct NetworkFactory {
    id: NodeId,
    client: HttpClient,
    secret: Arc<str>,
}

impl fmt::Debug for NetworkFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("NetworkFactory")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl NetworkFactory {
    /// A factory for node `id` (named in timeout errors), sending through
    /// `client` with the cluster `secret`.
    pub fn new(id: NodeId, client: HttpClient, secret: impl Into<Arc<str>>) -> Self {
        NetworkFactory {
            id,
            client,
            secret: secret.into(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = NetworkConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> NetworkConnection {
        NetworkConnection {
            id: self.id,
            target,
            node: node.clone(),
            client: self.client.clone(),
            secret: self.secret.clone(),
        }
    }
}

/// openraft's client for one target node. Connects lazily: creating it
/// never fails, sending does.
pub struct NetworkConnection {
    id: NodeId,
    target: NodeId,
    node: BasicNode,
    client: HttpClient,
    secret: Arc<str>,
}

impl fmt::Debug for NetworkConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkConnection")
            .field("id", &self.id)
            .field("target", &self.target)
            .field("addr", &self.node.addr)
            .finish_non_exhaustive()
    }
}

/// A transport failure with a message, as the source of openraft's
/// `Unreachable` / `NetworkError`.
#[derive(Debug)]
struct TransportError(String);

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TransportError {}

/// How an exchange failed below Raft.
enum Failure {
    Unreachable(String),
    Network(String),
    Timeout,
    TooLarge,
    /// An append of several entries encoded to this many bytes, over
    /// [`APPEND_BYTES_BUDGET`]: not sent.
    OverBudget(usize),
}

/// Most bytes one append of several entries may carry. openraft bounds an
/// append RPC by the heartbeat interval (200 ms by default), and it caps
/// payloads by entry count only (300): 300 group-commit entries of up to
/// 4 MiB each could never be sent, appended and fsynced in time, so a
/// follower or a new learner far behind would time out forever and never
/// catch up. Bigger appends are refused before sending with a
/// `PayloadTooLarge` hint scaled to this budget (openraft then sends fewer
/// entries); one entry always goes alone, whatever its size.
pub const APPEND_BYTES_BUDGET: usize = 4 << 20;

impl NetworkConnection {
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.node.addr, path)
    }

    /// POSTs `req` as postcard to `path` and decodes the serde `Result` reply;
    /// the whole exchange must finish within `ttl`.
    async fn exchange<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        ttl: Duration,
        budget: Option<usize>,
    ) -> Result<Result<Resp, RaftError<NodeId, E>>, Failure>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = codec::encode_wire(req)
            .map_err(|e| Failure::Network(format!("cannot encode request: {e}")))?;
        if budget.is_some_and(|b| body.len() > b) {
            return Err(Failure::OverBudget(body.len()));
        }
        let http_req = Request::post(self.url(path))
            .header(http::header::CONTENT_TYPE, WIRE_CONTENT_TYPE)
            .header(SECRET_HEADER, &*self.secret)
            .body(net::full(body))
            .map_err(|e| {
                Failure::Unreachable(format!("bad request for {}: {e}", self.node.addr))
            })?;
        let fut = async {
            let resp = self.client.send(http_req, ttl).await.map_err(|e| match e {
                NetError::Timeout => Failure::Timeout,
                NetError::Connect(msg) => Failure::Unreachable(msg),
                other => Failure::Network(other.to_string()),
            })?;
            let status = resp.status();
            let bytes = net::read_body(resp.into_body(), MAX_JSON_BODY)
                .await
                .map_err(|e| Failure::Network(format!("reading reply: {e}")))?;
            Ok((status, bytes))
        };
        let (status, bytes) = match tokio::time::timeout(ttl, fut).await {
            Ok(r) => r?,
            Err(_) => return Err(Failure::Timeout),
        };
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return Err(Failure::TooLarge);
        }
        if status != StatusCode::OK {
            return Err(Failure::Unreachable(format!(
                "{} answered {status}: {}",
                self.node.addr,
                String::from_utf8_lossy(&bytes[..bytes.len().min(512)])
            )));
        }
        codec::decode_wire(&bytes).map_err(|e| {
            Failure::Network(format!("cannot decode reply of {}: {e}", self.node.addr))
        })
    }

    /// Maps an exchange's outcome to openraft's error type (whose size
    /// openraft's trait dictates).
    #[allow(clippy::result_large_err)]
    fn finish<Resp, E>(
        &self,
        action: RPCTypes,
        ttl: Duration,
        entries: usize,
        r: Result<Result<Resp, RaftError<NodeId, E>>, Failure>,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        E: std::error::Error,
    {
        match r {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                remote,
            ))),
            Err(Failure::Timeout) => Err(RPCError::Timeout(Timeout {
                action,
                id: self.id,
                target: self.target,
                timeout: ttl,
            })),
            Err(Failure::OverBudget(len)) => Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(budget_hint(entries, len)),
            )),
            Err(Failure::TooLarge) if action == RPCTypes::AppendEntries => {
                Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint((entries as u64 / 2).max(1)),
                ))
            }
            Err(Failure::TooLarge) => Err(RPCError::Network(NetworkError::new(&TransportError(
                format!(
                    "{} refused the {action} request as too large",
                    self.node.addr
                ),
            )))),
            Err(Failure::Unreachable(msg)) => Err(RPCError::Unreachable(Unreachable::new(
                &TransportError(msg),
            ))),
            Err(Failure::Network(msg)) => {
                Err(RPCError::Network(NetworkError::new(&TransportError(msg))))
            }
        }
    }
}

impl RaftNetwork<TypeConfig> for NetworkConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let ttl = option.hard_ttl();
        let n = rpc.entries.len();
        let budget = (n > 1).then_some(APPEND_BYTES_BUDGET);
        let r = self.exchange(APPEND_PATH, &rpc, ttl, budget).await;
        self.finish(RPCTypes::AppendEntries, ttl, n, r)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let ttl = option.hard_ttl();
        let r = self.exchange(SNAPSHOT_PATH, &rpc, ttl, None).await;
        self.finish(RPCTypes::InstallSnapshot, ttl, 0, r)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let ttl = option.hard_ttl();
        let r = self.exchange(VOTE_PATH, &rpc, ttl, None).await;
        self.finish(RPCTypes::Vote, ttl, 0, r)
    }
}

/// How many of `entries` entries, which encoded to `len` bytes, fit in
/// [`APPEND_BYTES_BUDGET`]: at least 1, fewer than `entries`.
pub(crate) fn budget_hint(entries: usize, len: usize) -> u64 {
    let fit = (entries as u128 * APPEND_BYTES_BUDGET as u128 / len.max(1) as u128) as u64;
    fit.clamp(1, (entries as u64).saturating_sub(1).max(1))
}

/// Serves one Raft RPC: decodes `body` by `path` ([`APPEND_PATH`],
/// [`VOTE_PATH`], [`SNAPSHOT_PATH`]), hands it to `raft`, and replies 200
/// with the postcard `Result` of the call. A body of another wire version
/// is 400 `RaftWireVersion`, an undecodable one 400 `BadRequest`, an
/// unknown path 404. With `disk_full` (the node's data dir is below its
/// reserve, see [`crate::disk`]) an append carrying entries and every
/// snapshot chunk are refused with 507 `StorageFull` before Raft sees
/// them: the sender maps that to `Unreachable` and retries after its
/// backoff; empty appends (heartbeats) and votes are still served, and a
/// refused append is served as a heartbeat first (its answer dropped). The caller has already checked the cluster secret and bounded
/// the body (e.g. with [`net::read_body`] and [`MAX_JSON_BODY`]).
pub async fn handle_raft_rpc(
    raft: &Raft,
    path: &str,
    body: Bytes,
    disk_full: Option<String>,
) -> Response<net::Body> {
    // A peer of the previous version gets its reply in its version.
    let v = match body.first() {
        Some(&codec::WIRE_VERSION_V2) => codec::WIRE_VERSION_V2,
        _ => codec::WIRE_VERSION,
    };
    let refuse = |m: String| {
        net::error_response(
            StatusCode::INSUFFICIENT_STORAGE,
            crate::leader::STORAGE_FULL_CODE,
            &m,
        )
    };
    match path {
        APPEND_PATH => match decode::<AppendEntriesRequest<TypeConfig>>(&body) {
            Ok(mut req) => match disk_full {
                Some(m) if !req.entries.is_empty() => {
                    // While entries wait, openraft sends no separate
                    // heartbeat: serve this one as a heartbeat (same vote,
                    // previous log id and commit index, no entries), so
                    // this node keeps its leader and calls no elections.
                    // Its answer is dropped: the leader sees only the 507
                    // and never counts the entries as held here.
                    req.entries.clear();
                    let _ = raft.append_entries(req).await;
                    refuse(m)
                }
                _ => wire_response(v, &raft.append_entries(req).await),
            },
            Err(resp) => resp,
        },
        VOTE_PATH => match decode::<VoteRequest<NodeId>>(&body) {
            Ok(req) => wire_response(v, &raft.vote(req).await),
            Err(resp) => resp,
        },
        SNAPSHOT_PATH => match (
            disk_full,
            decode::<InstallSnapshotRequest<TypeConfig>>(&body),
        ) {
            (Some(m), Ok(_)) => refuse(m),
            (None, Ok(req)) => wire_response(v, &raft.install_snapshot(req).await),
            (_, Err(resp)) => resp,
        },
        other => net::error_response(
            StatusCode::NOT_FOUND,
            "NoSuchRaftRpc",
            &format!("no Raft RPC at {other}"),
        ),
    }
}

#[allow(clippy::result_large_err)]
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response<net::Body>> {
    codec::decode_wire(body).map_err(|e| {
        let code = match e {
            codec::WireError::Version { .. } => "RaftWireVersion",
            _ => "BadRequest",
        };
        net::error_response(StatusCode::BAD_REQUEST, code, &e.to_string())
    })
}

/// A 200 reply carrying `value` in the wire encoding of `version`.
fn wire_response<T: Serialize>(version: u8, value: &T) -> Response<net::Body> {
    match codec::encode_wire_as(version, value) {
        Ok(body) => {
            let mut resp = Response::new(net::full(body));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(WIRE_CONTENT_TYPE),
            );
            resp
        }
        Err(e) => net::error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &format!("cannot encode Raft reply: {e}"),
        ),
    }
}
