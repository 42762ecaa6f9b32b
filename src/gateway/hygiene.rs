//! Request hygiene in front of s3s: what a bad or old client may not do.
//!
//! - [`precheck`] (before s3s sees the request, so no secret is looked up):
//!   SigV2 (header `Authorization: AWS id:sig` or a presigned `Signature=`
//!   URL) is refused with 403 AccessDenied unless `--allow-sigv2`; s3s
//!   accepts it, but with no clock-skew check on signed headers and a
//!   non-constant-time comparison. A presigned SigV4 URL whose
//!   `X-Amz-Expires` is over [`MAX_PRESIGNED_EXPIRES`] is refused with 400
//!   AuthorizationQueryParametersError, as S3 does. (s3s itself refuses
//!   a SigV4 request more than 15 minutes off with RequestTimeTooSkewed, an
//!   expired presigned URL with AccessDenied, and compares SigV4 signatures
//!   in constant time.)
//! - [`IdleBody`]: a request body that sends nothing for `--body-read-timeout`
//!   fails, and the request is answered 400 RequestTimeout.
//! - [`KeyLimits`]: per verified access key, a share of the stripe budget
//!   (`--key-stripe-share`, handed to the client's write path through
//!   [`cairn_client::STRIPE_SHARE`]) and a token-bucket request rate
//!   (`--key-rate-limit`, 503 SlowDown when exceeded).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Semaphore;

/// S3's longest presigned URL lifetime: 7 days, in seconds.
pub const MAX_PRESIGNED_EXPIRES: u64 = 604_800;

/// At most this many access keys get their own limiter state; past it the
/// table is emptied (only verified keys are entered, so only a cluster with
/// that many active keys gets there, and a reset only forgives a little).
const MAX_KEYS: usize = 10_000;

/// Hygiene settings (gateway flags).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Accept SigV2-signed requests (`--allow-sigv2`).
    pub allow_sigv2: bool,
    /// A request body idle for this long is cut (`--body-read-timeout`).
    pub body_read_timeout: Duration,
}

/// An S3 XML error response, for refusals made before s3s runs.
pub fn s3_error_response(
    status: http::StatusCode,
    code: &str,
    message: &str,
) -> http::Response<Bytes> {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message></Error>",
        esc(code),
        esc(message)
    );
    let mut r = http::Response::new(Bytes::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    r
}

fn query_params(uri: &http::Uri) -> impl Iterator<Item = (&str, &str)> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
}

/// Whether the request is signed with SigV2 (header or presigned URL).
pub fn is_sigv2<B>(req: &http::Request<B>) -> bool {
    let header = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS ") && !v.starts_with("AWS4-"));
    header || query_params(req.uri()).any(|(k, _)| k == "Signature" || k == "AWSAccessKeyId")
}

/// The refusal of a request s3s must not see, if any.
pub fn precheck<B>(req: &http::Request<B>, policy: &Policy) -> Option<http::Response<Bytes>> {
    if !policy.allow_sigv2 && is_sigv2(req) {
        return Some(s3_error_response(
            http::StatusCode::FORBIDDEN,
            "AccessDenied",
            "Signature Version 2 is refused by this gateway (deprecated, replayable); \
             sign with AWS Signature Version 4, or start the gateway with --allow-sigv2",
        ));
    }
    for (k, v) in query_params(req.uri()) {
        if k.eq_ignore_ascii_case("X-Amz-Expires") {
            match v.parse::<u64>() {
                Ok(s) if s <= MAX_PRESIGNED_EXPIRES => {}
                Ok(_) => {
                    return Some(s3_error_response(
                        http::StatusCode::BAD_REQUEST,
                        "AuthorizationQueryParametersError",
                        "X-Amz-Expires must be less than a week (in seconds) that is 604800",
                    ))
                }
                Err(_) => {
                    return Some(s3_error_response(
                        http::StatusCode::BAD_REQUEST,
                        "AuthorizationQueryParametersError",
                        "X-Amz-Expires should be a number",
                    ))
                }
            }
        }
    }
    None
}

/// A request body that fails when it sends nothing for `timeout`; `cut`
/// records that it did, so the response becomes 400 RequestTimeout.
pub struct IdleBody<B> {
    inner: B,
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    cut: Arc<AtomicBool>,
}

impl<B> IdleBody<B> {
    /// Wraps `inner`; `cut` is set when the timeout fires.
    pub fn new(inner: B, timeout: Duration, cut: Arc<AtomicBool>) -> Self {
        IdleBody {
            inner,
            timeout,
            sleep: None,
            cut,
        }
    }
}

/// The error of a body cut by [`IdleBody`].
#[derive(Debug)]
pub struct BodyTimeout(Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body sent nothing for {:?} (--body-read-timeout)",
            self.0
        )
    }
}

impl std::error::Error for BodyTimeout {}

impl<B> http_body::Body for IdleBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                this.sleep = None;
                Poll::Ready(r.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.sleep = None;
                        this.cut.store(true, Ordering::Relaxed);
                        Poll::Ready(Some(Err(Box::new(BodyTimeout(timeout)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Per-key limits: a share of the stripe budget and a request rate.
pub struct KeyLimits {
    share: usize,
    rate: f64,
    state: Mutex<HashMap<String, KeyState>>,
}

struct KeyState {
    stripes: Arc<Semaphore>,
    tokens: f64,
    refilled: Instant,
}

impl KeyLimits {
    /// `budget` stripes over the gateway, of which one key may hold
    /// `fraction` (at least 1); `rate` requests per second per key, with a
    /// burst of as many (0: unlimited).
    pub fn new(budget: usize, fraction: f64, rate: f64) -> Self {
        let share = ((budget.max(1) as f64) * fraction.clamp(0.0, 1.0)).ceil() as usize;
        KeyLimits {
            share: share.clamp(1, budget.max(1)),
            rate: rate.max(0.0),
            state: Mutex::default(),
        }
    }

    /// The stripes one key may hold at once.
    pub fn share(&self) -> usize {
        self.share
    }

    /// Admits one request of the verified key `id`: its stripe-share
    /// semaphore, or `None` if it is over its rate (SlowDown).
    pub fn admit(&self, id: &str) -> Option<Arc<Semaphore>> {
        let now = Instant::now();
        let Ok(mut g) = self.state.lock() else {
            // A poisoned table only loses limiting, never a request.
            return Some(Arc::new(Semaphore::new(self.share)));
        };
        if g.len() >= MAX_KEYS && !g.contains_key(id) {
            g.clear();
        }
        let s = g.entry(id.to_string()).or_insert_with(|| KeyState {
            stripes: Arc::new(Semaphore::new(self.share)),
            tokens: self.rate,
            refilled: now,
        });
        if self.rate > 0.0 {
            let dt = now.duration_since(s.refilled).as_secs_f64();
            s.tokens = (s.tokens + dt * self.rate).min(self.rate.max(1.0));
            s.refilled = now;
            if s.tokens < 1.0 {
                return None;
            }
            s.tokens -= 1.0;
        }
        Some(s.stripes.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn req(uri: &str, auth: Option<&str>) -> http::Request<()> {
        let mut b = http::Request::builder().uri(uri);
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(()).unwrap()
    }

    const POLICY: Policy = Policy {
        allow_sigv2: false,
        body_read_timeout: Duration::from_secs(30),
    };

    #[test]
    fn sigv2_is_refused_unless_allowed() {
        let v2 = req("/b/k", Some("AWS AKID:c2lnbmF0dXJl"));
        assert_eq!(
            precheck(&v2, &POLICY).map(|r| r.status()),
            Some(http::StatusCode::FORBIDDEN)
        );
        let v2q = req("/b/k?AWSAccessKeyId=A&Expires=1&Signature=x", None);
        assert!(precheck(&v2q, &POLICY).is_some());
        let allow = Policy {
            allow_sigv2: true,
            ..POLICY
        };
        assert!(precheck(&v2, &allow).is_none());
        let v4 = req(
            "/b/k",
            Some("AWS4-HMAC-SHA256 Credential=A/2026/us-east-1/s3/aws4_request"),
        );
        assert!(precheck(&v4, &POLICY).is_none());
    }

    #[test]
    fn presigned_lifetime_is_capped_at_a_week() {
        let ok = req("/b/k?X-Amz-Expires=604800&X-Amz-Signature=x", None);
        assert!(precheck(&ok, &POLICY).is_none());
        for q in [
            "X-Amz-Expires=604801",
            "X-Amz-Expires=99999999999",
            "x-amz-expires=-1",
        ] {
            let r = req(&format!("/b/k?{q}&X-Amz-Signature=x"), None);
            assert_eq!(
                precheck(&r, &POLICY).map(|r| r.status()),
                Some(http::StatusCode::BAD_REQUEST),
                "{q}"
            );
        }
    }

    #[test]
    fn key_rate_is_a_token_bucket() {
        let l = KeyLimits::new(12, 0.5, 2.0);
        assert_eq!(l.share(), 6);
        assert!(l.admit("a").is_some());
        assert!(l.admit("a").is_some());
        assert!(l.admit("a").is_none(), "burst of 2 exceeded");
        assert!(l.admit("b").is_some(), "another key has its own bucket");
        let off = KeyLimits::new(12, 0.5, 0.0);
        for _ in 0..1000 {
            assert!(off.admit("a").is_some());
        }
        assert_eq!(KeyLimits::new(12, 0.0, 0.0).share(), 1);
        assert_eq!(KeyLimits::new(12, 5.0, 0.0).share(), 12);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_body_is_cut() {
        let (mut tx, rx) =
            futures::channel::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(1);
        let inner = http_body_util::StreamBody::new(rx);
        let cut = Arc::new(AtomicBool::new(false));
        let mut b = IdleBody::new(inner, Duration::from_secs(30), cut.clone());
        futures::SinkExt::send(
            &mut tx,
            Ok(http_body::Frame::data(Bytes::from_static(b"x"))),
        )
        .await
        .unwrap();
        assert!(b.frame().await.unwrap().is_ok());
        tokio::time::advance(Duration::from_secs(29)).await;
        let t = tokio::time::Instant::now();
        assert!(b.frame().await.unwrap().is_err());
        assert!(t.elapsed() >= Duration::from_secs(30));
        assert!(cut.load(Ordering::Relaxed));
    }
}
