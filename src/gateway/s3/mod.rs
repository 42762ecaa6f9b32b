//! The S3 operations, on top of `cairn_client::Client`. s3s parses every
//! request and writes every response (XML, headers, SigV4): this file only
//! maps S3 inputs to client calls and client results to S3 outputs.
//!
//! # Layout
//! - this file: [`CairnS3`], the `S3` trait impl (one line per operation,
//!   delegating to the feature files) and the helpers they share.
//! - `buckets` (incl. versioning status), `objects`, `listing`,
//!   `multipart`, `tagging`, `attributes` (GetObjectAttributes),
//!   `bucket_config` (bucket CORS and tags), `encryption` (SSE refused
//!   until implemented), `versions` (bucket versioning, version lookups,
//!   ListObjectVersions), `object_lock` (Object Lock configuration,
//!   retention, legal holds), `acl` (owner-only ACLs): the operations, one
//!   feature per file.

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

/// The headers of an object write (PutObject, CopyObject,
/// CreateMultipartUpload) that Cairn refuses rather than ignore: Object
/// Lock settings and ACLs other than the owner's (one macro: the three
/// inputs are different types with the same fields).
macro_rules! write_headers {
    ($i:expr) => {
        object_lock::refuse_lock_headers(
            $i.object_lock_mode.as_ref(),
            $i.object_lock_retain_until_date.as_ref(),
            $i.object_lock_legal_hold_status.as_ref(),
        )?;
        acl::check_acl_headers(
            $i.acl.as_ref().map(|a| a.as_str()),
            $i.grant_full_control.is_some()
                || $i.grant_read.is_some()
                || $i.grant_read_acp.is_some()
                || $i.grant_write_acp.is_some(),
        )?;
    };
}

mod acl;
mod attributes;
mod bucket_config;
mod buckets;
pub mod encryption;
mod listing;
mod multipart;
mod object_lock;
mod objects;
mod tagging;
mod versions;

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

fn user_meta(m: Option<Metadata>) -> BTreeMap<String, String> {
    m.map(|m| m.into_iter().collect()).unwrap_or_default()
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

/// Bucket, key and `versionId` of `x-amz-copy-source`.
fn parse_copy_source(c: &CopySource) -> S3Result<(String, String, Option<String>)> {
    match c {
        CopySource::Bucket {
            bucket,
            key,
            version_id,
        } => Ok((
            bucket.to_string(),
            key.to_string(),
            version_id.as_deref().map(str::to_string),
        )),
        _ => Err(s3_error!(NotImplemented, "access point copy sources")),
    }
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

/// Every operation delegates to the inherent method of the same name in
/// its feature file (inherent methods take precedence in `self.x()`).
#[async_trait::async_trait]
impl S3 for CairnS3 {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.create_bucket(req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.delete_bucket(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.head_bucket(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.get_bucket_location(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.list_buckets(req).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.put_object(req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.get_object(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.head_object(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.delete_objects(req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.copy_object(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.list_objects_v2(req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.list_objects(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.create_multipart_upload(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.upload_part(req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.upload_part_copy(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.complete_multipart_upload(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.abort_multipart_upload(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.list_parts(req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        self.list_multipart_uploads(req).await
    }

    async fn put_bucket_cors(
        &self,
        req: S3Request<PutBucketCorsInput>,
    ) -> S3Result<S3Response<PutBucketCorsOutput>> {
        self.put_bucket_cors(req).await
    }

    async fn get_bucket_cors(
        &self,
        req: S3Request<GetBucketCorsInput>,
    ) -> S3Result<S3Response<GetBucketCorsOutput>> {
        self.get_bucket_cors(req).await
    }

    async fn delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
        self.delete_bucket_cors(req).await
    }

    async fn put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        self.put_bucket_tagging(req).await
    }

    async fn get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        self.get_bucket_tagging(req).await
    }

    async fn delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        self.delete_bucket_tagging(req).await
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        self.put_object_tagging(req).await
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        self.get_object_tagging(req).await
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        self.delete_object_tagging(req).await
    }

    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        self.get_object_attributes(req).await
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        self.get_bucket_versioning(req).await
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        self.put_bucket_versioning(req).await
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        self.list_object_versions(req).await
    }

    async fn get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        self.get_bucket_acl(req).await
    }

    async fn put_bucket_acl(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> S3Result<S3Response<PutBucketAclOutput>> {
        self.put_bucket_acl(req).await
    }

    async fn get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        self.get_object_acl(req).await
    }

    async fn put_object_acl(
        &self,
        req: S3Request<PutObjectAclInput>,
    ) -> S3Result<S3Response<PutObjectAclOutput>> {
        self.put_object_acl(req).await
    }

    async fn put_object_lock_configuration(
        &self,
        req: S3Request<PutObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<PutObjectLockConfigurationOutput>> {
        self.put_object_lock_configuration(req).await
    }

    async fn get_object_lock_configuration(
        &self,
        req: S3Request<GetObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<GetObjectLockConfigurationOutput>> {
        self.get_object_lock_configuration(req).await
    }

    async fn put_object_retention(
        &self,
        req: S3Request<PutObjectRetentionInput>,
    ) -> S3Result<S3Response<PutObjectRetentionOutput>> {
        self.put_object_retention(req).await
    }

    async fn get_object_retention(
        &self,
        req: S3Request<GetObjectRetentionInput>,
    ) -> S3Result<S3Response<GetObjectRetentionOutput>> {
        self.get_object_retention(req).await
    }

    async fn put_object_legal_hold(
        &self,
        req: S3Request<PutObjectLegalHoldInput>,
    ) -> S3Result<S3Response<PutObjectLegalHoldOutput>> {
        self.put_object_legal_hold(req).await
    }

    async fn get_object_legal_hold(
        &self,
        req: S3Request<GetObjectLegalHoldInput>,
    ) -> S3Result<S3Response<GetObjectLegalHoldOutput>> {
        self.get_object_legal_hold(req).await
    }
    async fn get_bucket_encryption(
        &self,
        req: S3Request<GetBucketEncryptionInput>,
    ) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
        self.get_bucket_encryption(req).await
    }

    async fn put_bucket_encryption(
        &self,
        req: S3Request<PutBucketEncryptionInput>,
    ) -> S3Result<S3Response<PutBucketEncryptionOutput>> {
        self.put_bucket_encryption(req).await
    }

    async fn delete_bucket_encryption(
        &self,
        req: S3Request<DeleteBucketEncryptionInput>,
    ) -> S3Result<S3Response<DeleteBucketEncryptionOutput>> {
        self.delete_bucket_encryption(req).await
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
    use super::listing::url_encode;
    use super::multipart::parse_copy_range;
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
