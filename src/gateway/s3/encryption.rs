//! Server-side encryption: not implemented yet, so never silently ignored.
//!
//! [`refuse_sse`] runs in the access check (`auth::Access::check`), before
//! s3s builds any operation's input, so it covers every operation —
//! PutObject, CopyObject, CreateMultipartUpload, UploadPart,
//! UploadPartCopy, GetObject, HeadObject and any handler added later —
//! without one check per handler: a request naming SSE-S3, SSE-KMS or
//! SSE-C (or an SSE-C copy source) gets 501 NotImplemented and nothing is
//! read, written or stored. The bucket encryption operations answer as S3
//! does for a bucket with no default encryption.

use super::*;

/// Header (and presigned-URL query parameter) name prefixes that ask for
/// server-side encryption: `x-amz-server-side-encryption`,
/// `-aws-kms-key-id`, `-context`, `-bucket-key-enabled`,
/// `-customer-algorithm`, `-customer-key`, `-customer-key-MD5`, and the
/// copy source's `x-amz-copy-source-server-side-encryption-customer-*`.
pub const SSE_PREFIXES: [&str; 2] = [
    "x-amz-server-side-encryption",
    "x-amz-copy-source-server-side-encryption",
];

fn is_sse(name: &str) -> bool {
    SSE_PREFIXES
        .iter()
        .any(|p| name.len() >= p.len() && name[..p.len()].eq_ignore_ascii_case(p))
}

/// 501 NotImplemented if the request asks for server-side encryption in a
/// header or in its query string (a presigned URL may carry the headers
/// it signed there).
pub fn refuse_sse(headers: &http::HeaderMap, uri: &http::Uri) -> S3Result<()> {
    let in_header = headers.keys().map(|k| k.as_str()).find(|k| is_sse(k));
    let in_query = uri.query().and_then(|q| {
        q.split('&')
            .map(|kv| kv.split_once('=').map_or(kv, |(k, _)| k))
            .find(|k| is_sse(k))
    });
    match in_header.or(in_query) {
        Some(name) => Err(s3_error!(
            NotImplemented,
            "server-side encryption is not implemented by this Cairn gateway; \
             the request was refused and nothing was stored (remove {name})"
        )),
        None => Ok(()),
    }
}

impl CairnS3 {
    pub(super) async fn get_bucket_encryption(
        &self,
        req: S3Request<GetBucketEncryptionInput>,
    ) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
        let b = &req.input.bucket;
        self.client.bucket(b).await.map_err(to_s3)?;
        let mut e = s3_error!(
            ServerSideEncryptionConfigurationNotFoundError,
            "bucket {b} has no server-side encryption configuration (Cairn does not implement SSE yet)"
        );
        // S3 answers 404; s3s's default status for this code is 400.
        e.set_status_code(http::StatusCode::NOT_FOUND);
        Err(e)
    }

    pub(super) async fn put_bucket_encryption(
        &self,
        req: S3Request<PutBucketEncryptionInput>,
    ) -> S3Result<S3Response<PutBucketEncryptionOutput>> {
        self.client.bucket(&req.input.bucket).await.map_err(to_s3)?;
        Err(s3_error!(
            NotImplemented,
            "server-side encryption is not implemented by this Cairn gateway; no default encryption was set"
        ))
    }

    pub(super) async fn delete_bucket_encryption(
        &self,
        req: S3Request<DeleteBucketEncryptionInput>,
    ) -> S3Result<S3Response<DeleteBucketEncryptionOutput>> {
        // No bucket has an encryption configuration, so there is nothing
        // to delete: S3 answers 204 in that case too.
        self.client.bucket(&req.input.bucket).await.map_err(to_s3)?;
        Ok(S3Response::new(DeleteBucketEncryptionOutput::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(headers: &[(&str, &str)], uri: &str) -> bool {
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        refuse_sse(&h, &uri.parse().unwrap()).is_ok()
    }

    #[test]
    fn every_sse_header_is_refused() {
        for h in [
            "x-amz-server-side-encryption",
            "x-amz-server-side-encryption-aws-kms-key-id",
            "x-amz-server-side-encryption-context",
            "x-amz-server-side-encryption-bucket-key-enabled",
            "x-amz-server-side-encryption-customer-algorithm",
            "x-amz-server-side-encryption-customer-key",
            "X-Amz-Server-Side-Encryption-Customer-Key-MD5",
            "x-amz-copy-source-server-side-encryption-customer-algorithm",
            "x-amz-copy-source-server-side-encryption-customer-key",
            "x-amz-copy-source-server-side-encryption-customer-key-md5",
        ] {
            assert!(!check(&[(h, "AES256")], "/b/k"), "{h} accepted");
        }
        assert!(!check(&[], "/b/k?X-Amz-Server-Side-Encryption=AES256&x=1"));
        assert!(!check(&[], "/b/k?a=1&x-amz-server-side-encryption"));
    }

    #[test]
    fn other_requests_pass() {
        assert!(check(&[("x-amz-meta-server-side-encryption", "x")], "/b/k"));
        assert!(check(&[("content-type", "text/plain")], "/b/k?encryption"));
        assert!(check(&[], "/b?encryption="));
    }
}
