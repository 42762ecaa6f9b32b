//! The one mapping from Cairn's errors to S3 error codes.

use cairn_client::ClientError;
use s3s::{s3_error, S3Error};

/// Turns a client error into the S3 error a client expects. Internal
/// failures become `InternalError` / `ServiceUnavailable` with a message,
/// never a panic.
pub fn to_s3(e: ClientError) -> S3Error {
    match e {
        ClientError::NoSuchBucket(b) => s3_error!(NoSuchBucket, "no such bucket: {b}"),
        ClientError::NoSuchKey { key, .. } => s3_error!(NoSuchKey, "no such key: {key}"),
        ClientError::InvalidBucketState(m) => s3_error!(InvalidBucketState, "{m}"),
        ClientError::ObjectLocked(m) => s3_error!(
            AccessDenied,
            "Access Denied because object protected by object lock: {m}"
        ),
        ClientError::NoSuchVersion { version, .. } => s3_error!(
            NoSuchVersion,
            "The specified version does not exist: {version}"
        ),
        ClientError::BucketExists(b) => {
            s3_error!(BucketAlreadyOwnedByYou, "bucket already exists: {b}")
        }
        ClientError::BucketNotEmpty(b) => s3_error!(BucketNotEmpty, "bucket not empty: {b}"),
        ClientError::PreconditionFailed(m) => s3_error!(PreconditionFailed, "{m}"),
        ClientError::Invalid(m) => s3_error!(InvalidArgument, "{m}"),
        ClientError::InvalidRange(m) => s3_error!(InvalidRange, "{m}"),
        ClientError::NoSuchUpload(u) => s3_error!(NoSuchUpload, "no such upload: {u}"),
        ClientError::InvalidPart(m) => s3_error!(InvalidPart, "{m}"),
        ClientError::InvalidPartOrder(m) => s3_error!(InvalidPartOrder, "{m}"),
        ClientError::EntityTooSmall(m) => s3_error!(EntityTooSmall, "{m}"),
        ClientError::EntityTooLarge(m) => s3_error!(EntityTooLarge, "{m}"),
        ClientError::NoSuchAccessKey(_) => s3_error!(InvalidAccessKeyId),
        e @ ClientError::NotEnoughShards { .. } => {
            // 503: retryable for every S3 SDK; the shards may be on
            // chunkservers that are restarting, or being repaired.
            tracing::warn!(error = %e, "read refused: object not readable now");
            s3_error!(
                ServiceUnavailable,
                "the object cannot be read right now ({e}); retry later"
            )
        }
        e @ (ClientError::Unavailable(_)
        | ClientError::Placement(_)
        | ClientError::WriteQuorum(_)) => {
            tracing::warn!(error = %e, "request failed: cluster degraded");
            s3_error!(ServiceUnavailable, "{e}")
        }
        ClientError::Stale(m) => s3_error!(
            OperationAborted,
            "a conflicting operation changed the object meanwhile ({m}); try again"
        ),
        ClientError::StorageFull(m) => {
            // 503: S3 SDKs retry it with backoff; writes resume once the
            // operator frees space on the metadata disk.
            tracing::warn!(error = %m, "write refused: metadata storage full");
            s3_error!(
                ServiceUnavailable,
                "metadata storage is full, writes are refused until space is freed ({m}); reads still work"
            )
        }
        e @ (ClientError::Io(_) | ClientError::Meta(_)) => {
            tracing::warn!(error = %e, "request failed");
            s3_error!(InternalError, "{e}")
        }
    }
}
