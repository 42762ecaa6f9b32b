//! Request and response bodies: streaming, checksum verification before
//! anything is committed, and a `Sync` wrapper for read streams.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use cairn_client::{ClientError, GetStream, StreamReader};
use futures::Stream;
use s3s::checksum::ChecksumHasher;
use s3s::crypto::Checksum as _;
use s3s::dto::StreamingBlob;
use s3s::TrailingHeaders;
use tokio::io::{AsyncRead, ReadBuf};

/// The checksum algorithms S3 knows, by the lowercase name Cairn stores
/// them under (the `x-amz-checksum-<name>` header suffix).
pub const ALGORITHMS: [&str; 5] = ["crc32", "crc32c", "crc64nvme", "sha1", "sha256"];

/// The outcome of a verified upload body.
#[derive(Debug, Default)]
pub struct Verdict {
    /// A checksum (or Content-MD5) did not match: a BadDigest.
    pub mismatch: Option<String>,
    /// The checksums computed, by algorithm, to store in the manifest.
    pub checksums: BTreeMap<String, String>,
}

/// Reads an upload body while computing the checksums the client sent (in
/// headers, or announced for an aws-chunked trailer) and its Content-MD5.
/// At the end of the body a mismatch fails the read, so the write path
/// aborts and nothing is committed.
pub struct VerifyingReader {
    inner: StreamReader<StreamingBlob>,
    hasher: Option<ChecksumHasher>,
    md5: Option<(s3s::crypto::Md5, String)>,
    expected: BTreeMap<String, String>,
    trailer: Option<TrailingHeaders>,
    verdict: Arc<Mutex<Verdict>>,
    done: bool,
}

impl VerifyingReader {
    /// `expected`: algorithm -> base64 value from headers; `announced`: the
    /// algorithm whose value may arrive in the trailer; `content_md5`:
    /// base64 MD5 header.
    pub fn new(
        body: StreamingBlob,
        expected: BTreeMap<String, String>,
        announced: Option<String>,
        content_md5: Option<String>,
        trailer: Option<TrailingHeaders>,
    ) -> (Self, Arc<Mutex<Verdict>>) {
        let mut h = ChecksumHasher::default();
        let mut any = false;
        for algo in expected.keys().cloned().chain(announced) {
            any = true;
            match algo.as_str() {
                "crc32" => h.crc32 = Some(Default::default()),
                "crc32c" => h.crc32c = Some(Default::default()),
                "crc64nvme" => h.crc64nvme = Some(Default::default()),
                "sha1" => h.sha1 = Some(s3s::crypto::Sha1::new()),
                "sha256" => h.sha256 = Some(s3s::crypto::Sha256::new()),
                _ => {}
            }
        }
        let verdict = Arc::new(Mutex::new(Verdict::default()));
        (
            VerifyingReader {
                inner: StreamReader::new(body),
                hasher: any.then_some(h),
                md5: content_md5.map(|m| (s3s::crypto::Md5::new(), m)),
                expected,
                trailer,
                verdict: verdict.clone(),
                done: false,
            },
            verdict,
        )
    }

    /// Compares at the end of the body; returns the mismatch, if any.
    fn finish(&mut self) -> Option<String> {
        let mut computed = BTreeMap::new();
        if let Some(h) = self.hasher.take() {
            let c = h.finalize();
            for (name, v) in [
                ("crc32", c.checksum_crc32),
                ("crc32c", c.checksum_crc32c),
                ("crc64nvme", c.checksum_crc64nvme),
                ("sha1", c.checksum_sha1),
                ("sha256", c.checksum_sha256),
            ] {
                if let Some(v) = v {
                    computed.insert(name.to_string(), v);
                }
            }
        }
        let mut expected = self.expected.clone();
        if let Some(t) = &self.trailer {
            // Values sent in an aws-chunked trailer arrive after the body.
            let _ = t.read(|h| {
                for algo in ALGORITHMS {
                    if let Some(v) = h
                        .get(format!("x-amz-checksum-{algo}").as_str())
                        .and_then(|v| v.to_str().ok())
                    {
                        expected.insert(algo.to_string(), v.to_string());
                    }
                }
            });
        }
        let mut mismatch = None;
        for (algo, want) in &expected {
            match computed.get(algo) {
                Some(got) if got == want => {}
                Some(got) => {
                    mismatch = Some(format!("{algo} is {got}, the request said {want}"));
                }
                None => {}
            }
        }
        if let Some((h, want)) = self.md5.take() {
            let got = base64_encode(h.finalize().as_ref());
            if got != want {
                mismatch = Some(format!("Content-MD5 is {got}, the request said {want}"));
            }
        }
        // Only checksums the client asked for are stored and returned.
        computed.retain(|k, _| expected.contains_key(k));
        if let Ok(mut v) = self.verdict.lock() {
            v.mismatch = mismatch.clone();
            v.checksums = computed;
        }
        mismatch
    }
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

impl AsyncRead for VerifyingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let this = &mut *self;
        let new = &buf.filled()[before..];
        if new.is_empty() {
            if !this.done {
                this.done = true;
                if let Some(m) = this.finish() {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        m,
                    )));
                }
            }
            return Poll::Ready(Ok(()));
        }
        if let Some(h) = &mut this.hasher {
            h.update(new);
        }
        if let Some((h, _)) = &mut this.md5 {
            h.update(new);
        }
        Poll::Ready(Ok(()))
    }
}

/// A read stream made `Sync` (s3s response bodies must be) without a lock
/// on the hot path: it is only ever polled through `&mut`.
pub struct SyncStream(Mutex<GetStream>);

impl SyncStream {
    /// Wraps `s`.
    pub fn new(s: GetStream) -> Self {
        SyncStream(Mutex::new(s))
    }
}

impl Stream for SyncStream {
    type Item = Result<Bytes, ClientError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut().0.get_mut() {
            Ok(s) => s.as_mut().poll_next(cx),
            Err(_) => Poll::Ready(Some(Err(ClientError::Io(std::io::Error::other(
                "read stream poisoned",
            ))))),
        }
    }
}
