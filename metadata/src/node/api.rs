//! The node's HTTP API: routing, Raft status and membership, readiness and
//! `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;

use super::{AddNodeRequest, InitRequest, MetaNode, RemoveNodeRequest};
use crate::auth::{self, Endpoint};
use crate::leader::ApiError;
use crate::metrics::{self as ops, OpsEndpoint};
use crate::net::{self, Body};
use crate::raft;
use crate::types::*;

/// How long `/v1/admin/snapshot` waits for the build (a state of many
/// gigabytes takes minutes).
const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);

impl MetaNode {
    pub(super) fn status(&self) -> RaftStatus {
        let m = self.raft.metrics().borrow().clone();
        let mem = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = mem.voter_ids().collect();
        let mut v = BTreeMap::new();
        let mut l = BTreeMap::new();
        for (id, n) in mem.nodes() {
            if voters.contains(id) {
                v.insert(*id, n.addr.clone());
            } else {
                l.insert(*id, n.addr.clone());
            }
        }
        RaftStatus {
            id: self.cfg.id,
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|x| x.index),
            snapshot: m.snapshot.map(|x| x.index),
            purged: m.purged.map(|x| x.index),
            voters: v,
            learners: l,
            disk: self.disk_status(),
        }
    }

    /// Builds a snapshot of this node's state now and waits until it covers
    /// everything applied when asked (`cairn admin snapshot`): before a
    /// maintenance, and how `cairn bench meta-scale` times a build.
    async fn snapshot_now(&self) -> Result<(), ApiError> {
        let target = self
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index)
            .unwrap_or(0);
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| ApiError::Unavailable(format!("cannot trigger a snapshot: {e}")))?;
        self.raft
            .wait(Some(SNAPSHOT_WAIT))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= target),
                "snapshot built",
            )
            .await
            .map_err(|e| ApiError::Unavailable(format!("snapshot not built: {e}")))?;
        Ok(())
    }

    /// The data dir's space against its reserve (`None` if statvfs fails).
    pub(super) fn disk_status(&self) -> Option<DiskStatus> {
        let s = self.disk.space().ok()?;
        Some(DiskStatus {
            free: s.free,
            capacity: s.capacity,
            reserve: self.disk.reserve(),
            full: s.free < self.disk.reserve(),
        })
    }

    async fn add_node(&self, req: AddNodeRequest) -> Result<(), ApiError> {
        if !self.is_leader() {
            return Err(ApiError::NotLeader(self.leader_addr()));
        }
        let m = self.raft.metrics().borrow().clone();
        let mut voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        if voters.contains(&req.id) {
            return Ok(());
        }
        // Learner first: it catches up (by log or snapshot) before it
        // votes, then a joint-consensus change makes it a voter.
        self.raft
            .add_learner(req.id, BasicNode { addr: req.addr }, true)
            .await
            .map_err(map_write_err)?;
        voters.insert(req.id);
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(map_write_err)?;
        Ok(())
    }

    async fn remove_node(&self, req: RemoveNodeRequest) -> Result<(), ApiError> {
        if !self.is_leader() {
            return Err(ApiError::NotLeader(self.leader_addr()));
        }
        let m = self.raft.metrics().borrow().clone();
        let mut voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        if !voters.remove(&req.id) {
            return Ok(());
        }
        if voters.is_empty() {
            return Err(ApiError::BadRequest("cannot remove the last voter".into()));
        }
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(map_write_err)?;
        Ok(())
    }

    /// Readiness: this node knows a leader (it is one, or it follows one),
    /// so the requests it gets are answered or redirected.
    fn ready(&self) -> Result<(), String> {
        let m = self.raft.metrics().borrow().clone();
        if let Err(e) = &m.running_state {
            return Err(format!("raft stopped: {e}"));
        }
        match m.current_leader {
            Some(_) => Ok(()),
            None => Err(format!("no known leader (term {})", m.current_term)),
        }
    }

    /// Refreshes the scrape-time values and encodes the registry.
    async fn metrics_reply(&self) -> Response<Body> {
        let mm = &self.metrics;
        mm.process.refresh();
        let m = self.raft.metrics().borrow().clone();
        let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let last = m.last_log_index.unwrap_or(0);
        let applied = m.last_applied.map(|x| x.index).unwrap_or(0);
        let snap = m.snapshot.map(|x| x.index).unwrap_or(0);
        let purged = m.purged.map(|x| x.index).unwrap_or(0);
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        let leading = m.current_leader == Some(self.cfg.id);
        mm.term.set(i(m.current_term));
        mm.leader.set(i(m.current_leader.unwrap_or(0)));
        mm.is_leader.set(i64::from(leading));
        mm.last_log_index.set(i(last));
        mm.applied_index.set(i(applied));
        mm.snapshot_index.set(i(snap));
        mm.log_entries.set(i(last.saturating_sub(purged)));
        mm.entries_since_snapshot
            .set(i(applied.saturating_sub(snap)));
        mm.voters.set(voters.len() as i64);
        mm.set_disk(&self.disk.dir().display().to_string(), self.disk_status());
        if let (true, Some(rep)) = (leading, &m.replication) {
            // The quorum-th highest index held by the voters (the leader
            // holds its whole log).
            let mut held: Vec<u64> = voters
                .iter()
                .map(|v| {
                    if *v == self.cfg.id {
                        last
                    } else {
                        rep.get(v).copied().flatten().map(|l| l.index).unwrap_or(0)
                    }
                })
                .collect();
            held.sort_unstable_by(|a, b| b.cmp(a));
            if let Some(c) = held.get(held.len() / 2) {
                mm.commit_index.set(i(*c));
            }
        } else {
            mm.commit_index.set(0);
        }
        let st = if leading {
            self.cluster_status().await.ok()
        } else {
            None
        };
        mm.set_cluster(st.as_ref());
        ops::encode(&mm.registry)
    }

    pub(super) async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        match ops::ops_endpoint(&req) {
            Some(OpsEndpoint::Metrics) => return self.metrics_reply().await,
            Some(OpsEndpoint::Live) => return ops::live(),
            Some(OpsEndpoint::Ready) => return ops::ready(self.ready()),
            None => {}
        }
        if let Some(r) = crate::dashboard::serve(&req) {
            return r;
        }
        let (span, request_id) = net::request_span(req.headers());
        let work = net::with_request_id(request_id, self.handle_api(req));
        tracing::Instrument::instrument(work, span).await
    }

    async fn handle_api(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let caller = match req
            .headers()
            .get(net::SECRET_HEADER)
            .and_then(|v| self.authority.verify(v.as_bytes()))
        {
            Some(c) => c,
            None => return net::unauthorized(),
        };
        let role = caller.role;
        if req.method() != Method::POST {
            return net::error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "use POST",
            );
        }
        let path = req.uri().path().to_string();
        let endpoint = match path.as_str() {
            p if p.starts_with(raft::network::RAFT_PATH_PREFIX) => Endpoint::Raft,
            "/v1/write" => Endpoint::Write,
            "/v1/read" => Endpoint::Read,
            "/v1/heartbeat" | "/v1/inventory" => Endpoint::Chunkserver,
            "/v1/status" => Endpoint::Status,
            _ => Endpoint::Admin,
        };
        if !auth::allowed_endpoint(role, endpoint) {
            return forbidden(&caller, &path);
        }
        let stale = req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "stale=1" || p == "stale=true"));
        // A Raft append may carry a client write of the full body limit
        // plus its envelope: a follower must accept what the leader's own
        // API accepted, or replication would stall on that entry forever.
        let limit = if path.starts_with(raft::network::RAFT_PATH_PREFIX) {
            net::MAX_JSON_BODY + net::RAFT_ENVELOPE
        } else {
            net::MAX_JSON_BODY
        };
        let body = match net::read_body(req.into_body(), limit).await {
            Ok(b) => b,
            Err(net::NetError::TooLarge { limit }) => {
                return net::error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "TooLarge",
                    &format!("body over {limit} bytes"),
                )
            }
            Err(e) => {
                return net::error_response(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string())
            }
        };
        if path.starts_with(raft::network::RAFT_PATH_PREFIX) {
            let full = self.disk.check().err();
            return raft::network::handle_raft_rpc(&self.raft, &path, body, full).await;
        }
        fn parse<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, ApiError> {
            serde_json::from_slice(b).map_err(|e| ApiError::BadRequest(format!("bad JSON: {e}")))
        }
        let res: Result<Response<Body>, ApiError> = async {
            Ok(match path.as_str() {
                "/v1/write" => {
                    let cmd: Command = parse(&body)?;
                    if !auth::allowed_command(role, &cmd) {
                        return Ok(forbidden(
                            &caller,
                            &format!("{path} {}", auth::kind_of(&cmd)),
                        ));
                    }
                    // S3 secrets are sealed here, before the log sees them;
                    // an admin command goes with its audit record.
                    let cmd = audit_wrap(&caller, self.seal_command(cmd)?);
                    net::json_response(StatusCode::OK, &self.client_write(cmd, body.len()).await?)
                }
                "/v1/read" => {
                    let q: Query = parse(&body)?;
                    if !auth::allowed_query(role, &q) {
                        return Ok(forbidden(&caller, &format!("{path} {}", auth::kind_of(&q))));
                    }
                    net::json_response(StatusCode::OK, &self.query_as(role, q, stale).await?)
                }
                "/v1/heartbeat" => {
                    let hb: HeartbeatRequest = parse(&body)?;
                    net::json_response(StatusCode::OK, &self.heartbeat(hb).await?)
                }
                "/v1/status" => net::json_response(StatusCode::OK, &self.status()),
                "/v1/admin/cluster" => {
                    net::json_response(StatusCode::OK, &self.cluster_status().await?)
                }
                "/v1/inventory" => {
                    let page: InventoryPage = parse(&body)?;
                    net::json_response(StatusCode::OK, &self.inventory(page).await?)
                }
                "/v1/admin/workers" => {
                    let list = self.workers.get().map(|w| w.list()).unwrap_or_default();
                    net::json_response(StatusCode::OK, &list)
                }
                "/v1/admin/init" => {
                    let r: InitRequest = parse(&body)?;
                    self.initialize(r.members).await?;
                    net::json_response(StatusCode::OK, &self.status())
                }
                "/v1/admin/add-node" => {
                    let r: AddNodeRequest = parse(&body)?;
                    let what = format!("add_node {} {}", r.id, r.addr);
                    let res = self.add_node(r).await;
                    self.audit_action(&caller, what, &res).await;
                    res?;
                    net::json_response(StatusCode::OK, &self.status())
                }
                "/v1/admin/snapshot" => {
                    self.snapshot_now().await?;
                    net::json_response(StatusCode::OK, &self.status())
                }
                "/v1/admin/remove-node" => {
                    let r: RemoveNodeRequest = parse(&body)?;
                    let what = format!("remove_node {}", r.id);
                    let res = self.remove_node(r).await;
                    self.audit_action(&caller, what, &res).await;
                    res?;
                    net::json_response(StatusCode::OK, &self.status())
                }
                _ => net::error_response(StatusCode::NOT_FOUND, "NotFound", "no such endpoint"),
            })
        }
        .await;
        res.unwrap_or_else(ApiError::into_response)
    }
}

/// An admin-role command from `/v1/write` wrapped in
/// [`Command::Audited`] with the verified caller (inside its `Once`, so a
/// retry records nothing twice); any other command as it is.
fn audit_wrap(caller: &auth::Caller, cmd: Command) -> Command {
    let wrap = |inner: Command| Command::Audited {
        who: caller.name.clone(),
        role: caller.role.to_string(),
        inner: Box::new(inner),
    };
    match cmd {
        Command::Once { id, inner } if inner.role() == CommandRole::Admin => Command::Once {
            id,
            inner: Box::new(wrap(*inner)),
        },
        c @ Command::Once { .. } => c,
        c if c.role() == CommandRole::Admin => wrap(c),
        c => c,
    }
}

impl MetaNode {
    /// Records an admin action that is not a command (a membership change)
    /// in the audit log, with its outcome. A refusal because this node is
    /// not the leader is not recorded (the client retries at the leader);
    /// a record that cannot be written is logged.
    async fn audit_action(&self, caller: &auth::Caller, what: String, r: &Result<(), ApiError>) {
        let result = match r {
            Ok(()) => "ok".to_string(),
            Err(ApiError::NotLeader(_)) => return,
            Err(e) => e.to_string(),
        };
        let cmd = Command::AuditRecord {
            who: caller.name.clone(),
            role: caller.role.to_string(),
            what: what.clone(),
            result,
        };
        if let Err(e) = self.write(cmd).await {
            tracing::warn!(error = %e, what, "audit record not written");
        }
    }
}

/// 403 for a verified caller whose role may not do `what`; logged (the
/// token's name, never the token) so an operator sees a misused credential.
fn forbidden(caller: &auth::Caller, what: &str) -> Response<Body> {
    tracing::warn!(role = %caller.role, name = %caller.name, what, "refused: not allowed for this role");
    net::error_response(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &format!("a {} credential may not do {what}", caller.role),
    )
}

pub(super) fn map_write_err(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> ApiError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            ApiError::NotLeader(f.leader_node.map(|n| n.addr))
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            ApiError::BadRequest(c.to_string())
        }
        e => ApiError::Unavailable(e.to_string()),
    }
}
