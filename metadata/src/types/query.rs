//! Reads against the state machine: queries, listings, the placement
//! audit, and their results.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;

/// A read against the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Query {
    /// One bucket.
    GetBucket {
        /// Name.
        name: String,
    },
    /// All buckets, by name.
    ListBuckets,
    /// An object's manifest.
    GetObject {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// List objects (S3 ListObjectsV2 semantics).
    ListObjects(ListRequest),
    /// Every chunkserver.
    ListChunkservers,
    /// Choose chunkservers for a new stripe of `bucket`.
    Allocate {
        /// The bucket (its EC params give k + m).
        bucket: String,
        /// Chunkservers not to use (e.g. ones that just failed an upload).
        #[serde(default)]
        exclude: Vec<ChunkserverId>,
        /// How many shards to place; defaults to k + m.
        #[serde(default)]
        count: Option<usize>,
        /// Accept a placement of at least this many servers when fewer than
        /// `count` are usable (a degraded write); defaults to `count`.
        #[serde(default)]
        min: Option<usize>,
        /// Chunkservers already holding (or being written) other shards of
        /// the same stripe: never chosen, and counted toward the zone cap
        /// (re-placing one shard of a stripe mid-write).
        #[serde(default)]
        placed: Vec<ChunkserverId>,
    },
    /// One page of the placement audit: every stripe of every object, then
    /// of every uploaded part, checked against the placement invariant
    /// (`cairn admin audit-placement`).
    AuditPlacement {
        /// Where the previous page stopped (`AuditPage::next`); `None`
        /// starts at the beginning.
        #[serde(default)]
        cursor: Option<String>,
        /// Stop after about this many stripes (capped at
        /// [`AUDIT_PAGE_STRIPES`]; a manifest is never split).
        #[serde(default)]
        stripes: Option<u64>,
    },
    /// The repair queue, most urgent first.
    RepairQueue {
        /// At most this many items.
        limit: usize,
    },
    /// One access key; its secret only to a role allowed it
    /// ([`crate::auth::may_read_secrets`]), otherwise empty.
    GetAccessKey {
        /// Its id.
        id: String,
    },
    /// Every access key (their secrets empty).
    ListAccessKeys,
    /// One multipart upload.
    GetUpload {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Upload id.
        upload: StripeId,
    },
    /// Parts of an upload, by number, after `after`.
    ListParts {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Upload id.
        upload: StripeId,
        /// Only parts numbered above this.
        after: u32,
        /// At most this many (capped at 1000).
        max: u32,
    },
    /// Uploads in progress in a bucket, by key then upload id.
    ListUploads {
        /// Bucket.
        bucket: String,
        /// Only keys starting with this.
        #[serde(default)]
        prefix: String,
        /// Only uploads after this (key, upload id) position.
        #[serde(default)]
        after: Option<(String, Option<StripeId>)>,
        /// At most this many (capped at 1000).
        max: u32,
    },
    /// An object's manifest with only its first `stripes` stripes (capped
    /// at [`STRIPE_PAGE_MAX`]): the head of a read, which pages through
    /// the rest with [`Query::ObjectStripes`]. The reply does not grow
    /// with the object (a 5 TiB object has 1.3 million stripes).
    GetObjectPage {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// At most this many stripes, from the first.
        stripes: u32,
    },
    /// Stripes `from..from + limit` of version `version` of an object
    /// (`limit` capped at [`STRIPE_PAGE_MAX`]). `Err(Stale)` when that
    /// version is no longer stored (replaced or deleted; a noncurrent
    /// version of a versioned key is still served).
    ObjectStripes {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The version a read started on.
        version: StripeId,
        /// First stripe number.
        from: u64,
        /// At most this many.
        limit: u32,
    },
    /// A bucket's CORS rules ([`QueryResult::BucketCors`], empty when it
    /// has none); `Err(NoSuchBucket)` when the bucket does not exist.
    GetBucketCors {
        /// Bucket.
        bucket: String,
    },
    /// A bucket's tags ([`QueryResult::BucketTags`], empty when it has
    /// none); `Err(NoSuchBucket)` when the bucket does not exist.
    GetBucketTagging {
        /// Bucket.
        bucket: String,
    },
    /// A bucket's versioning state ([`QueryResult::Versioning`]).
    GetBucketVersioning {
        /// Bucket.
        bucket: String,
    },
    /// One version of a key with up to `stripes` of its stripes
    /// ([`QueryResult::Version`]): the one `version` names, or the newest
    /// (which may be a delete marker) when `None`. `Err(NoSuchVersion)` /
    /// `Err(NoSuchKey)` when there is none.
    GetVersionPage {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The version, or the newest.
        version: Option<VersionRef>,
        /// At most this many stripes (capped at [`STRIPE_PAGE_MAX`]).
        stripes: u32,
    },
    /// A page of ListObjectVersions ([`QueryResult::Versions`]).
    ListVersions(ListVersionsRequest),
    /// A bucket's Object Lock configuration ([`QueryResult::ObjectLock`],
    /// `None` when Object Lock is not enabled).
    GetObjectLockConfig {
        /// Bucket.
        bucket: String,
    },
    // --- Issue 14 (security). ---
    /// The audit log of admin actions, newest first
    /// ([`QueryResult::AuditLog`]).
    AuditLog {
        /// At most this many records.
        limit: u32,
    },
}

/// Most stripes one [`Query::GetObjectPage`] or [`Query::ObjectStripes`]
/// reply carries (about 0.4 MB; 4 GiB of data at 4 MiB stripes).
pub const STRIPE_PAGE_MAX: u32 = 1024;

/// Parameters of an object listing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRequest {
    /// Bucket.
    pub bucket: String,
    /// Only keys starting with this.
    #[serde(default)]
    pub prefix: String,
    /// Roll keys up to common prefixes at the first occurrence of this after
    /// the prefix.
    #[serde(default)]
    pub delimiter: Option<String>,
    /// Start after this key (exclusive).
    #[serde(default)]
    pub start_after: Option<String>,
    /// Continuation token from a previous page (takes precedence over
    /// `start_after`).
    #[serde(default)]
    pub continuation: Option<String>,
    /// At most this many keys + common prefixes (S3 caps at 1000).
    pub max_keys: u32,
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    /// Key.
    pub key: String,
    /// Size.
    pub size: u64,
    /// ETag.
    pub etag: String,
    /// Creation time, ms.
    pub created_ms: u64,
}

/// A page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPage {
    /// Objects, by key.
    pub entries: Vec<ListEntry>,
    /// Common prefixes, sorted.
    pub common_prefixes: Vec<String>,
    /// More results follow.
    pub truncated: bool,
    /// Pass back as `continuation` to get the next page.
    pub next_continuation: Option<String>,
}

/// The answer to a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryResult {
    /// A bucket.
    Bucket(BucketInfo),
    /// Buckets.
    Buckets(Vec<BucketInfo>),
    /// A manifest.
    Object(ObjectManifest),
    /// A listing page.
    List(ListPage),
    /// Chunkservers.
    Chunkservers(Vec<ChunkserverInfo>),
    /// Placement: one chunkserver per shard index.
    Placement(Vec<ChunkserverInfo>),
    /// Queued repairs.
    Repairs(Vec<RepairItem>),
    /// An access key.
    AccessKey(AccessKey),
    /// Access keys.
    AccessKeys(Vec<AccessKey>),
    /// A multipart upload.
    Upload(UploadInfo),
    /// Parts of an upload (without their stripes), and whether more follow.
    Parts {
        /// The parts, by number.
        parts: Vec<(PartInfo, u64)>,
        /// More parts follow.
        truncated: bool,
    },
    /// Uploads, and whether more follow.
    Uploads {
        /// The uploads.
        uploads: Vec<UploadInfo>,
        /// More uploads follow.
        truncated: bool,
    },
    /// A page of the placement audit.
    Audit(AuditPage),
    /// Refused.
    Err(MetaError),
    /// A page of an object version's stripes ([`Query::ObjectStripes`]).
    Stripes(Vec<StripeManifest>),
    /// A bucket's CORS rules ([`Query::GetBucketCors`]).
    BucketCors(Vec<CorsRule>),
    /// A bucket's tags ([`Query::GetBucketTagging`]).
    BucketTags(BTreeMap<String, String>),
    /// A bucket's versioning state ([`Query::GetBucketVersioning`]).
    Versioning(Versioning),
    /// One version of a key ([`Query::GetVersionPage`]).
    Version(VersionView),
    /// A page of versions ([`Query::ListVersions`]).
    Versions(VersionPage),
    /// A bucket's Object Lock configuration ([`Query::GetObjectLockConfig`]).
    ObjectLock(Option<ObjectLockConfig>),
    // --- Issue 14 (security). ---
    /// Audit log records, newest first ([`Query::AuditLog`]).
    AuditLog(Vec<AuditEntry>),
}

/// Most stripes one [`Query::AuditPlacement`] page walks: bounds the reply
/// and the time a read transaction is held.
pub const AUDIT_PAGE_STRIPES: u64 = 100_000;

/// What breaks the placement invariant in one stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// Two or more shards of the stripe on one chunkserver.
    SameChunkserver,
    /// More shards of the stripe in one zone than the zone cap.
    ZoneCap,
    /// A shard on a chunkserver the metadata service does not know (never
    /// registered or removed).
    UnknownChunkserver,
    /// The reverse shard index disagrees with the rows: a placed shard
    /// without its index row (or with another owner's), or an index row no
    /// row places. Never expected: a bug in the model.
    Index,
}

/// One violation of the placement invariant found by the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementViolation {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// The multipart upload, when the stripe belongs to an uploaded part.
    #[serde(default)]
    pub upload: Option<StripeId>,
    /// The part number, for a part.
    #[serde(default)]
    pub part: Option<u32>,
    /// Stripe number within the object (or part).
    pub stripe: u64,
    /// What is wrong.
    pub kind: ViolationKind,
    /// The chunkserver concerned (same-chunkserver and unknown kinds).
    #[serde(default)]
    pub chunkserver: Option<ChunkserverId>,
    /// The zone concerned (zone-cap kind).
    #[serde(default)]
    pub zone: Option<String>,
    /// The shard indexes concerned.
    pub indexes: Vec<u8>,
    /// A sentence for humans.
    pub detail: String,
}

/// A page of the placement audit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    /// Violations found in this page.
    pub violations: Vec<PlacementViolation>,
    /// Object manifests and uploaded parts walked in this page.
    pub manifests: u64,
    /// Stripes walked in this page.
    pub stripes: u64,
    /// Pass back as `cursor` for the next page; `None` when done.
    pub next: Option<String>,
}
