//! The S3 operations, on top of `cairn_client::Client`. s3s parses every
//! request and writes every response (XML, headers, SigV4): this file only
//! maps S3 inputs to client calls and client results to S3 outputs.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn_client::multipart::MAX_PART_SIZE;
use cairn_client::{Client, ClientError, PutOptions};
use cairn_metadata::types::{
    validate_key, CompletePart, EcParams, ListRequest, ObjectManifest, PutCondition, StripeId,
    MAX_KEY_LEN,
};
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3Request, S3Response, S3Result, S3};

use super::auth::{KeyStore, Need};
use super::body::{SyncStream, Verdict, VerifyingReader, ALGORITHMS};
use super::error::to_s3;
use super::mpu_checksum;

/// Header choosing a new bucket's erasure coding, e.g. `x-cairn-ec: 6+3`.
pub const EC_HEADER: &str = "x-cairn-ec";

/// S3's largest single PUT (larger objects need a multipart upload, up to
/// [`cairn_metadata::types::MAX_OBJECT_SIZE`]).
pub const MAX_PUT_SIZE: u64 = 5 << 30;

/// The S3 service: a client handle and the key store.
pub struct CairnS3 {
    client: Client,
    keys: Arc<KeyStore>,
    shard_size: u32,
}

impl CairnS3 {
    /// A service over `client`; new buckets get `shard_size`-byte shards.
    pub fn new(client: Client, keys: Arc<KeyStore>, shard_size: u32) -> Self {
        CairnS3 {
            client,
            keys,
            shard_size,
        }
    }

    /// The whole-object checksum to record when completing an upload with
    /// a checksum algorithm (see [`mpu_checksum`]), checked against the
    /// per-part values the client listed and the whole-object value it
    /// sent, if any.
    async fn whole_object_checksum(
        &self,
        bucket: &str,
        key: &str,
        id: StripeId,
        parts: &[CompletePart],
        given: &[BTreeMap<String, String>],
        expected: &BTreeMap<String, String>,
    ) -> S3Result<BTreeMap<String, String>> {
        let u = self.client.upload(bucket, key, id).await.map_err(to_s3)?;
        let (Some(algo), Some(ty)) = (u.checksum_algorithm, u.checksum_type) else {
            return Ok(BTreeMap::new());
        };
        let mut stored = BTreeMap::new();
        let mut after = 0;
        loop {
            let page = self
                .client
                .list_parts(bucket, key, id, after, 1000)
                .await
                .map_err(to_s3)?;
            for (p, _) in page.parts {
                after = after.max(p.number);
                stored.insert(p.number, p);
            }
            if !page.truncated {
                break;
            }
        }
        let mut values = Vec::with_capacity(parts.len());
        for (cp, given) in parts.iter().zip(given) {
            // Unknown parts and ETag mismatches are refused by the commit.
            let Some(p) = stored.get(&cp.number) else {
                return Err(s3_error!(
                    InvalidPart,
                    "part {} was not uploaded",
                    cp.number
                ));
            };
            let Some(v) = p.checksums.get(&algo) else {
                return Err(s3_error!(
                    InvalidPart,
                    "part {} has no {algo} checksum; the upload was created with one",
                    cp.number
                ));
            };
            if let Some(g) = given.get(&algo) {
                if g != v {
                    return Err(s3_error!(
                        InvalidPart,
                        "part {}: {algo} is {v}, the request said {g}",
                        cp.number
                    ));
                }
            }
            values.push((v.clone(), p.size));
        }
        let whole = mpu_checksum::combine(&algo, &ty, &values)
            .map_err(|e| s3_error!(InvalidPart, "{e}"))?;
        if let Some(want) = expected.get(&algo) {
            // A composite value may be sent with or without its -N suffix.
            let bare = whole.split('-').next().unwrap_or(&whole);
            if want != &whole && want != bare {
                return Err(s3_error!(
                    BadDigest,
                    "{algo} of the object is {whole}, the request said {want}"
                ));
            }
        }
        let mut out = BTreeMap::new();
        out.insert(algo, whole);
        out.insert(mpu_checksum::TYPE_KEY.to_string(), ty);
        Ok(out)
    }

    /// Requires read access to a copy source.
    async fn check_source<T>(&self, req: &S3Request<T>, bucket: &str) -> S3Result<()> {
        let Some(cred) = &req.credentials else {
            return Err(s3_error!(AccessDenied));
        };
        let Some(key) = self.keys.key(&cred.access_key).await.map_err(to_s3)? else {
            return Err(s3_error!(InvalidAccessKeyId));
        };
        if self.keys.allowed(&key, bucket, Need::Read).await? {
            Ok(())
        } else {
            Err(s3_error!(AccessDenied, "no read access to {bucket}"))
        }
    }
}

fn check_key(key: &str) -> S3Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(s3_error!(KeyTooLongError));
    }
    validate_key(key).map_err(|e| s3_error!(InvalidArgument, "{}", e.0))
}

fn etag(s: &str) -> ETag {
    ETag::Strong(s.to_string())
}

/// Last-Modified has second precision in HTTP: truncate so conditional
/// requests compare what the client saw.
fn ts(ms: u64) -> Timestamp {
    Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_secs(ms / 1000))
}

fn ts_ms(ms: u64) -> Timestamp {
    Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

fn upload_id(s: &str) -> S3Result<StripeId> {
    StripeId::from_str(s).map_err(|_| s3_error!(NoSuchUpload, "no such upload: {s}"))
}

fn condition(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<PutCondition> {
    match (if_match, if_none_match) {
        (Some(_), Some(_)) => Err(s3_error!(
            InvalidArgument,
            "If-Match and If-None-Match cannot both be given"
        )),
        (Some(ETagCondition::Any), None) => Ok(PutCondition::IfMatch("*".into())),
        (Some(ETagCondition::ETag(e)), None) => Ok(PutCondition::IfMatch(e.value().to_string())),
        (None, Some(ETagCondition::Any)) => Ok(PutCondition::IfNoneMatch),
        (None, Some(ETagCondition::ETag(_))) => Err(s3_error!(
            NotImplemented,
            "If-None-Match on writes only supports *"
        )),
        (None, None) => Ok(PutCondition::None),
    }
}

/// A write condition that did not hold: S3 says 412 whether the key was
/// missing (If-Match) or present (If-None-Match).
fn write_err(e: ClientError, cond: &PutCondition) -> S3Error {
    match (e, cond) {
        (ClientError::NoSuchKey { key, .. }, PutCondition::IfMatch(_)) => {
            s3_error!(PreconditionFailed, "{key} does not exist")
        }
        (e, _) => to_s3(e),
    }
}

fn etag_matches(c: &ETagCondition, current: &str) -> bool {
    match c {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == current,
    }
}

/// Collects the standard headers worth keeping, by lowercase name.
fn std_headers(
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_encoding: Option<String>,
    content_language: Option<String>,
    expires: Option<Timestamp>,
) -> BTreeMap<String, String> {
    let mut h = BTreeMap::new();
    for (k, v) in [
        ("cache-control", cache_control),
        ("content-disposition", content_disposition),
        ("content-encoding", content_encoding),
        ("content-language", content_language),
    ] {
        if let Some(v) = v {
            h.insert(k.to_string(), v);
        }
    }
    if let Some(e) = expires {
        let mut out = Vec::new();
        if e.format(TimestampFormat::HttpDate, &mut out).is_ok() {
            if let Ok(s) = String::from_utf8(out) {
                h.insert("expires".to_string(), s);
            }
        }
    }
    h
}

fn expires_of(m: &ObjectManifest) -> Option<Timestamp> {
    m.headers
        .get("expires")
        .and_then(|s| Timestamp::parse(TimestampFormat::HttpDate, s).ok())
}

fn user_meta(m: Option<Metadata>) -> BTreeMap<String, String> {
    m.map(|m| m.into_iter().collect()).unwrap_or_default()
}

fn metadata_of(m: &ObjectManifest) -> Option<Metadata> {
    if m.user_meta.is_empty() {
        None
    } else {
        Some(m.user_meta.clone().into_iter().collect())
    }
}

/// Checksums sent in headers, by algorithm.
fn header_checksums(
    crc32: Option<String>,
    crc32c: Option<String>,
    crc64nvme: Option<String>,
    sha1: Option<String>,
    sha256: Option<String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in [
        ("crc32", crc32),
        ("crc32c", crc32c),
        ("crc64nvme", crc64nvme),
        ("sha1", sha1),
        ("sha256", sha256),
    ] {
        if let Some(v) = v {
            out.insert(k.to_string(), v);
        }
    }
    out
}

fn announced(a: Option<&ChecksumAlgorithm>) -> Option<String> {
    a.map(|a| a.as_str().to_ascii_lowercase())
        .filter(|a| ALGORITHMS.contains(&a.as_str()))
}

/// Maps a failed verified write: a checksum mismatch is BadDigest.
fn body_err(e: ClientError, verdict: &std::sync::Mutex<Verdict>, cond: &PutCondition) -> S3Error {
    if let Ok(v) = verdict.lock() {
        if let Some(m) = &v.mismatch {
            return s3_error!(BadDigest, "{m}");
        }
    }
    write_err(e, cond)
}

fn checksum_of(m: &ObjectManifest, algo: &str) -> Option<String> {
    m.checksums.get(algo).cloned()
}

/// The bytes a GetObject/HeadObject asks for: a Range, a part, or all.
fn requested_range(
    range: Option<&Range>,
    part_number: Option<i32>,
    m: &ObjectManifest,
) -> S3Result<Option<std::ops::Range<u64>>> {
    match (range, part_number) {
        (Some(_), Some(_)) => Err(s3_error!(
            InvalidRequest,
            "cannot specify both Range and partNumber"
        )),
        (Some(r), None) => Ok(Some(r.check(m.size)?)),
        (None, Some(n)) => Ok(Some(part_range(m, n)?)),
        (None, None) => Ok(None),
    }
}

/// The byte range of part `n` (GetObject/HeadObject `partNumber`): a
/// multipart object's part, or the whole of a single-part object as its
/// part 1.
fn part_range(m: &ObjectManifest, n: i32) -> S3Result<std::ops::Range<u64>> {
    if !(1..=10_000).contains(&n) {
        return Err(s3_error!(
            InvalidArgument,
            "part number must be an integer between 1 and 10000"
        ));
    }
    let bad = || {
        let mut e = S3Error::with_message(
            s3s::S3ErrorCode::Custom("InvalidPartNumber".into()),
            "the requested partnumber is not satisfiable",
        );
        e.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
        e
    };
    if m.parts.is_empty() {
        return if n == 1 { Ok(0..m.size) } else { Err(bad()) };
    }
    let idx = (n - 1) as usize;
    let Some(p) = m.parts.get(idx) else {
        return Err(bad());
    };
    let start: u64 = m.parts[..idx].iter().map(|p| p.size).sum();
    Ok(start..start + p.size)
}

/// The checksum type of an object with a checksum: multipart objects record
/// theirs; a single-part object's checksum covers the whole object.
fn checksum_type_of(m: &ObjectManifest) -> Option<ChecksumType> {
    if !ALGORITHMS.iter().any(|a| m.checksums.contains_key(*a)) {
        return None;
    }
    Some(ChecksumType::from(
        m.checksums
            .get(mpu_checksum::TYPE_KEY)
            .cloned()
            .unwrap_or_else(|| mpu_checksum::FULL_OBJECT.to_string()),
    ))
}

/// Percent-encodes for `encoding-type=url` listings (S3 encodes everything
/// but unreserved characters and '/').
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn parse_copy_source(c: &CopySource) -> S3Result<(String, String)> {
    match c {
        CopySource::Bucket { bucket, key, .. } => Ok((bucket.to_string(), key.to_string())),
        _ => Err(s3_error!(NotImplemented, "access point copy sources")),
    }
}

/// Parses `bytes=a-b` (x-amz-copy-source-range) into a half-open range.
fn parse_copy_range(s: &str, size: u64) -> S3Result<std::ops::Range<u64>> {
    let bad = || s3_error!(InvalidArgument, "invalid copy source range {s:?}");
    let r = s.strip_prefix("bytes=").ok_or_else(bad)?;
    let (a, b) = r.split_once('-').ok_or_else(bad)?;
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    if a > b || b >= size {
        return Err(s3_error!(
            InvalidRange,
            "copy source range {s} outside {size} bytes"
        ));
    }
    Ok(a..b + 1)
}

struct SourceConds<'a> {
    if_match: Option<&'a ETagCondition>,
    if_none_match: Option<&'a ETagCondition>,
    if_modified_since: Option<&'a Timestamp>,
    if_unmodified_since: Option<&'a Timestamp>,
}

/// Checks x-amz-copy-source-if-*: all failures are 412.
fn check_source_conds(m: &ObjectManifest, c: SourceConds<'_>) -> S3Result<()> {
    let lm = ts(m.created_ms);
    let fail = || s3_error!(PreconditionFailed, "copy source precondition failed");
    if let Some(e) = c.if_match {
        if !etag_matches(e, &m.etag) {
            return Err(fail());
        }
    }
    if let Some(e) = c.if_none_match {
        if etag_matches(e, &m.etag) {
            return Err(fail());
        }
    }
    if let Some(t) = c.if_unmodified_since {
        if c.if_match.is_none() && lm > *t {
            return Err(fail());
        }
    }
    if let Some(t) = c.if_modified_since {
        if c.if_none_match.is_none() && lm <= *t {
            return Err(fail());
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl S3 for CairnS3 {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let name = req.input.bucket.clone();
        let ec = match req.headers.get(EC_HEADER) {
            Some(v) => {
                let s = v
                    .to_str()
                    .map_err(|_| s3_error!(InvalidArgument, "bad {EC_HEADER} header"))?;
                EcParams::from_str(s).map_err(|e| s3_error!(InvalidArgument, "{}", e.0))?
            }
            None => EcParams::default(),
        };
        cairn_metadata::types::validate_bucket_name(&name)
            .map_err(|e| s3_error!(InvalidBucketName, "{}", e.0))?;
        let owner = req
            .credentials
            .as_ref()
            .map(|c| c.access_key.clone())
            .unwrap_or_default();
        match self
            .client
            .create_bucket_owned(&name, ec, self.shard_size, &owner)
            .await
        {
            Ok(()) => {}
            Err(ClientError::BucketExists(b)) => {
                let mine = matches!(self.client.bucket(&b).await, Ok(info) if info.owner == owner);
                return Err(if mine {
                    s3_error!(BucketAlreadyOwnedByYou, "you already own {b}")
                } else {
                    s3_error!(BucketAlreadyExists, "{b} exists")
                });
            }
            Err(e) => return Err(to_s3(e)),
        }
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{name}")),
        }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.client
            .delete_bucket(&req.input.bucket)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.client.bucket(&req.input.bucket).await.map_err(to_s3)?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.client.bucket(&req.input.bucket).await.map_err(to_s3)?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let Some(cred) = &req.credentials else {
            return Err(s3_error!(AccessDenied));
        };
        let Some(key) = self.keys.key(&cred.access_key).await.map_err(to_s3)? else {
            return Err(s3_error!(InvalidAccessKeyId));
        };
        let all = self.client.list_buckets().await.map_err(to_s3)?;
        let buckets = all
            .into_iter()
            .filter(|b| {
                key.admin
                    || b.owner == key.id
                    || key
                        .buckets
                        .get(&b.name)
                        .is_some_and(|g| g.read || g.write || g.owner)
            })
            .map(|b| Bucket {
                name: Some(b.name),
                creation_date: Some(ts_ms(b.created_ms)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner {
                display_name: Some(key.name.clone()),
                id: Some(key.id.clone()),
            }),
            ..Default::default()
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let trailer = req.trailing_headers.clone();
        let i = req.input;
        check_key(&i.key)?;
        if i.content_length
            .is_some_and(|l| l < 0 || l as u64 > MAX_PUT_SIZE)
        {
            return Err(s3_error!(
                EntityTooLarge,
                "a single PUT holds at most 5 GiB; use a multipart upload"
            ));
        }
        let cond = condition(i.if_match.as_ref(), i.if_none_match.as_ref())?;
        let expected = header_checksums(
            i.checksum_crc32,
            i.checksum_crc32c,
            i.checksum_crc64nvme,
            i.checksum_sha1,
            i.checksum_sha256,
        );
        let body = i.body.unwrap_or_else(|| {
            StreamingBlob::wrap(futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>())
        });
        let (reader, verdict) = VerifyingReader::new(
            body,
            expected,
            announced(i.checksum_algorithm.as_ref()),
            i.content_md5,
            trailer,
        );
        let opts = PutOptions {
            content_type: i.content_type,
            headers: std_headers(
                i.cache_control,
                i.content_disposition,
                i.content_encoding,
                i.content_language,
                i.expires,
            ),
            user_meta: user_meta(i.metadata),
            checksums: BTreeMap::new(),
            condition: cond.clone(),
            md5: true,
        };
        // The checksums are only known at the end of the body: the reader
        // computes them; they are stored through the verdict below.
        let m = self
            .client
            .put_verified(&i.bucket, &i.key, reader, opts, {
                let verdict = verdict.clone();
                move || {
                    verdict
                        .lock()
                        .map(|v| v.checksums.clone())
                        .unwrap_or_default()
                }
            })
            .await
            .map_err(|e| body_err(e, &verdict, &cond))?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&m.etag)),
            checksum_crc32: checksum_of(&m, "crc32"),
            checksum_crc32c: checksum_of(&m, "crc32c"),
            checksum_crc64nvme: checksum_of(&m, "crc64nvme"),
            checksum_sha1: checksum_of(&m, "sha1"),
            checksum_sha256: checksum_of(&m, "sha256"),
            size: Some(m.size as i64),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let i = &req.input;
        check_key(&i.key)?;
        let m = self.client.head(&i.bucket, &i.key).await.map_err(to_s3)?;
        let lm = ts(m.created_ms);
        if let Some(c) = &i.if_match {
            if !etag_matches(c, &m.etag) {
                return Err(s3_error!(PreconditionFailed, "ETag is {}", m.etag));
            }
        } else if let Some(t) = &i.if_unmodified_since {
            if lm > *t {
                return Err(s3_error!(PreconditionFailed, "modified since {t:?}"));
            }
        }
        if let Some(c) = &i.if_none_match {
            if etag_matches(c, &m.etag) {
                return Err(s3_error!(NotModified));
            }
        } else if let Some(t) = &i.if_modified_since {
            if lm <= *t {
                return Err(s3_error!(NotModified));
            }
        }
        let range = requested_range(i.range.as_ref(), i.part_number, &m)?;
        // The first stripe the range needs is read and verified before the
        // status line goes out: an object that cannot be read is answered
        // 503 ServiceUnavailable (S3 SDKs retry it), never 200 and a cut
        // body. A later stripe failing mid-body can only abort the
        // connection (the body stream's error makes hyper close it without
        // completing the announced Content-Length), as S3 does.
        let stream = self
            .client
            .open_manifest(&i.bucket, &i.key, &m, range.clone())
            .await
            .map_err(to_s3)?;
        let (len, content_range) = match &range {
            Some(r) => (
                r.end - r.start,
                Some(format!(
                    "bytes {}-{}/{}",
                    r.start,
                    r.end.saturating_sub(1),
                    m.size
                )),
            ),
            None => (m.size, None),
        };
        let with_checksums = i
            .checksum_mode
            .as_ref()
            .is_some_and(|c| c.as_str() == ChecksumMode::ENABLED)
            && range.is_none();
        let ck = |a: &str| {
            if with_checksums {
                checksum_of(&m, a)
            } else {
                None
            }
        };
        let out = GetObjectOutput {
            checksum_type: with_checksums.then(|| checksum_type_of(&m)).flatten(),
            body: Some(StreamingBlob::wrap(SyncStream::new(stream))),
            accept_ranges: Some("bytes".into()),
            content_length: Some(len as i64),
            content_range,
            content_type: m.content_type.clone(),
            cache_control: m.headers.get("cache-control").cloned(),
            content_disposition: m.headers.get("content-disposition").cloned(),
            content_encoding: m.headers.get("content-encoding").cloned(),
            content_language: m.headers.get("content-language").cloned(),
            expires: expires_of(&m),
            e_tag: Some(etag(&m.etag)),
            last_modified: Some(lm),
            metadata: metadata_of(&m),
            parts_count: (!m.parts.is_empty()).then_some(m.parts.len() as i32),
            checksum_crc32: ck("crc32"),
            checksum_crc32c: ck("crc32c"),
            checksum_crc64nvme: ck("crc64nvme"),
            checksum_sha1: ck("sha1"),
            checksum_sha256: ck("sha256"),
            ..Default::default()
        };
        Ok(S3Response::new(out))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let i = &req.input;
        check_key(&i.key)?;
        let m = self.client.head(&i.bucket, &i.key).await.map_err(to_s3)?;
        let lm = ts(m.created_ms);
        if let Some(c) = &i.if_match {
            if !etag_matches(c, &m.etag) {
                return Err(s3_error!(PreconditionFailed));
            }
        } else if let Some(t) = &i.if_unmodified_since {
            if lm > *t {
                return Err(s3_error!(PreconditionFailed));
            }
        }
        if let Some(c) = &i.if_none_match {
            if etag_matches(c, &m.etag) {
                return Err(s3_error!(NotModified));
            }
        } else if let Some(t) = &i.if_modified_since {
            if lm <= *t {
                return Err(s3_error!(NotModified));
            }
        }
        let range = requested_range(i.range.as_ref(), i.part_number, &m)?;
        let (len, content_range) = match range {
            Some(r) => (
                r.end - r.start,
                Some(format!(
                    "bytes {}-{}/{}",
                    r.start,
                    r.end.saturating_sub(1),
                    m.size
                )),
            ),
            None => (m.size, None),
        };
        let with_checksums = i
            .checksum_mode
            .as_ref()
            .is_some_and(|c| c.as_str() == ChecksumMode::ENABLED);
        let ck = |a: &str| {
            if with_checksums {
                checksum_of(&m, a)
            } else {
                None
            }
        };
        Ok(S3Response::new(HeadObjectOutput {
            checksum_type: with_checksums.then(|| checksum_type_of(&m)).flatten(),
            accept_ranges: Some("bytes".into()),
            content_length: Some(len as i64),
            content_range,
            content_type: m.content_type.clone(),
            cache_control: m.headers.get("cache-control").cloned(),
            content_disposition: m.headers.get("content-disposition").cloned(),
            content_encoding: m.headers.get("content-encoding").cloned(),
            content_language: m.headers.get("content-language").cloned(),
            expires: expires_of(&m),
            e_tag: Some(etag(&m.etag)),
            last_modified: Some(lm),
            metadata: metadata_of(&m),
            parts_count: (!m.parts.is_empty()).then_some(m.parts.len() as i32),
            checksum_crc32: ck("crc32"),
            checksum_crc32c: ck("crc32c"),
            checksum_crc64nvme: ck("crc64nvme"),
            checksum_sha1: ck("sha1"),
            checksum_sha256: ck("sha256"),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let i = &req.input;
        check_key(&i.key)?;
        self.client.delete(&i.bucket, &i.key).await.map_err(to_s3)?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let i = req.input;
        if i.delete.objects.len() > 1000 {
            return Err(s3_error!(MalformedXML, "at most 1000 keys per request"));
        }
        let quiet = i.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for o in i.delete.objects {
            let r = match check_key(&o.key) {
                Ok(()) => self.client.delete(&i.bucket, &o.key).await.map_err(to_s3),
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => {
                    if !quiet {
                        deleted.push(DeletedObject {
                            key: Some(o.key),
                            ..Default::default()
                        });
                    }
                }
                Err(e) => errors.push(Error {
                    code: Some(e.code().as_str().to_string()),
                    key: Some(o.key),
                    message: e.message().map(str::to_string),
                    version_id: None,
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let (sb, sk) = parse_copy_source(&req.input.copy_source)?;
        self.check_source(&req, &sb).await?;
        let i = req.input;
        check_key(&i.key)?;
        check_key(&sk)?;
        let src = self.client.head(&sb, &sk).await.map_err(to_s3)?;
        check_source_conds(
            &src,
            SourceConds {
                if_match: i.copy_source_if_match.as_ref(),
                if_none_match: i.copy_source_if_none_match.as_ref(),
                if_modified_since: i.copy_source_if_modified_since.as_ref(),
                if_unmodified_since: i.copy_source_if_unmodified_since.as_ref(),
            },
        )?;
        let replace = i
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if sb == i.bucket && sk == i.key && !replace {
            return Err(s3_error!(
                InvalidRequest,
                "copying an object onto itself needs the REPLACE metadata directive"
            ));
        }
        let opts = if replace {
            PutOptions {
                content_type: i.content_type,
                headers: std_headers(
                    i.cache_control,
                    i.content_disposition,
                    i.content_encoding,
                    i.content_language,
                    i.expires,
                ),
                user_meta: user_meta(i.metadata),
                checksums: src.checksums.clone(),
                condition: PutCondition::None,
                md5: true,
            }
        } else {
            PutOptions {
                content_type: src.content_type.clone(),
                headers: src.headers.clone(),
                user_meta: src.user_meta.clone(),
                checksums: src.checksums.clone(),
                condition: PutCondition::None,
                md5: true,
            }
        };
        let m = self
            .client
            .copy(&sb, &sk, &src, &i.bucket, &i.key, opts)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&m.etag)),
                last_modified: Some(ts(m.created_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let i = req.input;
        let max_keys = i.max_keys.unwrap_or(1000).clamp(0, 1000);
        let page = self
            .client
            .list(ListRequest {
                bucket: i.bucket.clone(),
                prefix: i.prefix.clone().unwrap_or_default(),
                delimiter: i.delimiter.clone(),
                start_after: i.start_after.clone(),
                continuation: i.continuation_token.clone(),
                max_keys: max_keys as u32,
            })
            .await
            .map_err(|e| match e {
                ClientError::Invalid(m) => s3_error!(InvalidArgument, "{m}"),
                e => to_s3(e),
            })?;
        let url = i
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL);
        let enc = |s: String| if url { url_encode(&s) } else { s };
        let owner = if i.fetch_owner.unwrap_or(false) {
            let b = self.client.bucket(&i.bucket).await.map_err(to_s3)?;
            Some(Owner {
                id: Some(b.owner.clone()),
                display_name: Some(b.owner),
            })
        } else {
            None
        };
        let key_count = (page.entries.len() + page.common_prefixes.len()) as i32;
        let contents: Vec<Object> = page
            .entries
            .into_iter()
            .map(|e| Object {
                key: Some(enc(e.key)),
                size: Some(e.size as i64),
                e_tag: Some(etag(&e.etag)),
                last_modified: Some(ts_ms(e.created_ms)),
                owner: owner.clone(),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                ..Default::default()
            })
            .collect();
        let prefixes: Vec<CommonPrefix> = page
            .common_prefixes
            .into_iter()
            .map(|p| CommonPrefix {
                prefix: Some(enc(p)),
            })
            .collect();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket),
            prefix: Some(enc(i.prefix.unwrap_or_default())),
            delimiter: i.delimiter.map(enc),
            start_after: i.start_after.map(enc),
            max_keys: Some(max_keys),
            key_count: Some(key_count),
            continuation_token: i.continuation_token,
            is_truncated: Some(page.truncated),
            next_continuation_token: page.next_continuation,
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let i = req.input;
        let max_keys = i.max_keys.unwrap_or(1000).clamp(0, 1000);
        // A marker that is a common prefix must skip every key under it:
        // U+10FFFF sorts after any character that can follow it.
        let start_after = i
            .marker
            .clone()
            .filter(|m| !m.is_empty())
            .map(|m| match &i.delimiter {
                Some(d) if !d.is_empty() && m.ends_with(d.as_str()) => format!("{m}\u{10FFFF}"),
                _ => m,
            });
        let page = self
            .client
            .list(ListRequest {
                bucket: i.bucket.clone(),
                prefix: i.prefix.clone().unwrap_or_default(),
                delimiter: i.delimiter.clone(),
                start_after,
                continuation: None,
                max_keys: max_keys as u32,
            })
            .await
            .map_err(to_s3)?;
        let url = i
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL);
        let enc = |s: String| if url { url_encode(&s) } else { s };
        let last_key = page.entries.last().map(|e| e.key.clone());
        let last_prefix = page.common_prefixes.last().cloned();
        let next_marker = if page.truncated {
            match (last_key, last_prefix) {
                (Some(k), Some(p)) => Some(if k > p { k } else { p }),
                (Some(k), None) => Some(k),
                (None, p) => p,
            }
        } else {
            None
        };
        let contents: Vec<Object> = page
            .entries
            .into_iter()
            .map(|e| Object {
                key: Some(enc(e.key)),
                size: Some(e.size as i64),
                e_tag: Some(etag(&e.etag)),
                last_modified: Some(ts_ms(e.created_ms)),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                ..Default::default()
            })
            .collect();
        let prefixes: Vec<CommonPrefix> = page
            .common_prefixes
            .into_iter()
            .map(|p| CommonPrefix {
                prefix: Some(enc(p)),
            })
            .collect();
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(i.bucket),
            prefix: Some(enc(i.prefix.unwrap_or_default())),
            marker: i.marker.map(enc),
            delimiter: i.delimiter.map(enc),
            max_keys: Some(max_keys),
            is_truncated: Some(page.truncated),
            next_marker: next_marker.map(enc),
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let owner = req
            .credentials
            .as_ref()
            .map(|c| c.access_key.clone())
            .unwrap_or_default();
        let i = req.input;
        check_key(&i.key)?;
        let opts = PutOptions {
            content_type: i.content_type,
            headers: std_headers(
                i.cache_control,
                i.content_disposition,
                i.content_encoding,
                i.content_language,
                i.expires,
            ),
            user_meta: user_meta(i.metadata),
            ..Default::default()
        };
        let algo = announced(i.checksum_algorithm.as_ref());
        let ty = mpu_checksum::effective_type(
            algo.as_deref(),
            i.checksum_type.as_ref().map(|t| t.as_str()),
        )
        .map_err(|e| s3_error!(InvalidRequest, "{e}"))?;
        let u = self
            .client
            .create_upload(&i.bucket, &i.key, &opts, algo, ty, &owner)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(u.id.to_hex()),
            checksum_algorithm: i.checksum_algorithm,
            checksum_type: u.checksum_type.map(ChecksumType::from),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let trailer = req.trailing_headers.clone();
        let i = req.input;
        check_key(&i.key)?;
        let id = upload_id(&i.upload_id)?;
        if !(1..=10_000).contains(&i.part_number) {
            return Err(s3_error!(InvalidArgument, "part number must be 1 to 10000"));
        }
        if i.content_length
            .is_some_and(|l| l < 0 || l as u64 > MAX_PART_SIZE)
        {
            return Err(s3_error!(EntityTooLarge, "a part holds at most 5 GiB"));
        }
        let expected = header_checksums(
            i.checksum_crc32,
            i.checksum_crc32c,
            i.checksum_crc64nvme,
            i.checksum_sha1,
            i.checksum_sha256,
        );
        let body = i.body.unwrap_or_else(|| {
            StreamingBlob::wrap(futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>())
        });
        let (reader, verdict) = VerifyingReader::new(
            body,
            expected,
            announced(i.checksum_algorithm.as_ref()),
            i.content_md5,
            trailer,
        );
        let p = self
            .client
            .upload_part_verified(&i.bucket, &i.key, id, i.part_number as u32, reader, {
                let verdict = verdict.clone();
                move || {
                    verdict
                        .lock()
                        .map(|v| v.checksums.clone())
                        .unwrap_or_default()
                }
            })
            .await
            .map_err(|e| body_err(e, &verdict, &PutCondition::None))?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(etag(&p.etag)),
            checksum_crc32: p.checksums.get("crc32").cloned(),
            checksum_crc32c: p.checksums.get("crc32c").cloned(),
            checksum_crc64nvme: p.checksums.get("crc64nvme").cloned(),
            checksum_sha1: p.checksums.get("sha1").cloned(),
            checksum_sha256: p.checksums.get("sha256").cloned(),
            ..Default::default()
        }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let (sb, sk) = parse_copy_source(&req.input.copy_source)?;
        self.check_source(&req, &sb).await?;
        let i = req.input;
        check_key(&i.key)?;
        let id = upload_id(&i.upload_id)?;
        if !(1..=10_000).contains(&i.part_number) {
            return Err(s3_error!(InvalidArgument, "part number must be 1 to 10000"));
        }
        let src = self.client.head(&sb, &sk).await.map_err(to_s3)?;
        check_source_conds(
            &src,
            SourceConds {
                if_match: i.copy_source_if_match.as_ref(),
                if_none_match: i.copy_source_if_none_match.as_ref(),
                if_modified_since: i.copy_source_if_modified_since.as_ref(),
                if_unmodified_since: i.copy_source_if_unmodified_since.as_ref(),
            },
        )?;
        let range = match &i.copy_source_range {
            Some(r) => Some(parse_copy_range(r, src.size)?),
            None => None,
        };
        let len = range.as_ref().map_or(src.size, |r| r.end - r.start);
        if len > MAX_PART_SIZE {
            return Err(s3_error!(EntityTooLarge, "a part holds at most 5 GiB"));
        }
        let p = self
            .client
            .upload_part_copy(
                &sb,
                &sk,
                &src,
                range,
                &i.bucket,
                &i.key,
                id,
                i.part_number as u32,
            )
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(etag(&p.etag)),
                last_modified: Some(ts(cairn_now_ms())),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let i = req.input;
        check_key(&i.key)?;
        let id = upload_id(&i.upload_id)?;
        let cond = condition(i.if_match.as_ref(), i.if_none_match.as_ref())?;
        let listed = i.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
        // Checksum values the client gives per part, to compare with the
        // stored ones.
        let given: Vec<BTreeMap<String, String>> = listed
            .iter()
            .map(|p| {
                header_checksums(
                    p.checksum_crc32.clone(),
                    p.checksum_crc32c.clone(),
                    p.checksum_crc64nvme.clone(),
                    p.checksum_sha1.clone(),
                    p.checksum_sha256.clone(),
                )
            })
            .collect();
        let parts: Vec<CompletePart> = listed
            .into_iter()
            .map(|p| {
                Ok(CompletePart {
                    number: p
                        .part_number
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| s3_error!(InvalidPart, "a part lacks its number"))?,
                    etag: p
                        .e_tag
                        .map(|e| e.value().to_string())
                        .ok_or_else(|| s3_error!(InvalidPart, "a part lacks its ETag"))?,
                })
            })
            .collect::<S3Result<_>>()?;
        if parts.is_empty() {
            return Err(s3_error!(MalformedXML, "no parts given"));
        }
        if parts.len() > 10_000 {
            return Err(s3_error!(InvalidArgument, "at most 10000 parts"));
        }
        let expected = header_checksums(
            i.checksum_crc32,
            i.checksum_crc32c,
            i.checksum_crc64nvme,
            i.checksum_sha1,
            i.checksum_sha256,
        );
        let checksums = self
            .whole_object_checksum(&i.bucket, &i.key, id, &parts, &given, &expected)
            .await?;
        let m = self
            .client
            .complete_upload(&i.bucket, &i.key, id, parts, checksums, cond.clone())
            .await
            .map_err(|e| write_err(e, &cond))?;
        let ck = |a: &str| checksum_of(&m, a);
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(i.bucket.clone()),
            key: Some(i.key.clone()),
            e_tag: Some(etag(&m.etag)),
            location: Some(format!("/{}/{}", i.bucket, i.key)),
            checksum_crc32: ck("crc32"),
            checksum_crc32c: ck("crc32c"),
            checksum_crc64nvme: ck("crc64nvme"),
            checksum_sha1: ck("sha1"),
            checksum_sha256: ck("sha256"),
            checksum_type: checksum_type_of(&m),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let i = &req.input;
        let id = upload_id(&i.upload_id)?;
        self.client
            .abort_upload(&i.bucket, &i.key, id)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let i = req.input;
        let id = upload_id(&i.upload_id)?;
        let max = i.max_parts.unwrap_or(1000).clamp(1, 1000);
        let after = i.part_number_marker.unwrap_or(0).max(0) as u32;
        let page = self
            .client
            .list_parts(&i.bucket, &i.key, id, after, max as u32)
            .await
            .map_err(to_s3)?;
        let next = page.parts.last().map(|(p, _)| p.number as i32);
        let parts: Vec<Part> = page
            .parts
            .into_iter()
            .map(|(p, t)| Part {
                part_number: Some(p.number as i32),
                size: Some(p.size as i64),
                e_tag: Some(etag(&p.etag)),
                last_modified: Some(ts_ms(t)),
                checksum_crc32: p.checksums.get("crc32").cloned(),
                checksum_crc32c: p.checksums.get("crc32c").cloned(),
                checksum_crc64nvme: p.checksums.get("crc64nvme").cloned(),
                checksum_sha1: p.checksums.get("sha1").cloned(),
                checksum_sha256: p.checksums.get("sha256").cloned(),
            })
            .collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(i.upload_id),
            max_parts: Some(max),
            part_number_marker: i.part_number_marker,
            next_part_number_marker: next,
            is_truncated: Some(page.truncated),
            parts: Some(parts),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let i = req.input;
        let max = i.max_uploads.unwrap_or(1000).clamp(1, 1000);
        let after = match (&i.key_marker, &i.upload_id_marker) {
            (Some(k), Some(u)) if !k.is_empty() => Some((k.clone(), StripeId::from_str(u).ok())),
            (Some(k), None) if !k.is_empty() => Some((k.clone(), None)),
            _ => None,
        };
        let prefix = i.prefix.clone().unwrap_or_default();
        let (uploads, truncated) = self
            .client
            .list_uploads(&i.bucket, &prefix, after, max as u32)
            .await
            .map_err(to_s3)?;
        let next_key = uploads.last().map(|u| u.key.clone());
        let next_id = uploads.last().map(|u| u.id.to_hex());
        let list: Vec<MultipartUpload> = uploads
            .into_iter()
            .map(|u| MultipartUpload {
                key: Some(u.key),
                upload_id: Some(u.id.to_hex()),
                initiated: Some(ts_ms(u.initiated_ms)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(i.bucket),
            prefix: i.prefix,
            key_marker: i.key_marker,
            upload_id_marker: i.upload_id_marker,
            max_uploads: Some(max),
            is_truncated: Some(truncated),
            next_key_marker: if truncated { next_key } else { None },
            next_upload_id_marker: if truncated { next_id } else { None },
            uploads: Some(list),
            ..Default::default()
        }))
    }
}

fn cairn_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoding_keeps_slashes_and_unreserved() {
        assert_eq!(url_encode("a b/c+d~é"), "a%20b/c%2Bd~%C3%A9");
    }

    #[test]
    fn copy_ranges_are_inclusive_and_bounded() {
        assert_eq!(parse_copy_range("bytes=0-9", 10).ok(), Some(0..10));
        assert!(parse_copy_range("bytes=5-10", 10).is_err());
        assert!(parse_copy_range("bytes=x-1", 10).is_err());
        assert!(parse_copy_range("0-1", 10).is_err());
    }

    #[test]
    fn write_conditions() {
        assert_eq!(
            condition(None, Some(&ETagCondition::Any)).ok(),
            Some(PutCondition::IfNoneMatch)
        );
        assert_eq!(
            condition(Some(&ETagCondition::ETag(ETag::Strong("abc".into()))), None).ok(),
            Some(PutCondition::IfMatch("abc".into()))
        );
        assert!(condition(Some(&ETagCondition::Any), Some(&ETagCondition::Any)).is_err());
    }
}
