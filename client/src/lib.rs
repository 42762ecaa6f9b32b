//! Cairn's client library: the striped, erasure-coded write path and the
//! verified read path, plus bucket and object management.
//!
//! # Layout
//! - [`Client`] (this file): connection to the cluster, buckets, listing,
//!   head and delete.
//! - [`write`]: `put`: stream -> stripes -> k+m shards -> chunkservers ->
//!   manifest commit.
//! - [`read`]: `get`: manifest -> only the needed stripes -> data shards
//!   (parity and decode only when a shard is missing, slow or corrupt).
//! - [`multipart`]: multipart uploads (parts are stripes; completing
//!   concatenates them) and server-side copies.
//! - [`error`]: [`ClientError`], one enum for every failure.

pub mod error;
pub mod multipart;
pub mod read;
pub mod write;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cairn_chunkserver::client::ShardClient;
use cairn_metadata::client::{Consistency, MetaClient, MetaClientOptions};
use cairn_metadata::net::{ClientOptions, HttpClient};
use cairn_metadata::types::*;

pub use error::{ClientError, Result};
pub use read::{GetStream, StreamReader};
pub use write::PutOptions;

tokio::task_local! {
    /// The caller's share of [`ClientConfig::stripe_budget`], set around a
    /// request (the gateway: one semaphore per access key, filled in once
    /// the key is verified): every stripe of a `put` in that task takes a
    /// permit from it before the global one, so one caller cannot hold the
    /// whole budget.
    pub static STRIPE_SHARE: ShareSlot;
}

/// A slot for a [`STRIPE_SHARE`] semaphore, filled at most once.
#[derive(Clone, Default, Debug)]
pub struct ShareSlot(Arc<std::sync::OnceLock<Arc<tokio::sync::Semaphore>>>);

impl ShareSlot {
    /// Fills the slot (a second call is ignored).
    pub fn set(&self, s: Arc<tokio::sync::Semaphore>) {
        let _ = self.0.set(s);
    }

    /// The semaphore, if set.
    pub fn get(&self) -> Option<Arc<tokio::sync::Semaphore>> {
        self.0.get().cloned()
    }
}

/// How the client reaches and uses the cluster. Its `Debug` never shows
/// the secret.
#[derive(Clone)]
pub struct ClientConfig {
    /// Metadata node addresses (`host:port`); any one that is up will do.
    pub metadata: Vec<String>,
    /// Cluster secret.
    pub secret: String,
    /// Shards of a stripe that must be durable for a write to succeed when
    /// fewer than k + m chunkservers take them; `None` means k + 1 (capped
    /// at k + m).
    pub write_quorum: Option<usize>,
    /// Stripes encoded and uploaded concurrently by one `put`, and read
    /// ahead by one `get`: overlaps encoding with the network while bounding
    /// memory to about this many stripes.
    pub stripes_in_flight: usize,
    /// Objects of at most this many bytes are stored inline in their
    /// manifest (replicated by Raft) instead of as erasure-coded stripes;
    /// 0 disables it. Capped at [`MAX_INLINE`](cairn_metadata::types::MAX_INLINE).
    pub inline_max: usize,
    /// Stripes being written at once over every `put` of this client (a
    /// permit per stripe, from reading its bytes until its shards are
    /// durable): bounds a shared process's memory however many uploads run
    /// concurrently. `None`: only `stripes_in_flight` per call.
    pub stripe_budget: Option<Arc<tokio::sync::Semaphore>>,
    /// Timeout of one shard upload or download; a slower shard is treated
    /// as missing (reads go to parity, writes re-place it).
    pub shard_timeout: Duration,
    /// Re-placements tried for a shard whose upload failed.
    pub shard_retries: usize,
    /// Metadata client retry policy.
    pub meta: MetaClientOptions,
    /// Connection pool settings for chunkserver connections.
    pub pool: ClientOptions,
    /// Lease of a write's intent (see `write`): renewed every quarter of
    /// it while the write runs; a writer silent this long loses its write.
    pub intent_lease: Duration,
    /// Where to record shard call latency and errors per chunkserver (the
    /// S3 gateway exports them on `/metrics`); none by default.
    pub shard_metrics: Option<Arc<cairn_chunkserver::metrics::ShardClientMetrics>>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("metadata", &self.metadata)
            .field("secret", &"<redacted>")
            .field("write_quorum", &self.write_quorum)
            .field("stripes_in_flight", &self.stripes_in_flight)
            .field("inline_max", &self.inline_max)
            .field("stripe_budget", &self.stripe_budget)
            .field("shard_timeout", &self.shard_timeout)
            .field("shard_retries", &self.shard_retries)
            .field("meta", &self.meta)
            .field("pool", &self.pool)
            .field("intent_lease", &self.intent_lease)
            .field("shard_metrics", &self.shard_metrics.is_some())
            .finish()
    }
}

impl ClientConfig {
    /// Defaults for the given metadata addresses and secret.
    pub fn new(metadata: Vec<String>, secret: String) -> Self {
        ClientConfig {
            metadata,
            secret,
            write_quorum: None,
            stripes_in_flight: 4,
            inline_max: DEFAULT_INLINE_MAX,
            stripe_budget: None,
            shard_timeout: Duration::from_secs(10),
            shard_retries: 3,
            meta: MetaClientOptions::default(),
            pool: ClientOptions::default(),
            intent_lease: write::INTENT_LEASE,
            shard_metrics: None,
        }
    }
}

/// Default [`ClientConfig::inline_max`]: small objects (a few KiB) cost six
/// fsynced shard writes and k + m round trips when erasure coded; inline
/// they cost one Raft commit.
pub const DEFAULT_INLINE_MAX: usize = 16 * 1024;

/// Most bytes one PUT or one part may hold (S3's limit, 5 GiB): the one
/// commit that records them carries every stripe row, so this keeps every
/// log entry about a megabyte whatever the object's size. Larger objects
/// (up to `MAX_OBJECT_SIZE`, 5 TiB) are multipart uploads.
pub const MAX_WRITE_SIZE: u64 = 5 << 30;

/// How long the chunkserver address map is trusted before a refresh.
const CHUNKSERVER_CACHE_TTL: Duration = Duration::from_secs(10);

/// How long a bucket's settings are reused by writes. Safe to cache: a
/// manifest records its own erasure coding, and the commit itself checks
/// that the bucket exists.
const BUCKET_CACHE_TTL: Duration = Duration::from_secs(5);

pub(crate) struct Inner {
    pub(crate) cfg: ClientConfig,
    pub(crate) meta: MetaClient,
    pub(crate) shards: ShardClient,
    chunkservers: RwLock<(Option<Instant>, HashMap<ChunkserverId, ChunkserverInfo>)>,
    buckets: RwLock<HashMap<String, (Instant, BucketInfo)>>,
}

/// A handle on a Cairn cluster. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("metadata", &self.inner.cfg.metadata)
            .finish()
    }
}

/// Unwraps a query result into what the caller expects.
macro_rules! expect_result {
    ($res:expr, $pat:pat => $out:expr) => {
        match $res {
            $pat => Ok($out),
            QueryResult::Err(e) => Err(ClientError::from(e)),
            other => Err(ClientError::Meta(format!("unexpected reply {other:?}"))),
        }
    };
}
pub(crate) use expect_result;

impl Client {
    /// Builds a client and checks that the metadata service answers.
    pub async fn connect(cfg: ClientConfig) -> Result<Client> {
        let c = Client::new(cfg);
        c.inner.meta.status().await?;
        Ok(c)
    }

    /// Builds a client without contacting the cluster.
    pub fn new(cfg: ClientConfig) -> Client {
        let meta = MetaClient::new(cfg.metadata.clone(), cfg.secret.clone(), cfg.meta.clone());
        // Every chunkserver call of the client (uploads, reads, deletes of
        // a failed write) is bounded by `shard_timeout`, not the shard
        // client's 30 s default: a hung chunkserver must cost a re-placement
        // or a parity read, never a half-minute stall.
        let mut shards = ShardClient::new(HttpClient::new(&cfg.pool), cfg.secret.clone())
            .with_timeout(cfg.shard_timeout);
        if let Some(m) = &cfg.shard_metrics {
            shards = shards.with_metrics(m.clone());
        }
        Client {
            inner: Arc::new(Inner {
                cfg,
                meta,
                shards,
                chunkservers: RwLock::new((None, HashMap::new())),
                buckets: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// The metadata client, for admin commands.
    pub fn meta(&self) -> &MetaClient {
        &self.inner.meta
    }

    /// Creates a bucket with erasure coding `ec` and `shard_size`-byte shards.
    pub async fn create_bucket(&self, name: &str, ec: EcParams, shard_size: u32) -> Result<()> {
        self.create_bucket_owned(name, ec, shard_size, "").await
    }

    /// [`Client::create_bucket`] owned by access key `owner` ("" for the
    /// cluster admin).
    pub async fn create_bucket_owned(
        &self,
        name: &str,
        ec: EcParams,
        shard_size: u32,
        owner: &str,
    ) -> Result<()> {
        validate_bucket_name(name).map_err(|e| ClientError::Invalid(e.0))?;
        ec.validate().map_err(|e| ClientError::Invalid(e.0))?;
        if shard_size == 0 || shard_size > MAX_SHARD_SIZE {
            return Err(ClientError::Invalid(format!(
                "shard size must be 1 to {MAX_SHARD_SIZE} bytes"
            )));
        }
        let cmd = Command::CreateBucket {
            bucket: BucketInfo {
                name: name.to_string(),
                ec,
                shard_size,
                created_ms: now_ms(),
                owner: owner.to_string(),
            },
        };
        self.inner.write(cmd).await
    }

    /// Deletes an empty bucket.
    pub async fn delete_bucket(&self, name: &str) -> Result<()> {
        if let Ok(mut m) = self.inner.buckets.write() {
            m.remove(name);
        }
        self.inner
            .write(Command::DeleteBucket {
                name: name.to_string(),
            })
            .await
    }

    /// A bucket's settings for a write: from a short-lived cache (see
    /// `BUCKET_CACHE_TTL`), saving a linearizable read per PUT.
    pub(crate) async fn bucket_for_write(&self, name: &str) -> Result<BucketInfo> {
        if let Ok(m) = self.inner.buckets.read() {
            if let Some((t, b)) = m.get(name) {
                if t.elapsed() < BUCKET_CACHE_TTL {
                    return Ok(b.clone());
                }
            }
        }
        let b = self.bucket(name).await?;
        if let Ok(mut m) = self.inner.buckets.write() {
            if m.len() > 10_000 {
                m.clear();
            }
            m.insert(name.to_string(), (Instant::now(), b.clone()));
        }
        Ok(b)
    }

    /// One bucket.
    pub async fn bucket(&self, name: &str) -> Result<BucketInfo> {
        let r = self
            .inner
            .meta
            .query(
                &Query::GetBucket {
                    name: name.to_string(),
                },
                Consistency::Linearizable,
            )
            .await?;
        expect_result!(r, QueryResult::Bucket(b) => b)
    }

    /// Every bucket.
    pub async fn list_buckets(&self) -> Result<Vec<BucketInfo>> {
        let r = self
            .inner
            .meta
            .query(&Query::ListBuckets, Consistency::Linearizable)
            .await?;
        expect_result!(r, QueryResult::Buckets(b) => b)
    }

    /// An object's manifest (linearizable). Its `stripes` hold at most
    /// [`STRIPE_PAGE_MAX`] of the object's stripes, the first ones;
    /// [`read::stripe_count`] gives the total and [`Client::stripes`]
    /// pages through the rest.
    pub async fn head(&self, bucket: &str, key: &str) -> Result<ObjectManifest> {
        self.inner.manifest(bucket, key).await
    }

    /// Version `version` of `bucket/key` (the newest when `None`, which
    /// may be a delete marker) with at most [`STRIPE_PAGE_MAX`] of its
    /// stripes, and where it stands in the key's chain (linearizable).
    pub async fn head_version(
        &self,
        bucket: &str,
        key: &str,
        version: Option<VersionRef>,
    ) -> Result<VersionView> {
        let r = self
            .inner
            .meta
            .query(
                &Query::GetVersionPage {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    version,
                    stripes: STRIPE_PAGE_MAX,
                },
                Consistency::Linearizable,
            )
            .await?;
        expect_result!(r, QueryResult::Version(v) => v)
    }

    /// Deletes `bucket/key`: with `version`, that version for good;
    /// without, the current version (unversioned bucket) or by adding a
    /// delete marker. Returns the version made or removed when the bucket
    /// has versioning configured. A missing key or version is not an error.
    /// `bypass_governance` lets a version under GOVERNANCE retention go
    /// (the caller checked the requester may).
    pub async fn delete_version(
        &self,
        bucket: &str,
        key: &str,
        version: Option<VersionRef>,
        bypass_governance: bool,
    ) -> Result<Option<VersionStamp>> {
        validate_key(key).map_err(|e| ClientError::Invalid(e.0))?;
        let cmd = match version {
            Some(version) => Command::DeleteObjectVersion {
                bucket: bucket.to_string(),
                key: key.to_string(),
                version,
                bypass_governance,
            },
            None => Command::DeleteObject {
                bucket: bucket.to_string(),
                key: key.to_string(),
                condition: PutCondition::None,
            },
        };
        self.inner.write_versioned(cmd).await
    }

    /// Sets a bucket's versioning state (`Enabled` or `Suspended`).
    pub async fn set_versioning(&self, bucket: &str, state: Versioning) -> Result<()> {
        self.inner
            .write(Command::PutBucketVersioning {
                bucket: bucket.to_string(),
                state,
            })
            .await
    }

    /// A bucket's versioning state.
    pub async fn versioning(&self, bucket: &str) -> Result<Versioning> {
        let r = self
            .inner
            .meta
            .query(
                &Query::GetBucketVersioning {
                    bucket: bucket.to_string(),
                },
                Consistency::Linearizable,
            )
            .await?;
        expect_result!(r, QueryResult::Versioning(v) => v)
    }

    /// Enables Object Lock on a bucket (versioning must be enabled) and
    /// sets its default retention.
    pub async fn put_object_lock(&self, bucket: &str, config: ObjectLockConfig) -> Result<()> {
        self.inner
            .write(Command::PutObjectLockConfig {
                bucket: bucket.to_string(),
                config,
            })
            .await
    }

    /// A bucket's Object Lock configuration (`None`: not enabled).
    pub async fn object_lock(&self, bucket: &str) -> Result<Option<ObjectLockConfig>> {
        let r = self
            .inner
            .meta
            .query(
                &Query::GetObjectLockConfig {
                    bucket: bucket.to_string(),
                },
                Consistency::Linearizable,
            )
            .await?;
        expect_result!(r, QueryResult::ObjectLock(c) => c)
    }

    /// Sets (or with `None` removes) a version's retention.
    pub async fn put_retention(
        &self,
        bucket: &str,
        key: &str,
        version: Option<VersionRef>,
        retention: Option<Retention>,
        bypass_governance: bool,
    ) -> Result<()> {
        self.inner
            .write(Command::PutObjectRetention {
                bucket: bucket.to_string(),
                key: key.to_string(),
                version,
                retention,
                bypass_governance,
            })
            .await
    }

    /// Places or lifts a version's legal hold.
    pub async fn put_legal_hold(
        &self,
        bucket: &str,
        key: &str,
        version: Option<VersionRef>,
        on: bool,
    ) -> Result<()> {
        self.inner
            .write(Command::PutObjectLegalHold {
                bucket: bucket.to_string(),
                key: key.to_string(),
                version,
                on,
            })
            .await
    }

    /// One page of a version listing.
    pub async fn list_versions(&self, req: ListVersionsRequest) -> Result<VersionPage> {
        let r = self
            .inner
            .meta
            .query(&Query::ListVersions(req), Consistency::Linearizable)
            .await?;
        expect_result!(r, QueryResult::Versions(p) => p)
    }

    /// Deletes an object (a missing key is not an error, as in S3).
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        validate_key(key).map_err(|e| ClientError::Invalid(e.0))?;
        self.inner
            .write(Command::DeleteObject {
                bucket: bucket.to_string(),
                key: key.to_string(),
                condition: PutCondition::None,
            })
            .await
    }

    /// Replaces the tags of `bucket/key` if its live version is still
    /// `version` (`MetaError::Stale` otherwise: it was overwritten since).
    pub async fn put_tags(
        &self,
        bucket: &str,
        key: &str,
        version: StripeId,
        tags: BTreeMap<String, String>,
    ) -> Result<()> {
        validate_key(key).map_err(|e| ClientError::Invalid(e.0))?;
        self.inner
            .write(Command::PutObjectTags {
                bucket: bucket.to_string(),
                key: key.to_string(),
                version,
                tags,
            })
            .await
    }

    /// Sets (replaces) a bucket's CORS rules.
    pub async fn put_bucket_cors(&self, bucket: &str, rules: Vec<CorsRule>) -> Result<()> {
        self.inner
            .write(Command::PutBucketCors {
                bucket: bucket.to_string(),
                rules,
            })
            .await
    }

    /// Drops a bucket's CORS rules.
    pub async fn delete_bucket_cors(&self, bucket: &str) -> Result<()> {
        self.inner
            .write(Command::DeleteBucketCors {
                bucket: bucket.to_string(),
            })
            .await
    }

    /// A bucket's CORS rules (empty: none). `consistency` lets the
    /// gateway's per-request CORS check read a follower's state.
    pub async fn bucket_cors(
        &self,
        bucket: &str,
        consistency: Consistency,
    ) -> Result<Vec<CorsRule>> {
        let r = self
            .inner
            .meta
            .query(
                &Query::GetBucketCors {
                    bucket: bucket.to_string(),
                },
                consistency,
            )
            .await?;
        expect_result!(r, QueryResult::BucketCors(c) => c)
    }

    /// Sets (replaces; empty drops) a bucket's tags.
    pub async fn put_bucket_tags(
        &self,
        bucket: &str,
        tags: BTreeMap<String, String>,
    ) -> Result<()> {
        self.inner
            .write(Command::PutBucketTagging {
                bucket: bucket.to_string(),
                tags,
            })
            .await
    }

    /// Drops a bucket's tags.
    pub async fn delete_bucket_tags(&self, bucket: &str) -> Result<()> {
        self.inner
            .write(Command::DeleteBucketTagging {
                bucket: bucket.to_string(),
            })
            .await
    }

    /// A bucket's tags (empty: none).
    pub async fn bucket_tags(&self, bucket: &str) -> Result<BTreeMap<String, String>> {
        let r = self
            .inner
            .meta
            .query(
                &Query::GetBucketTagging {
                    bucket: bucket.to_string(),
                },
                Consistency::Linearizable,
            )
            .await?;
        expect_result!(r, QueryResult::BucketTags(t) => t)
    }

    /// One page of a listing.
    pub async fn list(&self, req: ListRequest) -> Result<ListPage> {
        let r = self
            .inner
            .meta
            .query(&Query::ListObjects(req), Consistency::Linearizable)
            .await?;
        expect_result!(r, QueryResult::List(p) => p)
    }

    /// Every chunkserver the cluster knows.
    pub async fn chunkservers(&self) -> Result<Vec<ChunkserverInfo>> {
        self.inner.refresh_chunkservers().await
    }
}

/// Largest shard size a bucket may use: bounds the memory of one stripe.
pub const MAX_SHARD_SIZE: u32 = 16 << 20;

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Inner {
    pub(crate) async fn write(&self, cmd: Command) -> Result<()> {
        self.write_versioned(cmd).await.map(|_| ())
    }

    /// [`Inner::write`] that returns the version a write made in a bucket
    /// with versioning configured (`None` otherwise).
    pub(crate) async fn write_versioned(&self, cmd: Command) -> Result<Option<VersionStamp>> {
        match self.meta.write(&cmd).await? {
            CommandResult::Ok | CommandResult::Registered { .. } => Ok(None),
            CommandResult::Version(v) => Ok(Some(v)),
            CommandResult::Err(e) => Err(e.into()),
            other @ CommandResult::Batch(_) => {
                Err(ClientError::Meta(format!("unexpected reply {other:?}")))
            }
        }
    }

    /// The manifest of `bucket/key` with at most [`STRIPE_PAGE_MAX`] of its
    /// stripes: the reply does not grow with the object. A read pages
    /// through the rest ([`crate::read`]).
    pub(crate) async fn manifest(&self, bucket: &str, key: &str) -> Result<ObjectManifest> {
        let r = self
            .meta
            .query(
                &Query::GetObjectPage {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    stripes: STRIPE_PAGE_MAX,
                },
                Consistency::Linearizable,
            )
            .await?;
        expect_result!(r, QueryResult::Object(m) => m)
    }

    async fn refresh_chunkservers(&self) -> Result<Vec<ChunkserverInfo>> {
        let r = self
            .meta
            .query(&Query::ListChunkservers, Consistency::Stale)
            .await?;
        let list = expect_result!(r, QueryResult::Chunkservers(c) => c)?;
        if let Ok(mut g) = self.chunkservers.write() {
            g.0 = Some(Instant::now());
            g.1 = list.iter().map(|c| (c.id, c.clone())).collect();
        }
        Ok(list)
    }

    /// The address of chunkserver `id`, from a cache refreshed when stale or
    /// when `id` is unknown.
    pub(crate) async fn chunkserver_addr(&self, id: ChunkserverId) -> Result<String> {
        let fresh = |g: &(Option<Instant>, HashMap<ChunkserverId, ChunkserverInfo>)| {
            g.0.is_some_and(|t| t.elapsed() < CHUNKSERVER_CACHE_TTL)
        };
        if let Ok(g) = self.chunkservers.read() {
            if fresh(&g) {
                if let Some(c) = g.1.get(&id) {
                    return Ok(c.addr.clone());
                }
            }
        }
        let list = self.refresh_chunkservers().await?;
        list.into_iter()
            .find(|c| c.id == id)
            .map(|c| c.addr)
            .ok_or_else(|| ClientError::Meta(format!("unknown chunkserver {id}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_secret() {
        let c = ClientConfig::new(vec!["127.0.0.1:1".into()], "hunter2".into());
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2") && d.contains("redacted"), "{d}");
    }
}
