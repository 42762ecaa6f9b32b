//! S3 access keys and their bucket grants.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What an access key may do with one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketGrant {
    /// Read objects and list.
    #[serde(default)]
    pub read: bool,
    /// Write and delete objects, multipart uploads.
    #[serde(default)]
    pub write: bool,
    /// Delete the bucket (and everything read and write allow).
    #[serde(default)]
    pub owner: bool,
}

/// An S3 access key: SigV4 credentials and what they may touch. Its
/// `Debug` leaves the secret out (commands carrying keys get logged).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    /// Access key id (public, e.g. `GK...`).
    pub id: String,
    /// Secret access key (never listed by the CLI).
    pub secret: String,
    /// A human name.
    pub name: String,
    /// Creation time, ms since the epoch (stamped by the proposer).
    pub created_ms: u64,
    /// Full access to every bucket.
    #[serde(default)]
    pub admin: bool,
    /// Grants by bucket name. A key owns the buckets it creates (their
    /// `BucketInfo::owner` is its id) without a grant here.
    #[serde(default)]
    pub buckets: BTreeMap<String, BucketGrant>,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("name", &self.name)
            .field("created_ms", &self.created_ms)
            .field("admin", &self.admin)
            .field("buckets", &self.buckets)
            .finish()
    }
}
