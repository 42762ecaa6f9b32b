//! The gateway's operations side: its metrics, its readiness probe, the
//! request id of each S3 request, and the byte-counting body wrapper.
//!
//! `GET /metrics`, `/health/live` and `/health/ready` are answered by the
//! gateway itself only when the request is unsigned: the exact path, GET or
//! HEAD, no query string and no `Authorization` header. Cairn serves no
//! anonymous S3 requests, so such a request could never have been a valid
//! S3 call (e.g. an object `live` in a bucket `health`); a signed request to
//! the same path is S3 as usual. `--metrics-listen` serves the three paths
//! on a separate address as well.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_chunkserver::metrics::{histogram_family, HistogramFamily, ShardClientMetrics};
use cairn_metadata::client::{Consistency, MetaClient, MetaClientError, MetaClientOptions};
use cairn_metadata::metrics::{labels, Labels, ProcessMetrics};
use cairn_metadata::types::Query;
use http::Request;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// The S3 operation of a request, filled in by the access check (s3s
/// names the operation there); requests refused before it stay
/// `unknown`.
#[derive(Clone, Default)]
pub struct OpSlot(Arc<OnceLock<String>>);

impl OpSlot {
    /// Records the operation name (the first call wins).
    pub fn set(&self, name: &str) {
        let _ = self.0.set(name.to_string());
    }

    /// The operation name, or `unknown`.
    pub fn get(&self) -> &str {
        self.0.get().map(String::as_str).unwrap_or("unknown")
    }
}

/// A fresh S3 request id: 16 uppercase hex digits, like S3's.
pub fn new_request_id() -> String {
    hex::encode_upper(rand::random::<[u8; 8]>())
}

/// True when `req` is an unsigned request for an operations endpoint (see
/// the module doc).
pub fn is_unsigned<B>(req: &Request<B>) -> bool {
    !req.headers().contains_key(http::header::AUTHORIZATION)
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct GatewayMetrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Process RSS and fds.
    pub process: ProcessMetrics,
    /// S3 requests by operation and HTTP status.
    pub requests: Family<Labels, Counter>,
    /// S3 latency to the response headers, by operation.
    pub duration: HistogramFamily,
    /// S3 requests being handled.
    pub in_flight: Gauge,
    /// Request body bytes received.
    pub received: Counter,
    /// Response body bytes sent.
    pub sent: Counter,
    /// Shard calls to chunkservers (the client library records them).
    pub shards: Arc<ShardClientMetrics>,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayMetrics {
    /// Builds and registers every metric.
    pub fn new() -> GatewayMetrics {
        let mut r = Registry::default();
        let process = ProcessMetrics::register(&mut r);
        let shards = Arc::new(ShardClientMetrics::register(&mut r));
        let m = GatewayMetrics {
            registry: Registry::default(),
            process,
            requests: Family::default(),
            duration: histogram_family(),
            in_flight: Gauge::default(),
            received: Counter::default(),
            sent: Counter::default(),
            shards,
        };
        r.register(
            "cairn_s3_requests",
            "S3 requests by operation and HTTP status",
            m.requests.clone(),
        );
        r.register_with_unit(
            "cairn_s3_request_duration",
            "S3 request latency to the response headers, by operation",
            Unit::Seconds,
            m.duration.clone(),
        );
        r.register(
            "cairn_s3_requests_in_flight",
            "S3 requests being handled",
            m.in_flight.clone(),
        );
        r.register_with_unit(
            "cairn_s3_received",
            "S3 request body bytes received",
            Unit::Bytes,
            m.received.clone(),
        );
        r.register_with_unit(
            "cairn_s3_sent",
            "S3 response body bytes sent",
            Unit::Bytes,
            m.sent.clone(),
        );
        GatewayMetrics { registry: r, ..m }
    }

    /// Counts one finished S3 request.
    pub fn record(&self, op: &str, status: http::StatusCode, started: Instant) {
        self.requests
            .get_or_create(&labels([("op", op), ("status", status.as_str())]))
            .inc();
        self.duration
            .get_or_create(&labels([("op", op)]))
            .observe(started.elapsed().as_secs_f64());
    }
}

/// How long the readiness probe waits for the metadata leader.
const READY_DEADLINE: Duration = Duration::from_secs(2);

/// The readiness probe: a linearizable read (answered only by a leader
/// that still has a quorum) through a metadata client of its own with a
/// short deadline.
pub struct ReadyProbe {
    meta: MetaClient,
}

impl ReadyProbe {
    /// A probe of the metadata service at `addrs`.
    pub fn new(addrs: Vec<String>, secret: String) -> ReadyProbe {
        ReadyProbe {
            meta: MetaClient::new(
                addrs,
                secret,
                MetaClientOptions {
                    request_timeout: Duration::from_secs(1),
                    retry_deadline: READY_DEADLINE,
                    ..Default::default()
                },
            ),
        }
    }

    /// Ready when a metadata leader answers.
    pub async fn check(&self) -> Result<(), String> {
        let q = Query::GetBucket {
            name: String::new(),
        };
        match self.meta.query(&q, Consistency::Linearizable).await {
            Ok(_) | Err(MetaClientError::Refused(_)) => Ok(()),
            Err(e) => Err(format!("no metadata leader reachable: {e}")),
        }
    }
}

/// A body that counts the data bytes passing through into a counter and
/// forwards everything else (size hints included) untouched.
pub struct Counted<B> {
    inner: B,
    counter: Counter,
}

impl<B> Counted<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, counter: Counter) -> Self {
        Counted { inner, counter }
    }
}

impl<B> http_body::Body for Counted<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                self.counter.inc_by(d.len() as u64);
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
