//! The S3 driver of `cairn bench`: plain S3 REST calls, path-style, signed
//! with the `aws-sigv4` crate (never by hand), sent over Cairn's pooled
//! hyper client (`metadata::net::HttpClient`: `TCP_NODELAY`, keep-alive
//! pool). It speaks only what a load generator needs (CreateBucket,
//! DeleteBucket, PutObject, GetObject, DeleteObject), so it works against
//! any S3 endpoint, e.g. another S3 server run for comparison. An
//! `https://` endpoint is reached with rustls (ring) through
//! `hyper-rustls`, trusting only the CA bundle given with `--ca-file`
//! (`TCP_NODELAY`, the same pool settings).
//!
//! Payloads are sent as `UNSIGNED-PAYLOAD` (hashing 64 MiB with SHA-256 per
//! request would measure the driver, not the server). A PUT body is a
//! `Bytes` slice of one shared random buffer: nothing is copied per request.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use cairn_metadata::net::{self, ClientOptions, HttpClient, NetError};
use cairn_metadata::types::EcParams;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::load::OpError;

/// Largest error body read (S3 error XML is a few hundred bytes).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Header that chooses a new bucket's erasure coding on a Cairn gateway
/// (`gateway::s3::EC_HEADER`); other servers ignore it.
const EC_HEADER: &str = "x-cairn-ec";

/// The HTTPS client: hyper's pooled client over a rustls connector.
type TlsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    net::Body,
>;

/// How requests travel.
enum Transport {
    /// Plain HTTP on Cairn's client.
    Plain(HttpClient),
    /// HTTPS.
    Tls(TlsClient),
}

/// An error with its causes (hyper's legacy client hides the TLS error
/// in its source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Largest CA bundle read.
const MAX_CA_FILE: u64 = 1 << 20;

/// The HTTPS client trusting only the certificates in `ca_file`.
fn tls_client(ca_file: &std::path::Path, connections: usize) -> anyhow::Result<TlsClient> {
    use anyhow::Context;
    use rustls::pki_types::pem::PemObject;
    use std::io::Read;
    let mut pem = Vec::new();
    std::fs::File::open(ca_file)
        .and_then(|f| f.take(MAX_CA_FILE).read_to_end(&mut pem))
        .with_context(|| format!("cannot read --ca-file {}", ca_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| anyhow::anyhow!("bad PEM in {}: {e}", ca_file.display()))?;
        roots
            .add(c)
            .with_context(|| format!("bad CA certificate in {}", ca_file.display()))?;
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "no certificate in --ca-file {}",
        ca_file.display()
    );
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("cannot configure TLS")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let opts = ClientOptions::default();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(opts.connect_timeout));
    http.enforce_http(false);
    let conn = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(opts.idle_timeout)
            .pool_max_idle_per_host(connections.max(32))
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(conn),
    )
}

/// An S3 endpoint with credentials.
pub struct S3Target {
    http: Transport,
    /// `http[s]://host[:port]` without a trailing slash.
    base: String,
    /// The authority, sent as `Host` and signed.
    host: String,
    identity: Identity,
    region: String,
    timeout: Duration,
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Target")
            .field("base", &self.base)
            .field("region", &self.region)
            .finish()
    }
}

/// Percent-encodes a key for the request path, as S3 expects (every byte
/// but unreserved characters and `/`).
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `<Code>` of an S3 error document, if there is one.
pub fn error_code(body: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(body).ok()?;
    let start = s.find("<Code>")? + "<Code>".len();
    let len = s[start..].find("</Code>")?;
    let code = s[start..start + len].trim();
    (!code.is_empty()).then(|| code.to_string())
}

fn net_kind(e: &NetError) -> &'static str {
    match e {
        NetError::Connect(_) => "connect",
        NetError::Transport(_) => "transport",
        NetError::Timeout => "timeout",
        NetError::TooLarge { .. } => "too-large",
        NetError::Decode(_) => "decode",
        NetError::Status { .. } => "status",
    }
}

fn net_err(e: NetError) -> OpError {
    OpError::new(net_kind(&e), e.to_string())
}

impl S3Target {
    /// A driver for `endpoint` (`http://host:port`, or `https://host:port`
    /// with `ca_file`: the PEM bundle of the CA(s) to trust, and no other).
    pub fn new(
        endpoint: &str,
        access_key: &str,
        secret_key: &str,
        region: &str,
        connections: usize,
        timeout: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> anyhow::Result<S3Target> {
        let uri: http::Uri = endpoint
            .trim_end_matches('/')
            .parse()
            .map_err(|e| anyhow::anyhow!("bad --endpoint {endpoint:?}: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => anyhow::bail!("--endpoint {endpoint:?}: expected http[s]://HOST:PORT"),
        };
        anyhow::ensure!(
            https || ca_file.is_none(),
            "--ca-file is for an https:// --endpoint"
        );
        if uri.path() != "/" && !uri.path().is_empty() {
            anyhow::bail!("--endpoint {endpoint:?}: no path expected (path-style addressing)");
        }
        let host = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .ok_or_else(|| anyhow::anyhow!("--endpoint {endpoint:?}: no host"))?;
        anyhow::ensure!(!access_key.is_empty(), "--access-key is empty");
        anyhow::ensure!(!secret_key.is_empty(), "--secret-key is empty");
        let identity: Identity =
            Credentials::new(access_key, secret_key, None, None, "cairn-bench").into();
        let http = match (https, ca_file) {
            (false, _) => Transport::Plain(HttpClient::new(&ClientOptions {
                max_idle_per_host: connections.max(32),
                ..Default::default()
            })),
            (true, Some(ca)) => Transport::Tls(tls_client(ca, connections)?),
            (true, None) => anyhow::bail!(
                "--endpoint {endpoint}: https needs --ca-file PATH (the CA bundle to trust)"
            ),
        };
        Ok(S3Target {
            http,
            base: format!("{}://{host}", if https { "https" } else { "http" }),
            host,
            identity,
            region: region.to_string(),
            timeout,
        })
    }

    /// Signs and sends one request; `path` is already encoded.
    async fn send(
        &self,
        method: Method,
        path: &str,
        extra: &[(&str, String)],
        body: Bytes,
    ) -> Result<Response<Incoming>, OpError> {
        let uri = format!("{}{}", self.base, path);
        let len = body.len().to_string();
        let mut headers: Vec<(&str, &str)> = vec![("host", self.host.as_str())];
        if method == Method::PUT {
            headers.push(("content-length", len.as_str()));
        }
        headers.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));

        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| OpError::new("sign", e.to_string()))?
            .into();
        let signable = SignableRequest::new(
            method.as_str(),
            uri.as_str(),
            headers.iter().copied(),
            SignableBody::UnsignedPayload,
        )
        .map_err(|e| OpError::new("sign", e.to_string()))?;
        let (instructions, _sig) = sign(signable, &params)
            .map_err(|e| OpError::new("sign", e.to_string()))?
            .into_parts();

        let mut b = Request::builder().method(method).uri(&uri);
        for (k, v) in &headers {
            b = b.header(*k, *v);
        }
        let mut req = b
            .body(net::full(body))
            .map_err(|e| OpError::new("request", e.to_string()))?;
        instructions.apply_to_request_http1x(&mut req);
        match &self.http {
            Transport::Plain(c) => c.send(req, self.timeout).await.map_err(net_err),
            Transport::Tls(c) => match tokio::time::timeout(self.timeout, c.request(req)).await {
                Ok(Ok(r)) => Ok(r),
                Ok(Err(e)) if e.is_connect() => Err(net_err(NetError::Connect(chain(&e)))),
                Ok(Err(e)) => Err(net_err(NetError::Transport(chain(&e)))),
                Err(_) => Err(net_err(NetError::Timeout)),
            },
        }
    }

    /// Turns a non-success reply into an error `"<status> <S3 code>"`.
    async fn check(resp: Response<Incoming>, ok: &[StatusCode]) -> Result<(), OpError> {
        let status = resp.status();
        let body = net::read_body(resp.into_body(), MAX_ERROR_BODY)
            .await
            .map_err(net_err)?;
        if ok.contains(&status) {
            return Ok(());
        }
        let code = error_code(&body).unwrap_or_else(|| "-".into());
        Err(OpError::new(
            &format!("{} {code}", status.as_u16()),
            String::from_utf8_lossy(&body).into_owned(),
        ))
    }

    /// Creates `bucket`, with `x-cairn-ec` when `ec` is given. `Ok(false)`:
    /// it existed already and is ours.
    pub async fn create_bucket(&self, bucket: &str, ec: Option<EcParams>) -> Result<bool, OpError> {
        let extra: Vec<(&str, String)> = ec
            .map(|ec| vec![(EC_HEADER, ec.to_string())])
            .unwrap_or_default();
        let resp = self
            .send(Method::PUT, &format!("/{bucket}"), &extra, Bytes::new())
            .await?;
        match Self::check(resp, &[StatusCode::OK]).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind.ends_with("BucketAlreadyOwnedByYou") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes an (empty) bucket.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<(), OpError> {
        let resp = self
            .send(Method::DELETE, &format!("/{bucket}"), &[], Bytes::new())
            .await?;
        Self::check(resp, &[StatusCode::OK, StatusCode::NO_CONTENT]).await
    }

    /// PutObject.
    pub async fn put(&self, bucket: &str, key: &str, body: Bytes) -> Result<(), OpError> {
        let resp = self
            .send(
                Method::PUT,
                &format!("/{bucket}/{}", encode_key(key)),
                &[],
                body,
            )
            .await?;
        Self::check(resp, &[StatusCode::OK]).await
    }

    /// GetObject; returns the body length (read to the end, discarded).
    pub async fn get(&self, bucket: &str, key: &str) -> Result<u64, OpError> {
        let resp = self
            .send(
                Method::GET,
                &format!("/{bucket}/{}", encode_key(key)),
                &[],
                Bytes::new(),
            )
            .await?;
        if resp.status() != StatusCode::OK {
            return Self::check(resp, &[]).await.map(|()| 0);
        }
        let mut body = resp.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| OpError::new("transport", e.to_string()))?;
            if let Some(d) = frame.data_ref() {
                n += d.len() as u64;
            }
        }
        Ok(n)
    }

    /// DeleteObject (a missing key is a success, as in S3).
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), OpError> {
        let resp = self
            .send(
                Method::DELETE,
                &format!("/{bucket}/{}", encode_key(key)),
                &[],
                Bytes::new(),
            )
            .await?;
        Self::check(resp, &[StatusCode::OK, StatusCode::NO_CONTENT]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_for_the_path() {
        assert_eq!(encode_key("bench-1/00000001"), "bench-1/00000001");
        assert_eq!(encode_key("a b+c"), "a%20b%2Bc");
        assert_eq!(encode_key("é"), "%C3%A9");
    }

    #[test]
    fn error_codes_are_read_from_xml() {
        let xml =
            b"<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>x</Message></Error>";
        assert_eq!(error_code(xml).as_deref(), Some("NoSuchKey"));
        assert_eq!(error_code(b"not xml"), None);
        assert_eq!(error_code(b"<Code></Code>"), None);
    }

    #[test]
    fn endpoints_are_checked() {
        let t = Duration::from_secs(1);
        let new = |ep: &str, key: &str| S3Target::new(ep, key, "s", "us-east-1", 4, t, None);
        assert!(new("http://127.0.0.1:7900", "k").is_ok());
        assert!(new("http://127.0.0.1:7900/", "k").is_ok());
        // https needs a CA bundle to trust.
        assert!(new("https://s3.example", "k").is_err());
        assert!(new("127.0.0.1:7900", "k").is_err());
        assert!(new("http://h/bucket", "k").is_err());
        assert!(new("http://h", "").is_err());
    }
}
