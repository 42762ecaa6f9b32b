//! The chunkserver crate's one error type and its mapping to HTTP.
//!
//! Domain errors (a corrupt shard, too few shards, a full disk) are variants
//! of their own so callers can act on them; transport failures talking to a
//! remote chunkserver stay apart in [`Error::Net`].

use http::StatusCode;

use crate::ids::ShardId;
use cairn_metadata::net::NetError;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the codec, the store, the server or the
/// shard client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Erasure-coding parameters, a layout or a codec input are invalid.
    #[error("invalid parameters: {0}")]
    InvalidParams(String),
    /// Fewer than `need` (= k) shards of a stripe are available, so it cannot
    /// be rebuilt. Never answered with wrong data instead.
    #[error("not enough shards to reconstruct: have {have}, need {need}")]
    NotEnoughShards {
        /// Shards present.
        have: usize,
        /// Shards needed (k).
        need: usize,
    },
    /// A stored (or received) shard failed verification: bad header, short
    /// file or BLAKE3 mismatch. A stored one has been quarantined.
    #[error("shard {id} is corrupt: {reason}")]
    CorruptShard {
        /// The shard.
        id: ShardId,
        /// What was wrong.
        reason: String,
    },
    /// The shard file was written by a newer on-disk format this binary
    /// cannot read. It is left in place (not quarantined).
    #[error("shard {id} has on-disk format version {version}, which this build cannot read")]
    UnsupportedFormat {
        /// The shard.
        id: ShardId,
        /// Version found in its header.
        version: u16,
    },
    /// No shard with this id is stored here.
    #[error("no such shard {id}")]
    NoSuchShard {
        /// The shard.
        id: ShardId,
    },
    /// A shard with this id exists with different content (or metadata).
    #[error("shard {id} already exists with different content: {reason}")]
    Conflict {
        /// The shard.
        id: ShardId,
        /// What differs.
        reason: String,
    },
    /// Another write of the same shard id is in flight; retry later.
    #[error("a write of shard {id} is already in progress")]
    Busy {
        /// The shard.
        id: ShardId,
    },
    /// No data directory has room for the shard above its reserve.
    #[error("disk full: {0}")]
    DiskFull(String),
    /// The payload's length or BLAKE3 differs from what was declared.
    #[error("bad digest: {0}")]
    BadDigest(String),
    /// A request is malformed (bad id, header or range).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A shard payload exceeds the configured maximum.
    #[error("shard payload of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Declared length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// A local I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, and to which path.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Talking to a remote chunkserver failed at the transport level, or it
    /// answered with an error this crate has no variant for.
    #[error(transparent)]
    Net(#[from] NetError),
}

impl From<cairn_metadata::types::InvalidInput> for Error {
    /// Input refused by a shared type's parser (an id, parameters) is a bad
    /// request.
    fn from(e: cairn_metadata::types::InvalidInput) -> Self {
        Error::BadRequest(e.0)
    }
}

impl Error {
    /// Builds an [`Error::Io`] with `context`.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The HTTP status and machine-readable code the chunkserver answers this
    /// error with. The one place where errors become HTTP.
    pub fn http_status(&self) -> (StatusCode, &'static str) {
        match self {
            Error::InvalidParams(_) => (StatusCode::BAD_REQUEST, "InvalidParams"),
            Error::NotEnoughShards { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "NotEnoughShards"),
            Error::CorruptShard { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "CorruptShard"),
            Error::UnsupportedFormat { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "UnsupportedFormat")
            }
            Error::NoSuchShard { .. } => (StatusCode::NOT_FOUND, "NoSuchShard"),
            Error::Conflict { .. } => (StatusCode::CONFLICT, "Conflict"),
            Error::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "Busy"),
            Error::DiskFull(_) => (StatusCode::INSUFFICIENT_STORAGE, "DiskFull"),
            Error::BadDigest(_) => (StatusCode::BAD_REQUEST, "BadDigest"),
            Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            Error::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "TooLarge"),
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
                (StatusCode::INSUFFICIENT_STORAGE, "DiskFull")
            }
            Error::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "Internal"),
            Error::Net(NetError::Timeout) => (StatusCode::GATEWAY_TIMEOUT, "Timeout"),
            Error::Net(_) => (StatusCode::BAD_GATEWAY, "Upstream"),
        }
    }

    /// Rebuilds a typed error from a chunkserver's error reply about shard
    /// `id` (the inverse of [`Error::http_status`]); codes without a variant
    /// become [`NetError::Status`].
    pub fn from_remote(id: Option<ShardId>, status: u16, code: &str, message: String) -> Self {
        match (code, id) {
            ("NoSuchShard", Some(id)) => Error::NoSuchShard { id },
            ("CorruptShard", Some(id)) => Error::CorruptShard {
                id,
                reason: message,
            },
            ("Conflict", Some(id)) => Error::Conflict {
                id,
                reason: message,
            },
            ("Busy", Some(id)) => Error::Busy { id },
            ("DiskFull", _) => Error::DiskFull(message),
            ("BadDigest", _) => Error::BadDigest(message),
            _ => Error::Net(NetError::Status {
                status,
                error: code.to_string(),
                message,
                leader: None,
            }),
        }
    }
}
