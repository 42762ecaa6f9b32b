//! The chunkserver process: its composition root ([`Chunkserver`]) and the
//! HTTP handler of the API described in [`crate::api`].
//!
//! [`Chunkserver`] is built once at start-up and holds every long-lived
//! handle (the store, limits, identity). The `cairn chunkserver` command
//! builds it, binds the listener and calls [`Chunkserver::serve`]; background
//! workers (heartbeat, scrubber) will take an `Arc<Chunkserver>` as well.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use cairn_metadata::net::{
    self, error_response, has_secret, json_response, unauthorized, Body, BoxError, ServerOptions,
};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::{self, InventoryPage, StatsReply};
use crate::error::{Error, Result};
use crate::format::HEADER_LEN;
use crate::ids::ShardId;
use crate::metrics::ServerMetrics;
use crate::repair::RepairExecutor;
use crate::scrub::{ScrubConfig, ScrubHandle};
use crate::store::{PutStart, Store, StoreConfig};
use cairn_metadata::metrics::{self as ops, OpsEndpoint};
use cairn_metadata::types::ScrubControl;
use cairn_metadata::worker::WorkerRunner;

/// Granularity of the read memory budget.
const BUDGET_UNIT: u64 = 1 << 20;

/// Everything a chunkserver needs to start. Its `Debug` leaves the secret
/// out.
#[derive(Clone)]
pub struct ChunkserverConfig {
    /// The shard store's data directories and limits.
    pub store: StoreConfig,
    /// Failure zone (rack, room, ...) this chunkserver is in; placement puts
    /// a stripe's shards in distinct zones.
    pub zone: String,
    /// The cluster secret every request must carry.
    pub secret: String,
    /// Longest a request may take, body upload included.
    pub request_timeout: Duration,
    /// Requests handled at once; more wait (within their timeout).
    pub max_inflight_requests: usize,
    /// Bytes of shard payload held in memory by reads at once. Reads load
    /// and verify a whole shard before serving it, so this bounds memory.
    pub read_budget: u64,
    /// Connection-level limits of the HTTP server.
    pub server: ServerOptions,
    /// The scrubber's pass period and throttle.
    pub scrub: ScrubConfig,
}

impl std::fmt::Debug for ChunkserverConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkserverConfig")
            .field("store", &self.store)
            .field("zone", &self.zone)
            .field("secret", &"<redacted>")
            .field("request_timeout", &self.request_timeout)
            .field("max_inflight_requests", &self.max_inflight_requests)
            .field("read_budget", &self.read_budget)
            .field("server", &self.server)
            .field("scrub", &self.scrub)
            .finish()
    }
}

impl ChunkserverConfig {
    /// A config with default limits.
    pub fn new(store: StoreConfig, zone: String, secret: String) -> Self {
        ChunkserverConfig {
            store,
            zone,
            secret,
            // Generous: a 64 MiB shard over a slow link still fits.
            request_timeout: Duration::from_secs(60),
            // Each in-flight PUT buffers up to 1 MiB: 256 MiB at most.
            max_inflight_requests: 256,
            // Eight maximum-size (64 MiB) shards, or 512 default ones.
            read_budget: 512 << 20,
            server: ServerOptions::default(),
            scrub: ScrubConfig::default(),
        }
    }
}

/// A running chunkserver's long-lived state: the composition root.
pub struct Chunkserver {
    store: Store,
    zone: String,
    secret: String,
    request_timeout: Duration,
    inflight: Arc<Semaphore>,
    read_budget: Arc<Semaphore>,
    read_budget_units: u32,
    server_options: ServerOptions,
    scrub: ScrubHandle,
    /// The process's background workers, for `/v1/admin/workers`; set once
    /// by whoever spawns them.
    workers: std::sync::OnceLock<WorkerRunner>,
    /// The repair executor, for `/metrics`; set once when there is one.
    repair: std::sync::OnceLock<RepairExecutor>,
    /// What `/metrics` exports.
    metrics: ServerMetrics,
}

impl fmt::Debug for Chunkserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunkserver")
            .field("zone", &self.zone)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Chunkserver {
    /// Opens the store and builds the chunkserver.
    pub async fn open(cfg: ChunkserverConfig) -> Result<Arc<Chunkserver>> {
        if cfg.secret.is_empty() {
            return Err(Error::InvalidParams(
                "the cluster secret must not be empty".into(),
            ));
        }
        let store = Store::open(cfg.store).await?;
        let first_dir = store
            .data_dirs()
            .into_iter()
            .next()
            .ok_or_else(|| Error::InvalidParams("no data directory".into()))?;
        let scrub = ScrubHandle::open(&first_dir, cfg.scrub)?;
        let units = (cfg.read_budget / BUDGET_UNIT).clamp(1, u64::from(u32::MAX >> 3)) as u32;
        Ok(Arc::new(Chunkserver {
            store,
            zone: cfg.zone,
            // Callers present the data-plane key, never a credential that
            // would open the metadata API (see cairn_metadata::auth).
            secret: cairn_metadata::auth::data_key(&cfg.secret),
            request_timeout: cfg.request_timeout,
            inflight: Arc::new(Semaphore::new(cfg.max_inflight_requests.max(1))),
            read_budget: Arc::new(Semaphore::new(units as usize)),
            read_budget_units: units,
            server_options: cfg.server,
            scrub,
            workers: std::sync::OnceLock::new(),
            repair: std::sync::OnceLock::new(),
            metrics: ServerMetrics::new(),
        }))
    }

    /// The shard store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The failure zone.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// The scrubber's shared state (progress and controls).
    pub fn scrub(&self) -> &ScrubHandle {
        &self.scrub
    }

    /// Records the runner of this process's background workers, listed by
    /// `POST /v1/admin/workers`. Only the first call counts.
    pub fn attach_workers(&self, runner: WorkerRunner) {
        let _ = self.workers.set(runner);
    }

    /// Records the repair executor, whose progress `/metrics` exports.
    /// Only the first call counts.
    pub fn attach_repair(&self, repair: RepairExecutor) {
        let _ = self.repair.set(repair);
    }

    /// Readiness: every data directory in service takes a file (created,
    /// written and removed; not fsynced), and at least one is in service
    /// (one whose device failed is out of service: the others still serve).
    pub async fn ready(&self) -> std::result::Result<(), String> {
        let failed: Vec<std::path::PathBuf> = self
            .store
            .failed_dirs()
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        let dirs: Vec<std::path::PathBuf> = self
            .store
            .data_dirs()
            .into_iter()
            .filter(|d| !failed.contains(d))
            .collect();
        if dirs.is_empty() {
            return Err("every data dir is out of service (device failures)".into());
        }
        let probe = tokio::task::spawn_blocking(move || {
            for d in dirs {
                let p = d.join(".ready-probe");
                let r = std::fs::write(&p, b"ok").and_then(|()| std::fs::remove_file(&p));
                if let Err(e) = r {
                    return Err(format!("data dir {} is not writable: {e}", d.display()));
                }
            }
            Ok(())
        });
        match probe.await {
            Ok(r) => r,
            Err(e) => Err(format!("readiness probe failed: {e}")),
        }
    }

    /// Refreshes the scrape-time values and encodes the registry.
    pub async fn metrics_reply(&self) -> Response<Body> {
        let m = &self.metrics;
        m.process.refresh();
        let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        match self.store.stats().await {
            Ok(disks) => {
                for d in disks {
                    let l = cairn_metadata::metrics::labels([("dir", &d.path.to_string_lossy())]);
                    m.disk_capacity.get_or_create(&l).set(i(d.capacity));
                    m.disk_free.get_or_create(&l).set(i(d.free));
                    m.disk_used.get_or_create(&l).set(i(d.used_by_shards));
                    m.disk_shards.get_or_create(&l).set(i(d.shard_count));
                    m.disk_failed
                        .get_or_create(&l)
                        .set(i64::from(d.failed.is_some()));
                }
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot read disk stats"),
        }
        let p = self.scrub.progress();
        m.scrub_scanned_shards.set(i(p.scanned_shards));
        m.scrub_total_shards.set(i(p.total_shards));
        m.scrub_scanned_bytes.set(i(p.scanned_bytes));
        m.scrub_corrupt.set(i(p.bad_found));
        m.scrub_running.set(i64::from(
            p.state == cairn_metadata::types::ScrubState::Running,
        ));
        m.scrub_paused.set(i64::from(
            p.state == cairn_metadata::types::ScrubState::Paused,
        ));
        m.scrub_last_full_pass
            .set(i(p.last_full_pass_ms.unwrap_or(0) / 1000));
        if let Some(r) = self.repair.get() {
            m.repair_running.set(i64::from(r.running()));
            m.repair_accepted.set(r.accepted() as i64);
            m.repair_rebuilt.set(i(r.rebuilt_bytes()));
            m.repair_failed.set(i(r.failed()));
        }
        cairn_metadata::metrics::encode(&m.registry)
    }

    /// Space and usage, per data directory and in total.
    pub async fn stats(&self) -> Result<StatsReply> {
        Ok(StatsReply::new(
            self.zone.clone(),
            self.store.stats().await?,
        ))
    }

    /// Serves the API on `listener` until `shutdown` resolves, then drains
    /// in-flight requests.
    pub async fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) {
        let cs = self.clone();
        let handler = move |req: Request<hyper::body::Incoming>, _peer| {
            let cs = cs.clone();
            async move { cs.handle(req).await }
        };
        net::serve(listener, handler, shutdown, self.server_options.clone()).await;
    }

    /// Handles one request: checks the secret, applies the concurrency cap
    /// and timeout, and turns every error into a JSON reply.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + Unpin,
        B::Error: fmt::Display,
    {
        match ops::ops_endpoint(&req) {
            Some(OpsEndpoint::Metrics) => return self.metrics_reply().await,
            Some(OpsEndpoint::Live) => return ops::live(),
            Some(OpsEndpoint::Ready) => return ops::ready(self.ready().await),
            None => {}
        }
        if !has_secret(req.headers(), &self.secret) {
            return unauthorized();
        }
        let started = std::time::Instant::now();
        let method = req.method().as_str().to_string();
        let (span, _) = net::request_span(req.headers());
        let resp = tracing::Instrument::instrument(self.handle_authorized(req), span).await;
        let m = &self.metrics;
        m.requests
            .get_or_create(&ops::labels([
                ("method", &method),
                ("status", resp.status().as_str()),
            ]))
            .inc();
        m.duration
            .get_or_create(&ops::labels([("method", &method)]))
            .observe(started.elapsed().as_secs_f64());
        resp
    }

    async fn handle_authorized<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + Unpin,
        B::Error: fmt::Display,
    {
        let work = async {
            let _permit = self
                .inflight
                .acquire()
                .await
                .map_err(|_| Error::io("request limiter", std::io::Error::other("closed")))?;
            self.route(req).await
        };
        match tokio::time::timeout(self.request_timeout, work).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => error_reply(&e),
            Err(_) => error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "Timeout",
                "the request did not complete in time",
            ),
        }
    }

    async fn route<B>(&self, req: Request<B>) -> Result<Response<Body>>
    where
        B: hyper::body::Body<Data = Bytes> + Send + Unpin,
        B::Error: fmt::Display,
    {
        let path = req.uri().path().to_string();
        if path == api::SCRUB_PATH {
            if req.method() != Method::POST {
                return Ok(method_not_allowed());
            }
            let body = read_small_body(req.into_body()).await?;
            let c: ScrubControl = serde_json::from_slice(&body)
                .map_err(|e| Error::BadRequest(format!("bad scrub control: {e}")))?;
            return Ok(json_response(StatusCode::OK, &self.scrub.control(&c)?));
        }
        if path == api::WORKERS_PATH {
            if req.method() != Method::POST {
                return Ok(method_not_allowed());
            }
            let list = self.workers.get().map(|w| w.list()).unwrap_or_default();
            return Ok(json_response(StatusCode::OK, &list));
        }
        if path == api::STATS_PATH {
            return match *req.method() {
                Method::GET => Ok(json_response(StatusCode::OK, &self.stats().await?)),
                _ => Ok(method_not_allowed()),
            };
        }
        if path == api::SHARDS_PATH || path == "/v1/shards/" {
            return match *req.method() {
                Method::GET => self.list(req.uri().query().unwrap_or("")),
                _ => Ok(method_not_allowed()),
            };
        }
        let Some(id) = path
            .strip_prefix(api::SHARDS_PATH)
            .and_then(|p| p.strip_prefix('/'))
        else {
            return Ok(error_response(
                StatusCode::NOT_FOUND,
                "NotFound",
                "no such endpoint",
            ));
        };
        let id: ShardId = id.parse()?;
        match *req.method() {
            Method::PUT => self.put(id, req).await,
            Method::GET => self.get(id, &req).await,
            Method::HEAD => self.head(id).await,
            Method::DELETE => {
                self.store.delete(id).await?;
                let mut r = Response::new(net::empty());
                *r.status_mut() = StatusCode::NO_CONTENT;
                Ok(r)
            }
            _ => Ok(method_not_allowed()),
        }
    }

    async fn put<B>(&self, id: ShardId, req: Request<B>) -> Result<Response<Body>>
    where
        B: hyper::body::Body<Data = Bytes> + Send + Unpin,
        B::Error: fmt::Display,
    {
        let Some(len) = req.headers().get(header::CONTENT_LENGTH) else {
            return Ok(error_response(
                StatusCode::LENGTH_REQUIRED,
                "LengthRequired",
                "a shard PUT needs a content-length",
            ));
        };
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| Error::BadRequest("invalid content-length".into()))?;
        let limit = self.store.max_shard_size();
        if len > limit {
            // Not drained: the client is told at once and the connection
            // closes rather than carrying an oversized body.
            return Err(Error::TooLarge { len, limit });
        }
        let (parts, mut body) = req.into_parts();
        let outcome = self.put_body(id, len, &parts.headers, &mut body).await;
        if !matches!(outcome, Ok(StatusCode::CREATED)) && !body.is_end_stream() {
            // Refused (or already stored) before the body was read: read and
            // discard it (at most `limit` bytes, within the request timeout)
            // so the client, still sending, gets this reply instead of a
            // reset connection.
            while let Some(Ok(_)) = body.frame().await {}
        }
        let status = outcome?;
        let mut r = Response::new(net::empty());
        *r.status_mut() = status;
        Ok(r)
    }

    async fn put_body<B>(
        &self,
        id: ShardId,
        len: u64,
        headers: &http::HeaderMap,
        body: &mut B,
    ) -> Result<StatusCode>
    where
        B: hyper::body::Body<Data = Bytes> + Send + Unpin,
        B::Error: fmt::Display,
    {
        if let Some(declared) = headers.get(api::HDR_LENGTH) {
            if declared
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                != Some(len)
            {
                return Err(Error::BadRequest(format!(
                    "{} does not match the content-length {len}",
                    api::HDR_LENGTH
                )));
            }
        }
        let meta = api::meta_from_headers(id, len, headers)?;
        match self.store.begin_put(meta).await? {
            PutStart::AlreadyStored => Ok(StatusCode::OK),
            PutStart::Write(mut w) => {
                while let Some(frame) = body.frame().await {
                    let frame =
                        frame.map_err(|e| Error::BadRequest(format!("reading the body: {e}")))?;
                    if let Ok(data) = frame.into_data() {
                        w.write(data).await?;
                    }
                }
                w.finish().await?;
                Ok(StatusCode::CREATED)
            }
        }
    }

    async fn get<B>(&self, id: ShardId, req: &Request<B>) -> Result<Response<Body>> {
        let len = self
            .store
            .stored_len(&id)
            .ok_or(Error::NoSuchShard { id })?;
        let units = (HEADER_LEN as u64 + len)
            .div_ceil(BUDGET_UNIT)
            .clamp(1, u64::from(self.read_budget_units)) as u32;
        let permit = self
            .read_budget
            .clone()
            .acquire_many_owned(units)
            .await
            .map_err(|_| Error::io("read budget", std::io::Error::other("closed")))?;
        let (meta, payload) = self.store.get(id).await?;
        let range = match req.headers().get(header::RANGE) {
            None => None,
            Some(v) => {
                let parsed = v
                    .to_str()
                    .map_err(|_| Error::BadRequest("range is not ASCII".into()))
                    .and_then(|v| api::parse_range(v, meta.len));
                match parsed {
                    Ok(r) => r,
                    Err(e) => {
                        let mut r = error_response(
                            StatusCode::RANGE_NOT_SATISFIABLE,
                            "InvalidRange",
                            &e.to_string(),
                        );
                        r.headers_mut().insert(
                            header::CONTENT_RANGE,
                            header_value(&format!("bytes */{}", meta.len)),
                        );
                        return Ok(r);
                    }
                }
            }
        };
        let (status, data) = match &range {
            // Range bounds are within the payload, which is in memory.
            Some(r) => (
                StatusCode::PARTIAL_CONTENT,
                payload.slice(r.start as usize..r.end as usize),
            ),
            None => (StatusCode::OK, payload),
        };
        let body = PermitBody {
            data: Some(data),
            _permit: permit,
        };
        let mut resp = Response::new(body.boxed_unsync());
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        for (name, value) in api::meta_headers(&meta) {
            h.insert(name, header_value(&value));
        }
        if let Some(r) = range {
            h.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes {}-{}/{}", r.start, r.end - 1, meta.len)),
            );
        }
        Ok(resp)
    }

    async fn head(&self, id: ShardId) -> Result<Response<Body>> {
        let meta = self.store.head(id).await?;
        let mut resp = Response::new(net::empty());
        let h = resp.headers_mut();
        for (name, value) in api::meta_headers(&meta) {
            h.insert(name, header_value(&value));
        }
        Ok(resp)
    }

    fn list(&self, query: &str) -> Result<Response<Body>> {
        let mut after = None;
        let mut limit = api::DEFAULT_LIST_LIMIT;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "after" => after = Some(v.parse::<ShardId>()?),
                "limit" => {
                    limit = v
                        .parse::<usize>()
                        .ok()
                        .filter(|l| (1..=api::MAX_LIST_LIMIT).contains(l))
                        .ok_or_else(|| {
                            Error::BadRequest(format!(
                                "limit must be between 1 and {}",
                                api::MAX_LIST_LIMIT
                            ))
                        })?
                }
                _ => {}
            }
        }
        let shards = self.store.list(after, limit);
        let next = if shards.len() == limit {
            shards.last().copied()
        } else {
            None
        };
        Ok(json_response(
            StatusCode::OK,
            &InventoryPage { shards, next },
        ))
    }
}

/// Largest admin request body: a control message is a few dozen bytes.
const MAX_ADMIN_BODY: usize = 64 << 10;

/// Reads a small JSON request body (at most [`MAX_ADMIN_BODY`]).
async fn read_small_body<B>(mut body: B) -> Result<Vec<u8>>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin,
    B::Error: fmt::Display,
{
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::BadRequest(format!("reading the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > MAX_ADMIN_BODY {
                return Err(Error::BadRequest(format!(
                    "body over {MAX_ADMIN_BODY} bytes"
                )));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// The JSON error reply for `e`.
pub fn error_reply(e: &Error) -> Response<Body> {
    let (status, code) = e.http_status();
    if status.is_server_error() {
        tracing::warn!(error = %e, code, "request failed");
    } else {
        tracing::debug!(error = %e, code, "request refused");
    }
    error_response(status, code, &e.to_string())
}

fn method_not_allowed() -> Response<Body> {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "method not allowed on this resource",
    )
}

/// Values built here are hex, digits or ASCII punctuation; anything else
/// would be a bug, answered with an empty value rather than a panic.
fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A one-chunk body that keeps its share of the read budget until sent.
struct PermitBody {
    data: Option<Bytes>,
    _permit: OwnedSemaphorePermit,
}

impl hyper::body::Body for PermitBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::meta_headers;
    use crate::codec::EcParams;
    use crate::format::ShardMeta;
    use crate::ids::StripeId;
    use cairn_metadata::net::SECRET_HEADER;
    use http_body_util::Full;

    async fn server() -> (tempfile::TempDir, Arc<Chunkserver>) {
        let t = tempfile::tempdir().unwrap();
        let mut store = StoreConfig::new(vec![t.path().to_path_buf()]);
        store.reserve = crate::Reserve::Bytes(0);
        let cs = Chunkserver::open(ChunkserverConfig::new(store, "z1".into(), "s3cret".into()))
            .await
            .unwrap();
        (t, cs)
    }

    fn req(method: Method, uri: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(uri)
            .header(SECRET_HEADER, cairn_metadata::auth::data_key("s3cret"))
    }

    fn empty(method: Method, uri: &str) -> Request<Full<Bytes>> {
        req(method, uri).body(Full::new(Bytes::new())).unwrap()
    }

    async fn body_of(r: Response<Body>) -> Bytes {
        r.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn put_get_range_head_delete_via_handler() {
        let (_t, cs) = server().await;
        let payload = Bytes::from((0..5000u32).map(|i| i as u8).collect::<Vec<_>>());
        let meta = ShardMeta::for_payload(
            ShardId::random(),
            StripeId::random(),
            2,
            EcParams::default(),
            &payload,
        );
        let uri = format!("/v1/shards/{}", meta.id);
        let mut b = req(Method::PUT, &uri).header(header::CONTENT_LENGTH, payload.len());
        for (k, v) in meta_headers(&meta) {
            b = b.header(k, v);
        }
        let put = b.body(Full::new(payload.clone())).unwrap();
        let r = cs.handle(put).await;
        assert_eq!(r.status(), StatusCode::CREATED);

        let r = cs.handle(empty(Method::GET, &uri)).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[api::HDR_INDEX], "2");
        assert_eq!(body_of(r).await, payload);

        let r = cs
            .handle(
                req(Method::GET, &uri)
                    .header(header::RANGE, "bytes=10-19")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes 10-19/5000");
        assert_eq!(body_of(r).await, payload.slice(10..20));

        let r = cs
            .handle(
                req(Method::GET, &uri)
                    .header(header::RANGE, "bytes=6000-")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);

        let r = cs.handle(empty(Method::HEAD, &uri)).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[api::HDR_LENGTH], "5000");

        let r = cs.handle(empty(Method::GET, "/v1/shards?limit=10")).await;
        let page: InventoryPage = serde_json::from_slice(&body_of(r).await).unwrap();
        assert_eq!(page.shards, vec![meta.id]);
        assert_eq!(page.next, None);

        let r = cs.handle(empty(Method::DELETE, &uri)).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let r = cs.handle(empty(Method::GET, &uri)).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let e: net::ErrorBody = serde_json::from_slice(&body_of(r).await).unwrap();
        assert_eq!(e.error, "NoSuchShard");
    }

    #[tokio::test]
    async fn refusals() {
        let (_t, cs) = server().await;
        let r = cs
            .handle(
                Request::get("/v1/stats")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = cs.handle(empty(Method::GET, "/v1/shards/../../etc")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = cs.handle(empty(Method::GET, "/v2/x")).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = cs.handle(empty(Method::POST, "/v1/stats")).await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        let r = cs.handle(empty(Method::GET, "/v1/shards?limit=0")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = cs.handle(empty(Method::GET, "/v1/stats")).await;
        assert_eq!(r.status(), StatusCode::OK);
        let s: StatsReply = serde_json::from_slice(&body_of(r).await).unwrap();
        assert_eq!(s.zone, "z1");
        assert_eq!(s.disks.len(), 1);
    }
}
