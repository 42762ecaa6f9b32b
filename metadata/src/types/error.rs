//! Application errors of the metadata service.

use serde::{Deserialize, Serialize};

use super::*;

/// Application errors of the metadata service, shared by the API, the
/// client and the gateway (which maps them to S3 codes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum MetaError {
    /// No such bucket.
    #[error("no such bucket: {0}")]
    NoSuchBucket(String),
    /// The bucket exists already.
    #[error("bucket already exists: {0}")]
    BucketExists(String),
    /// The bucket still has objects or uploads.
    #[error("bucket not empty: {0}")]
    BucketNotEmpty(String),
    /// No such key.
    #[error("no such key: {bucket}/{key}")]
    NoSuchKey {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// A write condition did not hold.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// Bad input.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Not enough chunkservers to place a stripe.
    #[error("cannot place {need} shards: {why}")]
    Placement {
        /// Shards wanted.
        need: usize,
        /// What is missing.
        why: String,
    },
    /// No such chunkserver.
    #[error("no such chunkserver: {0}")]
    NoSuchChunkserver(ChunkserverId),
    /// No such multipart upload.
    #[error("no such upload: {0}")]
    NoSuchUpload(String),
    /// A part named on completion is missing or has another ETag.
    #[error("invalid part: {0}")]
    InvalidPart(String),
    /// Parts named on completion are not in ascending order.
    #[error("invalid part order: {0}")]
    InvalidPartOrder(String),
    /// A part other than the last is below the minimum size.
    #[error("entity too small: {0}")]
    EntityTooSmall(String),
    /// The object would be larger than [`MAX_OBJECT_SIZE`].
    #[error("entity too large: {0}")]
    EntityTooLarge(String),
    /// No such access key.
    #[error("no such access key: {0}")]
    NoSuchAccessKey(String),
    /// A repair or other conditional update was planned against state that
    /// has since changed (overwrite, delete, another repair).
    #[error("stale: {0}")]
    Stale(String),
    /// A commit's write intent expired or is missing, or a shard it names
    /// is queued for deletion: the shards may be gone, so the object is not
    /// acknowledged. Retryable: write it again.
    #[error("write intent lost, retry the write: {0}")]
    IntentExpired(String),
    /// No such version of a key.
    #[error("no such version {version} of {bucket}/{key}")]
    NoSuchVersion {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The version asked for.
        version: String,
    },
    /// The bucket's state does not allow it (S3 `InvalidBucketState`, 409:
    /// suspending versioning with Object Lock on, enabling Object Lock
    /// without versioning).
    #[error("invalid bucket state: {0}")]
    InvalidBucketState(String),
    /// The version is protected by Object Lock (retention or legal hold):
    /// S3 answers 403 AccessDenied.
    #[error("object locked: {0}")]
    ObjectLocked(String),
}

impl From<InvalidInput> for MetaError {
    fn from(e: InvalidInput) -> Self {
        MetaError::Invalid(e.0)
    }
}
