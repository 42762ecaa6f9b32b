//! CORS on requests, before s3s (which does not route `OPTIONS`): a
//! browser's preflight `OPTIONS /bucket/key` is answered here, without a
//! signature as on S3, and any other request that carries `Origin` gets
//! the `Access-Control-*` headers of the first bucket rule that allows it
//! (`CorsRule::allows`). The rules are the bucket's CORS configuration
//! (`PutBucketCors`), cached per bucket for [`CACHE_TTL`]: a change is
//! seen by every gateway within that time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_client::{Client, ClientError};
use cairn_metadata::client::Consistency;
use cairn_metadata::types::CorsRule;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use s3s::host::S3Host;

use super::hygiene::s3_error_response;
use super::Hosts;

/// How long a bucket's rules are reused: short, so a changed (or
/// deleted) configuration applies within seconds on every gateway, long
/// enough that a page's burst of requests costs one metadata read.
pub const CACHE_TTL: Duration = Duration::from_secs(2);

/// Buckets cached at once; past it the cache starts over (a bound, not
/// an LRU: the rows are refetched within [`CACHE_TTL`] anyway).
pub const CACHE_MAX: usize = 1024;

/// Most headers one preflight may ask for: more is refused, not matched.
const MAX_REQUEST_HEADERS: usize = 100;

/// S3's answer to a refused CORS request.
const REFUSED: &str = "CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.";

type Rules = Arc<Vec<CorsRule>>;

/// The CORS layer: the client it reads rules with and their cache.
pub struct Cors {
    client: Client,
    hosts: Arc<Hosts>,
    cache: Mutex<HashMap<String, (Instant, Rules)>>,
}

/// What [`Cors::decorate`] needs of a request that carried `Origin`.
pub struct Origin {
    bucket: String,
    origin: String,
    method: String,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn set(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(HeaderName::from_static(name), v);
    }
}

impl Cors {
    /// A layer reading rules through `client`; `hosts` finds the bucket of
    /// virtual-host-style requests.
    pub fn new(client: Client, hosts: Arc<Hosts>) -> Cors {
        Cors {
            client,
            hosts,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The bucket a request names (virtual host, else the first path
    /// segment), if any.
    fn bucket<B>(&self, req: &http::Request<B>) -> Option<String> {
        let host = header(req.headers(), "host").or_else(|| req.uri().host());
        if let Some(h) = host {
            if let Ok(vh) = self.hosts.parse_host_header(h) {
                if let Some(b) = vh.bucket() {
                    return Some(b.to_string());
                }
            }
        }
        let seg = req.uri().path().trim_start_matches('/').split('/').next()?;
        (!seg.is_empty()).then(|| seg.to_string())
    }

    /// The bucket's rules (empty: none, or no such bucket), cached.
    async fn rules(&self, bucket: &str) -> Result<Rules, ClientError> {
        if let Ok(m) = self.cache.lock() {
            if let Some((at, r)) = m.get(bucket) {
                if at.elapsed() < CACHE_TTL {
                    return Ok(r.clone());
                }
            }
        }
        let rules = match self
            .client
            .bucket_cors(bucket, Consistency::Linearizable)
            .await
        {
            Ok(r) => Arc::new(r),
            Err(ClientError::NoSuchBucket(_)) => Arc::new(Vec::new()),
            Err(e) => return Err(e),
        };
        if let Ok(mut m) = self.cache.lock() {
            if m.len() >= CACHE_MAX {
                m.clear();
            }
            m.insert(bucket.to_string(), (Instant::now(), rules.clone()));
        }
        Ok(rules)
    }

    /// Answers a preflight (`OPTIONS`) request; `None` for any other
    /// method.
    pub async fn preflight<B>(&self, req: &http::Request<B>) -> Option<http::Response<Bytes>> {
        if req.method() != Method::OPTIONS {
            return None;
        }
        let bad = |m: &str| s3_error_response(StatusCode::BAD_REQUEST, "BadRequest", m);
        let h = req.headers();
        let Some(origin) = header(h, "origin") else {
            return Some(bad(
                "Insufficient information. Origin request header needed.",
            ));
        };
        let Some(method) = header(h, "access-control-request-method") else {
            return Some(bad("Invalid Access-Control-Request-Method: null"));
        };
        let Some(bucket) = self.bucket(req) else {
            return Some(bad("A CORS preflight request names a bucket"));
        };
        let asked: Vec<String> = header(h, "access-control-request-headers")
            .unwrap_or("")
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        let refused = || s3_error_response(StatusCode::FORBIDDEN, "AccessForbidden", REFUSED);
        if asked.len() > MAX_REQUEST_HEADERS {
            return Some(refused());
        }
        let rules = match self.rules(&bucket).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%bucket, error = %e, "cannot read the CORS rules");
                return Some(s3_error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "the bucket's CORS configuration cannot be read now; retry",
                ));
            }
        };
        let names: Vec<&str> = asked.iter().map(String::as_str).collect();
        let Some(rule) = rules.iter().find(|r| r.allows(origin, method, &names)) else {
            return Some(refused());
        };
        let mut resp = http::Response::new(Bytes::new());
        let hm = resp.headers_mut();
        allow(hm, rule, origin);
        if !asked.is_empty() {
            set(hm, "access-control-allow-headers", &asked.join(", "));
        }
        set(
            hm,
            "vary",
            "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
        );
        Some(resp)
    }

    /// What a non-preflight request needs for [`Cors::decorate`]: `None`
    /// when it carries no `Origin` or names no bucket.
    pub fn origin_of<B>(&self, req: &http::Request<B>) -> Option<Origin> {
        let origin = header(req.headers(), "origin")?.to_string();
        Some(Origin {
            bucket: self.bucket(req)?,
            origin,
            method: req.method().as_str().to_string(),
        })
    }

    /// Adds the `Access-Control-*` headers of the first rule allowing the
    /// request (none when no rule does: the browser then hides the
    /// response from the script).
    pub async fn decorate(&self, o: &Origin, headers: &mut HeaderMap) {
        let rules = match self.rules(&o.bucket).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(bucket = %o.bucket, error = %e, "cannot read the CORS rules");
                return;
            }
        };
        if let Some(rule) = rules.iter().find(|r| r.allows(&o.origin, &o.method, &[])) {
            allow(headers, rule, &o.origin);
            set(headers, "vary", "Origin");
        }
    }
}

/// The headers S3 answers for `rule` allowing `origin`.
fn allow(h: &mut HeaderMap, rule: &CorsRule, origin: &str) {
    if rule.any_origin() {
        set(h, "access-control-allow-origin", "*");
    } else {
        set(h, "access-control-allow-origin", origin);
        set(h, "access-control-allow-credentials", "true");
    }
    set(
        h,
        "access-control-allow-methods",
        &rule.allowed_methods.join(", "),
    );
    if !rule.expose_headers.is_empty() {
        set(
            h,
            "access-control-expose-headers",
            &rule.expose_headers.join(", "),
        );
    }
    if let Some(age) = rule.max_age_seconds {
        set(h, "access-control-max-age", &age.to_string());
    }
}
