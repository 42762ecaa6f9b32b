//! HTTP plumbing shared by every Cairn role: one server loop, one pooled
//! client, the cluster-secret check, bounded body reads and JSON replies.
//!
//! Every socket, accepted or dialled, has `TCP_NODELAY` set: with Nagle on,
//! small request/response exchanges stall ~40 ms on delayed ACKs.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Boxed error type used inside HTTP bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response Cairn sends and every request it makes.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Header carrying the shared cluster secret on internal requests.
pub const SECRET_HEADER: &str = "x-cairn-secret";

/// Header carrying the version of Cairn's internal HTTP wire format
/// (paths, headers, JSON shapes) a request was written for. Every
/// [`HttpClient`] request carries [`WIRE_VERSION`]; [`serve`] refuses a
/// request that names another version with `400 WireVersion` before any
/// handler runs, so a mixed-version cluster fails loudly instead of
/// misreading. A request without it (curl, an S3 client, a binary from
/// before the header existed, which spoke version 1) is served: version 1
/// is the only one there has been. A future version 2 server decides for
/// itself which older versions it still serves.
pub const WIRE_HEADER: &str = "x-cairn-wire";

/// The internal wire version this binary speaks (see [`WIRE_HEADER`]).
pub const WIRE_VERSION: &str = "1";

/// The refusal of a request that names a wire version other than
/// [`WIRE_VERSION`], or `None` when it may be served.
pub fn check_wire_version(headers: &HeaderMap) -> Option<Response<Body>> {
    let v = headers.get(WIRE_HEADER)?;
    if v.as_bytes() == WIRE_VERSION.as_bytes() {
        return None;
    }
    let shown: String = String::from_utf8_lossy(v.as_bytes())
        .chars()
        .take(16)
        .collect();
    let mut r = error_response(
        StatusCode::BAD_REQUEST,
        "WireVersion",
        &format!(
            "this server speaks Cairn wire version {WIRE_VERSION}, the request version \
             {shown:?}: run the same Cairn version on both ends (see README \"Rolling upgrade\")"
        ),
    );
    r.headers_mut()
        .insert(WIRE_HEADER, HeaderValue::from_static(WIRE_VERSION));
    Some(r)
}

/// Header carrying the id of the S3 request (its `x-amz-request-id`) an
/// internal call works for, so the logs of every hop it causes carry it.
pub const REQUEST_ID_HEADER: &str = "x-cairn-request-id";

/// Longest request id accepted from a peer.
const MAX_REQUEST_ID: usize = 64;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Runs `f` with `id` as the current request id: every [`HttpClient`]
/// request `f` sends on this task carries it in [`REQUEST_ID_HEADER`].
/// Work `f` spawns onto other tasks does not inherit it.
pub async fn with_request_id<F: Future>(id: Option<String>, f: F) -> F::Output {
    match id {
        Some(id) => REQUEST_ID.scope(id, f).await,
        None => f.await,
    }
}

/// The current task's request id (see [`with_request_id`]).
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(|id| id.clone()).ok()
}

/// The request id a peer sent in [`REQUEST_ID_HEADER`], when well formed
/// (at most 64 ASCII letters, digits, `-` or `_`).
pub fn request_id_of(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let ok = !v.is_empty()
        && v.len() <= MAX_REQUEST_ID
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| v.to_string())
}

/// A span for the server-side work of one request, carrying the request id
/// the caller sent (none: no span).
pub fn request_span(headers: &HeaderMap) -> (tracing::Span, Option<String>) {
    match request_id_of(headers) {
        Some(id) => (tracing::info_span!("request", request_id = %id), Some(id)),
        None => (tracing::Span::none(), None),
    }
}

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// How long a server waits for a request's headers, which in hyper 1.x
/// also bounds how long a keep-alive connection may sit idle between
/// requests: the server closes it then. Clients must retire pooled
/// connections sooner ([`CLIENT_IDLE_TIMEOUT`]).
pub const SERVER_IDLE_CLOSE: Duration = Duration::from_secs(30);

/// How long a pooled client connection is kept idle: well below
/// [`SERVER_IDLE_CLOSE`], so a client never picks a connection the server
/// is closing at that instant (the request would be lost with the
/// connection, and a write must then be retried after a failure instead
/// of just succeeding).
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

// Clients retire idle connections before servers close them.
const _: () = assert!(CLIENT_IDLE_TIMEOUT.as_secs() < SERVER_IDLE_CLOSE.as_secs());

/// Limits and knobs of [`serve`].
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Connections served at once; further accepts wait for a slot. Bounds
    /// memory and file descriptors under a connection flood.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers; stops
    /// slow-loris connections from pinning a slot forever.
    pub header_read_timeout: Duration,
    /// How long shutdown waits for in-flight requests before dropping them.
    pub drain_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_connections: 1024,
            header_read_timeout: SERVER_IDLE_CLOSE,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves HTTP/1.1 on an already-bound `listener` until `shutdown`
/// resolves, then drains in-flight requests (up to `drain_timeout`).
///
/// `handler` is called once per request; it must turn every failure into a
/// response (it cannot fail).
pub async fn serve<H, Fut>(
    listener: TcpListener,
    handler: H,
    shutdown: impl Future<Output = ()>,
    opts: ServerOptions,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    serve_with(
        listener,
        |stream, _peer| std::future::ready(Some(stream)),
        handler,
        shutdown,
        opts,
    )
    .await
}

/// [`serve`] with a per-connection `wrap` step between accept and HTTP:
/// e.g. a TLS handshake. It runs on the connection's own task (a slow
/// handshake never stalls the accept loop) while holding one of the
/// `max_connections` slots, so it must bound its own time; `None` drops
/// the connection (a failed handshake, already logged by `wrap`).
pub async fn serve_with<W, WF, Io, H, Fut>(
    listener: TcpListener,
    wrap: W,
    handler: H,
    shutdown: impl Future<Output = ()>,
    opts: ServerOptions,
) where
    W: Fn(tokio::net::TcpStream, SocketAddr) -> WF + Clone + Send + Sync + 'static,
    WF: Future<Output = Option<Io>> + Send + 'static,
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        let h = handler.clone();
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let call = match check_wire_version(req.headers()) {
                Some(refusal) => Err(refusal),
                None => Ok(h(req, peer)),
            };
            async move {
                Ok::<_, Infallible>(match call {
                    Ok(fut) => fut.await,
                    Err(refusal) => refusal,
                })
            }
        });
        let wrapped = wrap(stream, peer);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            if let Some(io) = wrapped.await {
                let conn = builder.serve_connection(TokioIo::new(io), svc);
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(error = %e, %peer, "connection ended with error");
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(opts.drain_timeout) => {
            tracing::warn!("drain timeout: dropping in-flight connections");
        }
    }
}

/// A pooled HTTP/1.1 client with `TCP_NODELAY`, used for every internal hop.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: hyper_util::client::legacy::Client<HttpConnector, Body>,
}

/// Tuning of [`HttpClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Time allowed to establish a TCP connection.
    pub connect_timeout: Duration,
    /// Idle pooled connections kept per host; enough for the stripes a
    /// client keeps in flight.
    pub max_idle_per_host: usize,
    /// How long an idle pooled connection is kept.
    pub idle_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(3),
            max_idle_per_host: 32,
            idle_timeout: CLIENT_IDLE_TIMEOUT,
        }
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new(&ClientOptions::default())
    }
}

impl HttpClient {
    /// Builds a client.
    pub fn new(opts: &ClientOptions) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(opts.connect_timeout));
        conn.enforce_http(true);
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(opts.idle_timeout)
            .pool_max_idle_per_host(opts.max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .build(conn);
        HttpClient { inner }
    }

    /// Sends `req`; the whole exchange up to the response headers must finish
    /// within `timeout`.
    pub async fn send(
        &self,
        mut req: Request<Body>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, NetError> {
        if let Some(id) = current_request_id() {
            if let Ok(v) = HeaderValue::from_str(&id) {
                req.headers_mut().entry(REQUEST_ID_HEADER).or_insert(v);
            }
        }
        req.headers_mut()
            .entry(WIRE_HEADER)
            .or_insert(HeaderValue::from_static(WIRE_VERSION));
        match tokio::time::timeout(timeout, self.inner.request(req)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) if e.is_connect() => Err(NetError::Connect(e.to_string())),
            Ok(Err(e)) => Err(NetError::Transport(e.to_string())),
            Err(_) => Err(NetError::Timeout),
        }
    }

    /// POSTs `body` as JSON to `url` and decodes a JSON reply. A non-2xx
    /// reply becomes [`NetError::Status`] with the server's message.
    pub async fn post_json<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        url: &str,
        secret: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, NetError> {
        let bytes = serde_json::to_vec(body).map_err(|e| NetError::Decode(e.to_string()))?;
        let req = Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(SECRET_HEADER, secret)
            .body(full(bytes))
            .map_err(|e| NetError::Transport(e.to_string()))?;
        let resp = self.send(req, timeout).await?;
        let status = resp.status();
        let body = tokio::time::timeout(timeout, read_body(resp.into_body(), MAX_JSON_BODY))
            .await
            .map_err(|_| NetError::Timeout)??;
        if !status.is_success() {
            let err: ErrorBody = serde_json::from_slice(&body).unwrap_or_else(|_| ErrorBody {
                error: "Unknown".into(),
                message: String::from_utf8_lossy(&body).into_owned(),
                leader: None,
            });
            return Err(NetError::Status {
                status: status.as_u16(),
                error: err.error,
                message: err.message,
                leader: err.leader,
            });
        }
        serde_json::from_slice(&body).map_err(|e| NetError::Decode(e.to_string()))
    }
}

/// Largest JSON body any Cairn API accepts or reads: manifests of very large
/// objects and snapshot chunks fit; anything larger is a bug or an attack.
pub const MAX_JSON_BODY: usize = 64 << 20;

/// Extra bytes a Raft RPC body may hold beyond [`MAX_JSON_BODY`]: the
/// envelope (log id, vote, the leader's time stamp) around one entry that
/// holds a client write of the full limit.
pub const RAFT_ENVELOPE: usize = 1 << 20;

/// Transport-level failures, kept apart from application errors.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NetError {
    /// Could not connect: the peer is down or unreachable (nothing was
    /// sent, so any request may be retried elsewhere).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Sending or receiving failed.
    #[error("transport error: {0}")]
    Transport(String),
    /// No answer in time.
    #[error("request timed out")]
    Timeout,
    /// The body exceeded the size limit.
    #[error("body larger than {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// A reply could not be decoded.
    #[error("cannot decode reply: {0}")]
    Decode(String),
    /// The server answered with an error status.
    #[error("{status} {error}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Machine-readable error code.
        error: String,
        /// Human-readable message.
        message: String,
        /// Where the leader is, when the server knows and is not it.
        leader: Option<String>,
    },
}

/// Reads a whole body, refusing more than `limit` bytes.
pub async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, NetError>
where
    B: hyper::body::Body,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(NetError::TooLarge { limit })
            } else {
                Err(NetError::Transport(e.to_string()))
            }
        }
    }
}

/// The JSON shape of every error reply on Cairn's internal APIs.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `NoSuchBucket`.
    pub error: String,
    /// Human-readable message.
    pub message: String,
    /// The leader's API address, on a "not leader" error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

/// A JSON response with `status`.
pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        // Every reader refuses a body over the limit: say so instead of
        // sending what the other side cannot take.
        Ok(v) if v.len() > MAX_JSON_BODY => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ReplyTooLarge",
            &format!(
                "the reply would be {} bytes; the limit is {MAX_JSON_BODY}",
                v.len()
            ),
        ),
        Ok(v) => {
            let mut r = Response::new(full(v));
            *r.status_mut() = status;
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal",
            &format!("cannot encode reply: {e}"),
        ),
    }
}

/// A JSON error response.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    error_response_with_leader(status, code, message, None)
}

/// A JSON error response naming the leader.
pub fn error_response_with_leader(
    status: StatusCode,
    code: &str,
    message: &str,
    leader: Option<String>,
) -> Response<Body> {
    let body = ErrorBody {
        error: code.to_string(),
        message: message.to_string(),
        leader,
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut r = Response::new(full(bytes));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// True when `headers` carry `secret` in [`SECRET_HEADER`], compared in
/// constant time so the secret cannot be guessed byte by byte from timings.
pub fn has_secret(headers: &HeaderMap, secret: &str) -> bool {
    use subtle::ConstantTimeEq;
    match headers.get(SECRET_HEADER) {
        Some(v) => {
            let got = v.as_bytes();
            // ct_eq on slices of different lengths is false without leaking
            // where they differ.
            bool::from(got.ct_eq(secret.as_bytes()))
        }
        None => false,
    }
}

/// The reply to a request that lacks the cluster secret.
pub fn unauthorized() -> Response<Body> {
    error_response(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "missing or wrong cluster secret",
    )
}

/// Writes `addr` to `path` atomically (temp file + rename), so a test
/// harness polling the file never reads half an address.
pub fn write_addr_file(path: &std::path::Path, addr: &SocketAddr) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, addr.to_string())?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on port 0 answering 200 "ok"; its address and stop switch.
    async fn server() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(
            l,
            |_req, _peer| async { Response::new(full("ok")) },
            async move {
                let _ = rx.await;
            },
            ServerOptions::default(),
        ));
        (addr, tx)
    }

    #[tokio::test]
    async fn another_wire_version_is_refused_before_the_handler() {
        let (addr, _stop) = server().await;
        let client = HttpClient::default();
        let url = format!("http://{addr}/x");
        // The client sends version 1; no header at all is version 1 too.
        for req in [
            Request::get(&url).body(empty()).unwrap(),
            Request::get(&url)
                .header(WIRE_HEADER, "1")
                .body(empty())
                .unwrap(),
        ] {
            let r = client.send(req, Duration::from_secs(5)).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
        let req = Request::get(&url)
            .header(WIRE_HEADER, "2")
            .body(empty())
            .unwrap();
        let r = client.send(req, Duration::from_secs(5)).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body = read_body(r.into_body(), 1 << 16).await.unwrap();
        let e: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(e.error, "WireVersion");
        assert!(
            e.message.contains("version 1") && e.message.contains("\"2\""),
            "{}",
            e.message
        );
    }
}
