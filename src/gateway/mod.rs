//! `cairn gateway`: the S3 API over a Cairn cluster. Stateless: it holds a
//! client handle and caches, so run as many as you like behind a balancer.
//!
//! # Layout
//! - this file: flags, the composition root, the HTTP server (the shared
//!   `net::serve` loop: TCP_NODELAY, connection cap, graceful drain) and
//!   virtual-host parsing.
//! - [`s3`]: the S3 operations (s3s parses requests and writes XML).
//! - [`auth`]: SigV4 secrets and per-bucket grants from the `keys` table.
//! - [`body`]: streaming bodies, checksum verification before commit.
//! - [`cors`]: CORS preflight (`OPTIONS`) answers and `Access-Control-*`
//!   headers from the bucket's rules, before and after s3s.
//! - [`error`]: client errors -> S3 error codes.
//! - [`hygiene`]: refusals before s3s (SigV2, presigned lifetime), body
//!   read timeout, per-key stripe share and request rate.
//! - [`ops`]: metrics, readiness, request ids (`/metrics`, `/health/*`).
//! - [`tls`]: HTTPS (rustls), certificate reload, `--plain-http`.
//!
//! Memory is bounded: bodies stream through the client's stripe pipeline
//! (a few stripes in flight per request), never buffered whole.

pub mod auth;
pub mod body;
pub mod cors;
pub mod error;
pub mod hygiene;
pub mod mpu_checksum;
pub mod ops;
pub mod s3;
pub mod tls;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use cairn_client::{Client, ClientConfig};
use cairn_metadata::metrics::{ops_endpoint, OpsEndpoint};
use cairn_metadata::net::{self, ServerOptions};
use http_body_util::BodyExt;
use s3s::host::{S3Host, VirtualHost};
use s3s::service::S3ServiceBuilder;
use s3s::S3Result;
use tokio::net::TcpListener;

/// Options of `cairn gateway`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on; port 0 picks a free port (see --addr-file).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7900")]
    pub listen: String,
    /// Metadata service addresses (`host:port`, comma-separated).
    #[arg(
        long,
        value_name = "ADDRS",
        value_delimiter = ',',
        env = "CAIRN_METADATA",
        required = true
    )]
    pub metadata: Vec<String>,
    /// The cluster secret (`--secret-file` or `--secret`).
    #[command(flatten)]
    pub secret: crate::cmd::secret::SecretArgs,
    /// Domain for virtual-host-style requests (`bucket.DOMAIN`); without
    /// it only path-style requests are understood.
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Write the bound address to this file once listening.
    #[arg(long, value_name = "PATH")]
    pub addr_file: Option<PathBuf>,
    /// Connections served at once.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Stripes being written at once over all uploads. Each costs about
    /// 2.5 stripe sizes (input, k+m shards): the default 12 keeps a
    /// default-layout (4 MiB stripes) gateway near 128 MiB of upload
    /// buffers however many clients upload in parallel.
    #[arg(long, default_value_t = 12)]
    pub max_stripes_in_flight: usize,
    /// Fraction of --max-stripes-in-flight one access key may hold at once
    /// (at least one stripe), so one key's uploads, slow or not, cannot
    /// take every stripe permit.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.5)]
    pub key_stripe_share: f64,
    /// Requests per second one access key may make (token bucket, burst
    /// of as many); over it: 503 SlowDown. 0: unlimited.
    #[arg(long, value_name = "PER_SEC", default_value_t = 0.0)]
    pub key_rate_limit: f64,
    /// A request body that sends nothing for this long is cut with 400
    /// RequestTimeout (e.g. `30s`).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::cmd::bench::parse_duration)]
    pub body_read_timeout: std::time::Duration,
    /// Accept requests signed with AWS Signature Version 2 (deprecated;
    /// no clock-skew check on signed headers, replayable). Refused by
    /// default with 403 AccessDenied.
    #[arg(long)]
    pub allow_sigv2: bool,
    /// Also serve `/metrics`, `/health/live` and `/health/ready` on this
    /// address (they are always on --listen for unsigned GETs).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// HTTPS (or, on purpose, plain HTTP).
    #[command(flatten)]
    pub tls: tls::TlsArgs,
}

/// Virtual-host parsing: `bucket.DOMAIN[:port]` names a bucket; any other
/// host (an IP address, `localhost`, the bare domain) is path-style.
/// s3s's `SingleDomain` would take `127.0.0.1:7900` for a bucket name.
pub struct Hosts {
    domain: Option<String>,
}

impl S3Host for Hosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        let bare = match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        };
        if let Some(d) = &self.domain {
            if let Some(bucket) = bare
                .strip_suffix(d.as_str())
                .and_then(|b| b.strip_suffix('.'))
                .filter(|b| !b.is_empty())
            {
                return Ok(VirtualHost::new(d.as_str()).with_bucket(bucket));
            }
        }
        Ok(VirtualHost::new(bare))
    }
}

/// The gateway's composition root.
pub struct Gateway {
    service: s3s::service::S3Service,
    cors: Arc<cors::Cors>,
    policy: Arc<hygiene::Policy>,
    metrics: Arc<ops::GatewayMetrics>,
    probe: Arc<ops::ReadyProbe>,
}

/// The operations endpoints' share of the gateway (cheap to clone).
#[derive(Clone)]
pub struct OpsHandle {
    metrics: Arc<ops::GatewayMetrics>,
    probe: Arc<ops::ReadyProbe>,
}

impl OpsHandle {
    /// Answers an operations endpoint.
    pub async fn reply(&self, ep: OpsEndpoint) -> http::Response<net::Body> {
        match ep {
            OpsEndpoint::Metrics => {
                self.metrics.process.refresh();
                cairn_metadata::metrics::encode(&self.metrics.registry)
            }
            OpsEndpoint::Live => cairn_metadata::metrics::live(),
            OpsEndpoint::Ready => cairn_metadata::metrics::ready(self.probe.check().await),
        }
    }
}

impl Gateway {
    /// Builds the S3 service over `client`; `metrics` must be the ones the
    /// client's `shard_metrics` come from.
    pub fn new(
        client: Client,
        domain: Option<String>,
        metrics: Arc<ops::GatewayMetrics>,
        probe: ops::ReadyProbe,
        policy: hygiene::Policy,
        limits: hygiene::KeyLimits,
    ) -> Gateway {
        let keys = Arc::new(auth::KeyStore::new(client.clone()));
        let domain = domain.map(|d| d.trim_matches('.').to_ascii_lowercase());
        let cors = Arc::new(cors::Cors::new(
            client.clone(),
            Arc::new(Hosts {
                domain: domain.clone(),
            }),
        ));
        let shard_size = cairn_chunkserver::codec::DEFAULT_SHARD_SIZE as u32;
        let mut b = S3ServiceBuilder::new(s3::CairnS3::new(client, keys.clone(), shard_size));
        b.set_auth(auth::Auth(keys.clone()));
        b.set_access(auth::Access(keys, Arc::new(limits)));
        b.set_host(Hosts { domain });
        Gateway {
            service: b.build(),
            cors,
            policy: Arc::new(policy),
            metrics,
            probe: Arc::new(probe),
        }
    }

    /// The operations endpoints, e.g. for a separate `--metrics-listen`.
    pub fn ops(&self) -> OpsHandle {
        OpsHandle {
            metrics: self.metrics.clone(),
            probe: self.probe.clone(),
        }
    }

    /// Serves S3 on `listener` until `shutdown` resolves: over TLS when
    /// `tls` holds an acceptor and a handshake timeout, else plain HTTP.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
        opts: ServerOptions,
        tls: Option<(tokio_rustls::TlsAcceptor, std::time::Duration)>,
    ) {
        let ops_handle = self.ops();
        let service = self.service;
        let metrics = self.metrics;
        let policy = self.policy;
        let cors = self.cors;
        let handler = move |req: http::Request<hyper::body::Incoming>, _peer| {
            let service = service.clone();
            let metrics = metrics.clone();
            let ops_handle = ops_handle.clone();
            let policy = policy.clone();
            let cors = cors.clone();
            async move {
                if let Some(ep) = ops_endpoint(&req).filter(|_| ops::is_unsigned(&req)) {
                    return ops_handle.reply(ep).await;
                }
                let started = std::time::Instant::now();
                if let Some(resp) = cors.preflight(&req).await {
                    metrics.record("PreflightCors", resp.status(), started);
                    return resp.map(net::full);
                }
                let origin = cors.origin_of(&req);
                if let Some(resp) = hygiene::precheck(&req, &policy) {
                    metrics.record("", resp.status(), started);
                    return resp.map(net::full);
                }
                let request_id = ops::new_request_id();
                let op = ops::OpSlot::default();
                let share = cairn_client::ShareSlot::default();
                let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let span = tracing::info_span!("s3", request_id = %request_id);
                let mut req = req.map(|b| {
                    s3s::Body::http_body_unsync(hygiene::IdleBody::new(
                        ops::Counted::new(b, metrics.received.clone()),
                        policy.body_read_timeout,
                        cut.clone(),
                    ))
                });
                req.extensions_mut().insert(op.clone());
                req.extensions_mut().insert(share.clone());
                metrics.in_flight.inc();
                let call = net::with_request_id(Some(request_id.clone()), service.call(req));
                let call = cairn_client::STRIPE_SHARE.scope(share, call);
                let res = tracing::Instrument::instrument(call, span.clone()).await;
                metrics.in_flight.dec();
                let res = if cut.load(std::sync::atomic::Ordering::Relaxed) {
                    // Whatever the operation made of its failed read,
                    // the client is told its body stalled.
                    span.in_scope(|| tracing::info!("request body idle: cut"));
                    let mut r = hygiene::s3_error_response(
                            http::StatusCode::BAD_REQUEST,
                            "RequestTimeout",
                            "Your socket connection to the server was not read from or written to within the timeout period (--body-read-timeout); nothing was stored",
                        );
                    r.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                    Ok(r.map(s3s::Body::from))
                } else {
                    res
                };
                let mut resp = match res {
                    Ok(resp) => {
                        let sent = metrics.sent.clone();
                        resp.map(|b| ops::Counted::new(b, sent).boxed_unsync())
                    }
                    Err(e) => {
                        span.in_scope(|| tracing::warn!(error = ?e, "S3 request failed"));
                        net::error_response(
                            http::StatusCode::INTERNAL_SERVER_ERROR,
                            "InternalError",
                            "internal error",
                        )
                    }
                };
                if let Ok(v) = http::HeaderValue::from_str(&request_id) {
                    resp.headers_mut().entry("x-amz-request-id").or_insert(v);
                }
                if let Some(o) = &origin {
                    cors.decorate(o, resp.headers_mut()).await;
                }
                metrics.record(op.get(), resp.status(), started);
                resp
            }
        };
        match tls {
            None => net::serve(listener, handler, shutdown, opts).await,
            Some((acceptor, timeout)) => {
                let wrap = tls::handshake(acceptor, timeout);
                net::serve_with(listener, wrap, handler, shutdown, opts).await
            }
        }
    }
}

/// glibc gives threads that allocate their own malloc arenas (up to 8 per
/// core) and keeps freed stripe buffers in them: with uploads spread over
/// every worker thread, peak RSS reached 270 MiB for a 1 GiB multipart
/// upload, 150 MiB with 2 arenas. Call before the runtime starts threads.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; it is called from main
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Runs a gateway until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<()> {
    // TLS first: a gateway that would serve plain HTTP by accident, or
    // whose certificate does not load, stops before anything else.
    let (workers, stop_workers) = cairn_metadata::worker::WorkerRunner::new();
    let acceptor = match args.tls.mode()? {
        tls::Mode::Plain => {
            tracing::warn!("serving plain HTTP (--plain-http): S3 traffic is not encrypted");
            None
        }
        tls::Mode::Tls { cert, key } => {
            let store = Arc::new(tls::CertStore::open(&cert, &key)?);
            workers.spawn(tls::Reloader::new(store.clone())?);
            let cfg = tls::server_config(store)?;
            Some((
                tokio_rustls::TlsAcceptor::from(cfg),
                args.tls.tls_handshake_timeout,
            ))
        }
    };
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let secret = args
        .secret
        .require_for(cairn_metadata::auth::Role::Gateway)?;
    let metrics = Arc::new(ops::GatewayMetrics::new());
    let probe = ops::ReadyProbe::new(args.metadata.clone(), secret.clone());
    let mut cfg = ClientConfig::new(args.metadata.clone(), secret);
    cfg.shard_metrics = Some(metrics.shards.clone());
    cfg.stripe_budget = Some(Arc::new(tokio::sync::Semaphore::new(
        args.max_stripes_in_flight.max(1),
    )));
    let client = Client::new(cfg);
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    if let Some(path) = &args.addr_file {
        net::write_addr_file(path, &addr)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    tracing::info!(%addr, scheme, domain = ?args.domain, "S3 gateway listening");
    let opts = ServerOptions {
        max_connections: args.max_connections.max(1),
        ..ServerOptions::default()
    };
    anyhow::ensure!(
        args.key_stripe_share > 0.0 && args.key_stripe_share <= 1.0,
        "--key-stripe-share must be in (0, 1]"
    );
    anyhow::ensure!(
        args.key_rate_limit >= 0.0 && args.key_rate_limit.is_finite(),
        "--key-rate-limit must be 0 (off) or a positive rate"
    );
    let limits = hygiene::KeyLimits::new(
        args.max_stripes_in_flight.max(1),
        args.key_stripe_share,
        args.key_rate_limit,
    );
    tracing::info!(
        stripes = args.max_stripes_in_flight.max(1),
        per_key = limits.share(),
        rate = args.key_rate_limit,
        body_read_timeout = ?args.body_read_timeout,
        allow_sigv2 = args.allow_sigv2,
        "request hygiene"
    );
    let policy = hygiene::Policy {
        allow_sigv2: args.allow_sigv2,
        body_read_timeout: args.body_read_timeout,
    };
    let gw = Gateway::new(client, args.domain, metrics, probe, policy, limits);
    if let Some(m) = &args.metrics_listen {
        let l = TcpListener::bind(m)
            .await
            .with_context(|| format!("cannot listen on {m}"))?;
        tracing::info!(addr = %l.local_addr().context("cannot read the bound address")?, "metrics listening");
        let h = gw.ops();
        tokio::spawn(net::serve(
            l,
            move |req, _peer| {
                let h = h.clone();
                async move {
                    match ops_endpoint(&req) {
                        Some(ep) => h.reply(ep).await,
                        None => net::error_response(
                            http::StatusCode::NOT_FOUND,
                            "NotFound",
                            "only /metrics, /health/live and /health/ready here",
                        ),
                    }
                }
            },
            crate::cmd::shutdown_signal(),
            ServerOptions::default(),
        ));
    }
    gw.serve(listener, crate::cmd::shutdown_signal(), opts, acceptor)
        .await;
    stop_workers.stop(std::time::Duration::from_secs(1)).await;
    tracing::info!("S3 gateway stopped");
    Ok(())
}
