//! The client library's one error type: it says what failed, so callers
//! (the CLI, the S3 gateway) can map it to a message or a status code.

use cairn_metadata::client::MetaClientError;
use cairn_metadata::types::MetaError;

/// Everything a client operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The bucket does not exist.
    #[error("no such bucket: {0}")]
    NoSuchBucket(String),
    /// The object does not exist.
    #[error("no such key: {bucket}/{key}")]
    NoSuchKey {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// The bucket exists already.
    #[error("bucket already exists: {0}")]
    BucketExists(String),
    /// The bucket is not empty.
    #[error("bucket not empty: {0}")]
    BucketNotEmpty(String),
    /// A conditional write's condition failed.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// Bad input (name, key, range, parameters).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A range outside the object.
    #[error("invalid range: {0}")]
    InvalidRange(String),
    /// Too few shards of a stripe could be read and verified.
    #[error("not enough shards for stripe {stripe}: {have} verified, {need} needed")]
    NotEnoughShards {
        /// Stripe number within the object.
        stripe: u64,
        /// Shards read and verified.
        have: usize,
        /// Shards needed (k).
        need: usize,
    },
    /// Too few chunkservers took a stripe's shards.
    #[error("write failed: {0}")]
    WriteQuorum(String),
    /// The cluster cannot place a stripe.
    #[error("cannot place shards: {0}")]
    Placement(String),
    /// The metadata service could not be reached.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// Reading the input or writing the output failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// No such multipart upload.
    #[error("no such upload: {0}")]
    NoSuchUpload(String),
    /// A part named on completion is missing or has another ETag.
    #[error("invalid part: {0}")]
    InvalidPart(String),
    /// Parts named on completion are out of order.
    #[error("invalid part order: {0}")]
    InvalidPartOrder(String),
    /// A part other than the last is too small.
    #[error("entity too small: {0}")]
    EntityTooSmall(String),
    /// The object would exceed the maximum object size.
    #[error("entity too large: {0}")]
    EntityTooLarge(String),
    /// No such access key.
    #[error("no such access key: {0}")]
    NoSuchAccessKey(String),
    /// The metadata service's disk is full: writes are refused, reads work.
    #[error("metadata storage full: {0}")]
    StorageFull(String),
    /// Anything else the metadata service said.
    #[error("metadata service error: {0}")]
    Meta(String),
    /// A conditional update was planned against a version that has since
    /// changed (e.g. tagging an object overwritten meanwhile).
    #[error("stale: {0}")]
    Stale(String),
    /// No such version of the key.
    #[error("no such version {version} of {bucket}/{key}")]
    NoSuchVersion {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The version asked for.
        version: String,
    },
    /// The bucket's state does not allow the request.
    #[error("invalid bucket state: {0}")]
    InvalidBucketState(String),
    /// Object Lock protects the version.
    #[error("object locked: {0}")]
    ObjectLocked(String),
}

impl From<MetaError> for ClientError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::NoSuchBucket(b) => ClientError::NoSuchBucket(b),
            MetaError::BucketExists(b) => ClientError::BucketExists(b),
            MetaError::BucketNotEmpty(b) => ClientError::BucketNotEmpty(b),
            MetaError::NoSuchKey { bucket, key } => ClientError::NoSuchKey { bucket, key },
            MetaError::PreconditionFailed(m) => ClientError::PreconditionFailed(m),
            MetaError::Invalid(m) => ClientError::Invalid(m),
            MetaError::Placement { need, why } => {
                ClientError::Placement(format!("need {need} chunkservers: {why}"))
            }
            e @ MetaError::NoSuchChunkserver(_) => ClientError::Meta(e.to_string()),
            MetaError::Stale(m) => ClientError::Stale(m),
            MetaError::NoSuchUpload(u) => ClientError::NoSuchUpload(u),
            MetaError::InvalidPart(m) => ClientError::InvalidPart(m),
            MetaError::InvalidPartOrder(m) => ClientError::InvalidPartOrder(m),
            MetaError::EntityTooSmall(m) => ClientError::EntityTooSmall(m),
            MetaError::EntityTooLarge(m) => ClientError::EntityTooLarge(m),
            MetaError::NoSuchAccessKey(k) => ClientError::NoSuchAccessKey(k),
            // Retryable: the write was not acknowledged (503 at the gateway).
            e @ MetaError::IntentExpired(_) => ClientError::Unavailable(e.to_string()),
            MetaError::NoSuchVersion {
                bucket,
                key,
                version,
            } => ClientError::NoSuchVersion {
                bucket,
                key,
                version,
            },
            MetaError::InvalidBucketState(m) => ClientError::InvalidBucketState(m),
            MetaError::ObjectLocked(m) => ClientError::ObjectLocked(m),
        }
    }
}

impl From<MetaClientError> for ClientError {
    fn from(e: MetaClientError) -> Self {
        match e {
            MetaClientError::Unavailable(m) => ClientError::Unavailable(m),
            MetaClientError::Refused(e) => ClientError::Meta(e.to_string()),
            MetaClientError::StorageFull(m) => ClientError::StorageFull(m),
        }
    }
}

/// Result alias of the client crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
