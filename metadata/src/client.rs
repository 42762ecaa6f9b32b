//! `MetaClient`: how every other role talks to the metadata service. It
//! knows all metadata addresses, finds the leader itself (following "not
//! leader" hints and trying the next node on transport errors) and retries
//! with back-off until a deadline, so callers survive a leader change.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::net::{ClientOptions, HttpClient, NetError};
use crate::types::*;

/// Retry and timeout knobs of [`MetaClient`].
#[derive(Debug, Clone)]
pub struct MetaClientOptions {
    /// Timeout of one request.
    pub request_timeout: Duration,
    /// How long to keep retrying (leader elections take ~1-2 s).
    pub retry_deadline: Duration,
    /// First back-off; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Largest back-off.
    pub max_backoff: Duration,
}

impl Default for MetaClientOptions {
    fn default() -> Self {
        MetaClientOptions {
            request_timeout: Duration::from_secs(5),
            retry_deadline: Duration::from_secs(20),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
        }
    }
}

/// The shortest attempt [`MetaClient::call`] makes, even at its deadline:
/// enough for one round trip to a live node.
const MIN_ATTEMPT: Duration = Duration::from_millis(200);

/// Failure to reach an answer from the metadata service.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MetaClientError {
    /// No node answered usefully before the deadline.
    #[error("metadata service unavailable: {0}")]
    Unavailable(String),
    /// The service refused the request (bad input, auth).
    #[error("metadata service refused the request: {0}")]
    Refused(NetError),
    /// The leader's metadata disk is below its free-space reserve (507
    /// `StorageFull`): writes are refused until space is freed; reads
    /// still work. Not retried: it does not clear in a retry's time.
    #[error("metadata storage full: {0}")]
    StorageFull(String),
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Linearizable: served by the leader after confirming leadership.
    Linearizable,
    /// Whatever the answering node has applied (may lag).
    Stale,
}

/// Client of the metadata API. Its `Debug` never shows the secret.
pub struct MetaClient {
    http: HttpClient,
    addrs: Vec<String>,
    secret: String,
    opts: MetaClientOptions,
    /// The node that last answered as leader, tried first.
    leader: Mutex<Option<String>>,
}

impl std::fmt::Debug for MetaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaClient")
            .field("addrs", &self.addrs)
            .field("secret", &"<redacted>")
            .field("opts", &self.opts)
            .field("leader", &self.leader_hint())
            .finish()
    }
}

impl MetaClient {
    /// A client for the metadata nodes at `addrs` (`host:port`).
    pub fn new(addrs: Vec<String>, secret: String, opts: MetaClientOptions) -> Self {
        MetaClient {
            http: HttpClient::new(&ClientOptions::default()),
            addrs,
            secret,
            opts,
            leader: Mutex::new(None),
        }
    }

    /// The configured addresses.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    fn leader_hint(&self) -> Option<String> {
        self.leader.lock().ok().and_then(|g| g.clone())
    }

    fn set_leader(&self, addr: Option<String>) {
        if let Ok(mut g) = self.leader.lock() {
            *g = addr;
        }
    }

    /// POSTs `body` to `path`, following leader hints and retrying transport
    /// failures on the other nodes until the deadline.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
    ) -> Result<Resp, MetaClientError> {
        if self.addrs.is_empty() {
            return Err(MetaClientError::Unavailable(
                "no metadata addresses configured".into(),
            ));
        }
        let start = Instant::now();
        let mut backoff = self.opts.initial_backoff;
        let mut next_idx = 0usize;
        let mut target = self.leader_hint().unwrap_or_else(|| self.addrs[0].clone());
        let mut last_err;
        let mut hops = 0u32;
        loop {
            let url = format!("http://{target}{path}");
            // One attempt never runs past the deadline (a node that accepts
            // but does not answer used to cost a whole `request_timeout`
            // for the headers and another for the body, after the deadline
            // had nearly passed: up to 30 s for a 20 s deadline).
            let attempt = self
                .opts
                .request_timeout
                .min(self.opts.retry_deadline.saturating_sub(start.elapsed()))
                .max(MIN_ATTEMPT);
            let sent = self
                .http
                .post_json::<Req, Resp>(&url, &self.secret, body, attempt);
            let res = match tokio::time::timeout(attempt, sent).await {
                Ok(r) => r,
                Err(_) => Err(NetError::Timeout),
            };
            match res {
                Ok(r) => {
                    self.set_leader(Some(target));
                    return Ok(r);
                }
                Err(NetError::Status {
                    status: 421,
                    leader: Some(l),
                    ..
                }) if l != target && hops < 3 => {
                    // Not the leader, but it knows who is: go there at once
                    // (a few hops at most, in case hints are stale).
                    hops += 1;
                    self.set_leader(Some(l.clone()));
                    target = l;
                    continue;
                }
                Err(NetError::Status {
                    status: 507,
                    message,
                    ..
                }) => {
                    self.set_leader(Some(target));
                    return Err(MetaClientError::StorageFull(message));
                }
                Err(e @ NetError::Status { status, .. }) if status != 421 && status != 503 => {
                    return Err(MetaClientError::Refused(e));
                }
                Err(e) => {
                    hops = 0;
                    last_err = format!("{target}: {e}");
                    self.set_leader(None);
                    // The node after the one that failed: counting from
                    // where the last rotation stood could pick the same
                    // silent node again (a leader hint at index 1 was
                    // retried once more before index 2 was tried).
                    let at = self
                        .addrs
                        .iter()
                        .position(|a| *a == target)
                        .unwrap_or(next_idx);
                    next_idx = (at + 1) % self.addrs.len();
                    target = self.addrs[next_idx].clone();
                }
            }
            if start.elapsed() >= self.opts.retry_deadline {
                return Err(MetaClientError::Unavailable(last_err));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.opts.max_backoff);
        }
    }

    /// Proposes a command through Raft; returns once it is committed by a
    /// majority and applied.
    /// The command is wrapped in [`Command::Once`] so retries after an
    /// ambiguous failure apply it at most once.
    pub async fn write(&self, cmd: &Command) -> Result<CommandResult, MetaClientError> {
        let once = match cmd {
            Command::Once { .. } => cmd.clone(),
            c => Command::Once {
                id: StripeId::random(),
                inner: Box::new(c.clone()),
            },
        };
        self.call("/v1/write", &once).await
    }

    /// Reads the state machine.
    pub async fn query(
        &self,
        q: &Query,
        consistency: Consistency,
    ) -> Result<QueryResult, MetaClientError> {
        match consistency {
            Consistency::Linearizable => self.call("/v1/read", q).await,
            Consistency::Stale => self.call("/v1/read?stale=1", q).await,
        }
    }

    /// Sends a chunkserver heartbeat.
    pub async fn heartbeat(
        &self,
        req: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, MetaClientError> {
        self.call("/v1/heartbeat", req).await
    }

    /// Posts one page of a chunkserver's inventory to the leader (orphan
    /// reconciliation); returns once the page was checked and any orphans
    /// it held were queued for deletion.
    pub async fn inventory(
        &self,
        page: &InventoryPage,
    ) -> Result<crate::orphans::InventoryReply, MetaClientError> {
        self.call("/v1/inventory", page).await
    }

    /// Makes the answering node build a snapshot now; returns its Raft view
    /// once the snapshot covers everything it had applied when asked.
    pub async fn snapshot(&self) -> Result<RaftStatus, MetaClientError> {
        self.call("/v1/admin/snapshot", &()).await
    }

    /// The answering node's Raft view.
    pub async fn status(&self) -> Result<RaftStatus, MetaClientError> {
        self.call("/v1/status", &()).await
    }

    /// The leader's cluster health view: chunkservers, stripes by remaining
    /// redundancy, repair and GC queues, scrub progress.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, MetaClientError> {
        self.call("/v1/admin/cluster", &()).await
    }

    /// The answering node's background workers.
    pub async fn workers(&self) -> Result<Vec<crate::worker::WorkerInfo>, MetaClientError> {
        self.call("/v1/admin/workers", &()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node that accepts connections and never answers (paused,
    /// overloaded): the call gives up at its retry deadline, not a whole
    /// request timeout (headers, then body) after it.
    #[tokio::test]
    async fn a_silent_node_costs_at_most_the_deadline() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let hold = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((c, _)) = listener.accept().await {
                conns.push(c);
            }
        });
        let client = MetaClient::new(
            vec![addr],
            "s".into(),
            MetaClientOptions {
                request_timeout: Duration::from_millis(1500),
                retry_deadline: Duration::from_secs(2),
                ..Default::default()
            },
        );
        let start = Instant::now();
        let r = client.status().await;
        let took = start.elapsed();
        assert!(matches!(r, Err(MetaClientError::Unavailable(_))), "{r:?}");
        assert!(
            took < Duration::from_millis(2500),
            "gave up after {took:?}, deadline 2 s"
        );
        hold.abort();
    }

    #[test]
    fn debug_redacts_the_secret() {
        let c = MetaClient::new(
            vec!["127.0.0.1:1".into()],
            "hunter2".into(),
            MetaClientOptions::default(),
        );
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2") && d.contains("redacted"), "{d}");
    }
}
