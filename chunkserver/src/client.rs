//! [`ShardClient`]: the typed client of a chunkserver's API, used by the
//! client library (striped writes, reads) and by repair.
//!
//! Every call carries the cluster secret; replies are mapped back to this
//! crate's [`Error`] (a chunkserver's `NoSuchShard` is
//! [`Error::NoSuchShard`], and so on) while transport failures stay in
//! [`Error::Net`]. Reads are verified again on this side: a whole-shard
//! `get` checks the payload's BLAKE3, so corruption in transit is caught too.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cairn_metadata::net::{self, ErrorBody, HttpClient, NetError, SECRET_HEADER};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::api::{self, InventoryPage, StatsReply};
use crate::error::{Error, Result};
use crate::format::ShardMeta;
use crate::ids::ShardId;
use crate::metrics::ShardClientMetrics;
use crate::store::{PutOutcome, DEFAULT_MAX_SHARD_SIZE};

/// Error replies are small JSON documents; anything bigger is cut here.
const MAX_ERROR_BODY: usize = 64 << 10;

/// A client of chunkservers. Cheap to clone; shares the pooled
/// [`HttpClient`] it was built with.
#[derive(Clone, Debug)]
pub struct ShardClient {
    http: HttpClient,
    secret: Arc<str>,
    timeout: Duration,
    max_shard_size: u64,
    metrics: Option<Arc<ShardClientMetrics>>,
}

/// The `result` label of a shard call.
fn result_label<T>(r: &Result<T>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(Error::Net(NetError::Connect(_))) => "connect",
        Err(Error::Net(NetError::Timeout)) => "timeout",
        Err(Error::Net(NetError::Transport(_))) => "transport",
        Err(e) => e.http_status().1,
    }
}

impl ShardClient {
    /// A client sending the data-plane key of `credential` (the cluster
    /// secret or a role token, see [`cairn_metadata::auth::data_key`]) on
    /// every request, with a 30 s timeout per call and the default maximum
    /// shard size.
    pub fn new(http: HttpClient, credential: impl Into<String>) -> Self {
        ShardClient {
            http,
            secret: Arc::from(cairn_metadata::auth::data_key(&credential.into())),
            timeout: Duration::from_secs(30),
            max_shard_size: DEFAULT_MAX_SHARD_SIZE,
            metrics: None,
        }
    }

    /// Records every `put` and `get` in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<ShardClientMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Sets the time allowed for each call, body transfer included.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the largest payload a `get` accepts (match the servers'
    /// `max_shard_size`).
    pub fn with_max_shard_size(mut self, max: u64) -> Self {
        self.max_shard_size = max;
        self
    }

    /// Stores `payload` as the shard `meta` describes on the chunkserver at
    /// `addr` (`host:port`). Returns once it is durable there.
    pub async fn put(&self, addr: &str, meta: &ShardMeta, payload: Bytes) -> Result<PutOutcome> {
        let started = Instant::now();
        let len = payload.len() as u64;
        let r = self.put_inner(addr, meta, payload).await;
        if let Some(m) = &self.metrics {
            let bytes = if r.is_ok() { len } else { 0 };
            m.record(addr, "put", started, result_label(&r), bytes);
        }
        r
    }

    async fn put_inner(&self, addr: &str, meta: &ShardMeta, payload: Bytes) -> Result<PutOutcome> {
        if payload.len() as u64 != meta.len {
            return Err(Error::InvalidParams(format!(
                "payload is {} bytes but the metadata says {}",
                payload.len(),
                meta.len
            )));
        }
        let mut b = self
            .request(Method::PUT, addr, &shard_path(&meta.id))?
            .header(header::CONTENT_LENGTH, meta.len);
        for (name, value) in api::meta_headers(meta) {
            b = b.header(name, value);
        }
        let req = b.body(net::full(payload)).map_err(build_err)?;
        let resp = self.send(req).await?;
        match resp.status() {
            StatusCode::CREATED => Ok(PutOutcome::Created),
            StatusCode::OK => Ok(PutOutcome::AlreadyStored),
            _ => Err(self.error_from(Some(meta.id), resp).await),
        }
    }

    /// Reads shard `id` from `addr`: the whole payload, or the bytes in
    /// `range`. The chunkserver verifies the shard before answering; on this
    /// side the payload hash it reports must equal `expected` (when given),
    /// and a whole payload is hashed again, frame by frame as it arrives
    /// (while the bytes are still in cache; each frame is small enough to
    /// hash on the reactor). Any mismatch is [`Error::CorruptShard`]: a
    /// whole payload returned with `expected` given is verified against it.
    pub async fn get(
        &self,
        addr: &str,
        id: ShardId,
        range: Option<Range<u64>>,
        expected: Option<blake3::Hash>,
    ) -> Result<Bytes> {
        let started = Instant::now();
        let r = self.get_inner(addr, id, range, expected).await;
        if let Some(m) = &self.metrics {
            let bytes = r.as_ref().map(|b| b.len() as u64).unwrap_or(0);
            m.record(addr, "get", started, result_label(&r), bytes);
        }
        r
    }

    async fn get_inner(
        &self,
        addr: &str,
        id: ShardId,
        range: Option<Range<u64>>,
        expected: Option<blake3::Hash>,
    ) -> Result<Bytes> {
        if let Some(r) = &range {
            if r.start > r.end {
                return Err(Error::InvalidParams(format!(
                    "inverted range {}..{}",
                    r.start, r.end
                )));
            }
            if r.start == r.end {
                return Ok(Bytes::new());
            }
        }
        let mut b = self.request(Method::GET, addr, &shard_path(&id))?;
        if let Some(r) = &range {
            b = b.header(header::RANGE, format!("bytes={}-{}", r.start, r.end - 1));
        }
        let req = b.body(net::empty()).map_err(build_err)?;
        let resp = self.send(req).await?;
        let status = resp.status();
        if status != StatusCode::OK && status != StatusCode::PARTIAL_CONTENT {
            return Err(self.error_from(Some(id), resp).await);
        }
        let corrupt = |reason: String| Error::CorruptShard { id, reason };
        let declared = resp
            .headers()
            .get(api::HDR_BLAKE3)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| api::parse_blake3(v).ok())
            .ok_or_else(|| {
                corrupt(format!(
                    "reply from {addr} lacks a valid {}",
                    api::HDR_BLAKE3
                ))
            })?;
        if let Some(exp) = expected {
            if exp != declared {
                return Err(corrupt(format!(
                    "{addr} holds payload {}, expected {}",
                    declared.to_hex(),
                    exp.to_hex()
                )));
            }
        }
        let limit = usize::try_from(self.max_shard_size).unwrap_or(usize::MAX);
        let announced = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0)
            .min(limit);
        let whole = status == StatusCode::OK;
        let mut incoming = resp.into_body();
        let read = async {
            let mut buf = BytesMut::with_capacity(announced);
            let mut hasher = whole.then(blake3::Hasher::new);
            while let Some(frame) = incoming.frame().await {
                let frame = frame.map_err(|e| NetError::Transport(e.to_string()))?;
                if let Ok(data) = frame.into_data() {
                    if buf.len() + data.len() > limit {
                        return Err(NetError::TooLarge { limit });
                    }
                    if let Some(h) = &mut hasher {
                        h.update(&data);
                    }
                    buf.extend_from_slice(&data);
                }
            }
            Ok((buf.freeze(), hasher.map(|h| h.finalize())))
        };
        let (body, hash) = tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| NetError::Timeout)??;
        if let Some(got) = hash {
            if got != declared {
                return Err(corrupt(format!(
                    "payload from {addr} hashes to {}, not {}",
                    got.to_hex(),
                    declared.to_hex()
                )));
            }
            return match range {
                None => Ok(body),
                Some(r) => {
                    let len = body.len() as u64;
                    if r.start >= len {
                        return Err(Error::BadRequest(format!(
                            "range starts at {} but shard {id} has {len} bytes",
                            r.start
                        )));
                    }
                    Ok(body.slice(r.start as usize..r.end.min(len) as usize))
                }
            };
        }
        // 206: the server verified the whole payload before slicing it.
        match range {
            Some(r) if body.len() as u64 <= r.end - r.start && !body.is_empty() => Ok(body),
            _ => Err(Error::Net(NetError::Decode(format!(
                "unexpected partial reply of {} bytes from {addr}",
                body.len()
            )))),
        }
    }

    /// Shard `id`'s metadata on `addr` (header checked, payload not read).
    pub async fn head(&self, addr: &str, id: ShardId) -> Result<ShardMeta> {
        let req = self
            .request(Method::HEAD, addr, &shard_path(&id))?
            .body(net::empty())
            .map_err(build_err)?;
        let resp = self.send(req).await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(Error::NoSuchShard { id }),
            s => {
                return Err(Error::Net(NetError::Status {
                    status: s.as_u16(),
                    error: s.canonical_reason().unwrap_or("Error").to_string(),
                    message: format!("HEAD of shard {id} failed"),
                    leader: None,
                }))
            }
        }
        let h = resp.headers();
        let len = h
            .get(api::HDR_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| NetError::Decode(format!("missing {}", api::HDR_LENGTH)))?;
        api::meta_from_headers(id, len, h).map_err(|e| Error::Net(NetError::Decode(e.to_string())))
    }

    /// Deletes shard `id` on `addr`.
    pub async fn delete(&self, addr: &str, id: ShardId) -> Result<()> {
        let req = self
            .request(Method::DELETE, addr, &shard_path(&id))?
            .body(net::empty())
            .map_err(build_err)?;
        let resp = self.send(req).await?;
        if resp.status() == StatusCode::NO_CONTENT {
            Ok(())
        } else {
            Err(self.error_from(Some(id), resp).await)
        }
    }

    /// The chunkserver's space and usage.
    pub async fn stats(&self, addr: &str) -> Result<StatsReply> {
        self.get_json(addr, api::STATS_PATH).await
    }

    /// One page of the chunkserver's shard inventory.
    pub async fn list(
        &self,
        addr: &str,
        after: Option<ShardId>,
        limit: usize,
    ) -> Result<InventoryPage> {
        let mut path = format!("{}?limit={limit}", api::SHARDS_PATH);
        if let Some(a) = after {
            path.push_str(&format!("&after={a}"));
        }
        self.get_json(addr, &path).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, addr: &str, path: &str) -> Result<T> {
        let req = self
            .request(Method::GET, addr, path)?
            .body(net::empty())
            .map_err(build_err)?;
        let resp = self.send(req).await?;
        if resp.status() != StatusCode::OK {
            return Err(self.error_from(None, resp).await);
        }
        let body = tokio::time::timeout(
            self.timeout,
            net::read_body(resp.into_body(), net::MAX_JSON_BODY),
        )
        .await
        .map_err(|_| NetError::Timeout)??;
        serde_json::from_slice(&body).map_err(|e| Error::Net(NetError::Decode(e.to_string())))
    }

    fn request(&self, method: Method, addr: &str, path: &str) -> Result<http::request::Builder> {
        if addr.is_empty()
            || addr
                .chars()
                .any(|c| c == '/' || c == '@' || c == '?' || c == '#' || c.is_whitespace())
        {
            return Err(Error::InvalidParams(format!(
                "invalid chunkserver address {addr:?}: want host:port"
            )));
        }
        Ok(Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header(SECRET_HEADER, &*self.secret))
    }

    async fn send(&self, req: Request<net::Body>) -> Result<Response<Incoming>> {
        Ok(self.http.send(req, self.timeout).await?)
    }

    async fn error_from(&self, id: Option<ShardId>, resp: Response<Incoming>) -> Error {
        let status = resp.status().as_u16();
        let body = tokio::time::timeout(
            self.timeout,
            net::read_body(resp.into_body(), MAX_ERROR_BODY),
        )
        .await;
        let (code, message) = match body {
            Ok(Ok(b)) => match serde_json::from_slice::<ErrorBody>(&b) {
                Ok(e) => (e.error, e.message),
                Err(_) => (
                    "Unknown".to_string(),
                    String::from_utf8_lossy(&b).into_owned(),
                ),
            },
            _ => ("Unknown".to_string(), String::new()),
        };
        Error::from_remote(id, status, &code, message)
    }
}

fn shard_path(id: &ShardId) -> String {
    format!("{}/{id}", api::SHARDS_PATH)
}

fn build_err(e: http::Error) -> Error {
    Error::InvalidParams(format!("cannot build request: {e}"))
}
