//! The cluster model and the metadata API types (versioned by the `/v1/`
//! prefix of the HTTP API; every type is serde JSON).
//!
//! Everything a chunkserver, a client or the gateway exchanges with the
//! metadata service is defined here, in the lowest crate, so the crates above
//! share one definition.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A metadata node's Raft id.
pub type NodeId = u64;

/// A chunkserver's id, assigned by the metadata service at first
/// registration and persisted by the chunkserver. Never 0.
pub type ChunkserverId = u64;

/// Largest k + m: the Reed-Solomon GF(2^8) codec supports up to 256 shards,
/// but beyond 20 a stripe spans more failure domains than a cluster of
/// commodity machines has and repair reads grow without benefit.
pub const MAX_TOTAL_SHARDS: u8 = 20;

/// Erasure-coding parameters: `k` data shards and `m` parity shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EcParams {
    /// Data shards per stripe.
    pub k: u8,
    /// Parity shards per stripe: how many losses a stripe survives.
    pub m: u8,
}

impl Default for EcParams {
    fn default() -> Self {
        EcParams { k: 4, m: 2 }
    }
}

/// Why a value from the outside was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

impl EcParams {
    /// Validated constructor: 1 <= k, 1 <= m, k + m <= [`MAX_TOTAL_SHARDS`].
    pub fn new(k: u8, m: u8) -> Result<Self, InvalidInput> {
        let p = EcParams { k, m };
        p.validate()?;
        Ok(p)
    }

    /// Checks the bounds (values decoded from JSON bypass [`EcParams::new`]).
    pub fn validate(&self) -> Result<(), InvalidInput> {
        if self.k == 0 || self.m == 0 {
            return Err(InvalidInput(format!(
                "invalid erasure coding {}+{}: k and m must both be at least 1",
                self.k, self.m
            )));
        }
        if u16::from(self.k) + u16::from(self.m) > u16::from(MAX_TOTAL_SHARDS) {
            return Err(InvalidInput(format!(
                "invalid erasure coding {}+{}: k + m must be at most {MAX_TOTAL_SHARDS}",
                self.k, self.m
            )));
        }
        Ok(())
    }

    /// Data shards per stripe.
    pub fn k(&self) -> u8 {
        self.k
    }

    /// Parity shards per stripe.
    pub fn m(&self) -> u8 {
        self.m
    }

    /// k + m.
    pub fn total(&self) -> usize {
        usize::from(self.k) + usize::from(self.m)
    }
}

impl fmt::Display for EcParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{}", self.k, self.m)
    }
}

impl FromStr for EcParams {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            InvalidInput(format!(
                "invalid erasure coding {s:?}: expected K+M, e.g. 4+2"
            ))
        };
        let (k, m) = s.trim().split_once('+').ok_or_else(bad)?;
        let k: u8 = k.trim().parse().map_err(|_| bad())?;
        let m: u8 = m.trim().parse().map_err(|_| bad())?;
        EcParams::new(k, m)
    }
}

macro_rules! id128 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            /// A fresh random id.
            pub fn random() -> Self {
                $name(rand::random())
            }

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }

            /// Lowercase hex, 32 characters.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl FromStr for $name {
            type Err = InvalidInput;
            /// Exactly 32 lowercase hex characters.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let bad = || InvalidInput(format!("invalid {}: {:?}", stringify!($name), s));
                if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                    return Err(bad());
                }
                let mut out = [0u8; 16];
                hex::decode_to_slice(s, &mut out).map_err(|_| bad())?;
                Ok($name(out))
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

id128!(
    /// A shard's id: random 128 bits, never derived from user input. Its hex
    /// form is the shard's file name on a chunkserver.
    ShardId
);
id128!(
    /// A stripe's id: random 128 bits.
    StripeId
);

/// A BLAKE3 hash (32 bytes), hex in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hash32(pub [u8; 32]);

impl From<blake3::Hash> for Hash32 {
    fn from(h: blake3::Hash) -> Self {
        Hash32(*h.as_bytes())
    }
}

impl From<Hash32> for blake3::Hash {
    fn from(h: Hash32) -> Self {
        blake3::Hash::from_bytes(h.0)
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash32({self})")
    }
}
impl FromStr for Hash32 {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| InvalidInput(format!("invalid BLAKE3 hash {s:?}")))?;
        Ok(Hash32(out))
    }
}
impl Serialize for Hash32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}
impl<'de> Deserialize<'de> for Hash32 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Longest bucket name (S3's rule).
pub const MAX_BUCKET_NAME: usize = 63;
/// Longest object key in bytes (S3's rule).
pub const MAX_KEY_LEN: usize = 1024;

/// Checks a bucket name against S3's naming rules: 3-63 characters of
/// lowercase letters, digits, '.' and '-', starting and ending with a letter
/// or digit, no "..", not an IPv4 address.
pub fn validate_bucket_name(name: &str) -> Result<(), InvalidInput> {
    let bad = |why: &str| Err(InvalidInput(format!("invalid bucket name {name:?}: {why}")));
    if name.len() < 3 || name.len() > MAX_BUCKET_NAME {
        return bad("must be 3 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return bad("only lowercase letters, digits, '.' and '-' are allowed");
    }
    let first = name.as_bytes()[0];
    let last = name.as_bytes()[name.len() - 1];
    if !(first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric()) {
        return bad("must start and end with a letter or digit");
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return bad("adjacent periods or period-hyphen are not allowed");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return bad("must not be formatted as an IP address");
    }
    Ok(())
}

/// Checks an object key: 1 to [`MAX_KEY_LEN`] bytes of UTF-8 (guaranteed by
/// `&str`), no NUL (NUL separates bucket and key in the index).
pub fn validate_key(key: &str) -> Result<(), InvalidInput> {
    if key.is_empty() {
        return Err(InvalidInput("object key must not be empty".into()));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(InvalidInput(format!(
            "object key is {} bytes; the limit is {MAX_KEY_LEN}",
            key.len()
        )));
    }
    if key.contains('\0') {
        return Err(InvalidInput("object key must not contain NUL".into()));
    }
    Ok(())
}

/// A bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketInfo {
    /// The bucket's name (S3 rules).
    pub name: String,
    /// Erasure coding of new objects.
    pub ec: EcParams,
    /// Shard size in bytes for new objects: a stripe holds `k * shard_size`.
    pub shard_size: u32,
    /// Creation time, milliseconds since the Unix epoch (stamped by the
    /// proposer, never read from the clock inside `apply`).
    pub created_ms: u64,
    /// Access key id of the owner ("" for the cluster admin).
    pub owner: String,
}

/// Where one shard of a stripe lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardLoc {
    /// The chunkserver holding it; `None` when the shard was never written or
    /// is lost and awaits repair.
    pub chunkserver: Option<ChunkserverId>,
    /// The shard's id.
    pub shard: ShardId,
    /// BLAKE3 of the shard payload, as computed by the writer when encoding:
    /// every read and every rebuild is checked against it.
    pub blake3: Hash32,
}

/// One stripe of an object: `len` bytes of the object, erasure coded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripeManifest {
    /// The stripe's id.
    pub id: StripeId,
    /// Real data bytes in this stripe (the last stripe is shorter).
    pub len: u64,
    /// k + m shards, in shard-index order (data first, then parity).
    pub shards: Vec<ShardLoc>,
}

/// One part of a multipart object, in the order of the object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    /// The part number the client gave (1..=10000).
    pub number: u32,
    /// Bytes in the part.
    pub size: u64,
    /// The part's ETag (hex MD5, quoted form is added by the gateway).
    pub etag: String,
    /// Checksums of the part, by algorithm name.
    #[serde(default)]
    pub checksums: BTreeMap<String, String>,
    /// How many stripes of the object belong to this part.
    pub stripes: u32,
}

/// An object version's manifest: everything needed to read it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectManifest {
    /// A random id of this write; repair and GC use it to tell versions apart.
    pub version: StripeId,
    /// Object size in bytes.
    pub size: u64,
    /// ETag as S3 shows it, without quotes.
    pub etag: String,
    /// Content-Type.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Other standard headers kept and returned (Content-Encoding,
    /// Content-Disposition, Cache-Control, Content-Language, Expires), by
    /// lowercase name.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// User metadata (`x-amz-meta-*` without the prefix).
    #[serde(default)]
    pub user_meta: BTreeMap<String, String>,
    /// Client checksums by algorithm (e.g. `crc32c` -> base64 value).
    #[serde(default)]
    pub checksums: BTreeMap<String, String>,
    /// Creation time, ms since the Unix epoch (stamped by the writer).
    pub created_ms: u64,
    /// Erasure coding of every stripe.
    pub ec: EcParams,
    /// Shard size of full stripes.
    pub shard_size: u32,
    /// The stripes, in object order.
    pub stripes: Vec<StripeManifest>,
    /// For multipart objects, the parts in order.
    #[serde(default)]
    pub parts: Vec<PartInfo>,
    /// A small object's bytes, kept in the manifest itself (no stripes):
    /// see [`MAX_INLINE`].
    #[serde(default, skip_serializing_if = "crate::raft::codec::skip_none_in_json")]
    pub inline: Option<InlineData>,
}

/// Largest object (S3's limit, reached with multipart uploads).
pub const MAX_OBJECT_SIZE: u64 = 5 << 40;

/// Largest object stored inline in its manifest. Inline objects are
/// replicated by Raft to every metadata node (3 or 5 copies) instead of
/// being erasure coded: below this size six fsynced shard writes cost far
/// more than the bytes, and the copies cost little. Bounded so Raft entries
/// and snapshots stay small.
pub const MAX_INLINE: usize = 64 * 1024;

/// Bytes kept inline in a manifest, with their BLAKE3 (checked on every
/// read like a shard). Base64 in JSON.
#[derive(Clone, PartialEq, Eq)]
pub struct InlineData {
    /// The bytes.
    pub data: bytes::Bytes,
    /// BLAKE3 of `data`.
    pub blake3: Hash32,
}

impl InlineData {
    /// Wraps `data`, hashing it.
    pub fn new(data: bytes::Bytes) -> Self {
        let blake3 = Hash32::from(blake3::hash(&data));
        InlineData { data, blake3 }
    }

    /// Whether the bytes still match their hash.
    pub fn verify(&self) -> bool {
        Hash32::from(blake3::hash(&self.data)) == self.blake3
    }
}

impl fmt::Debug for InlineData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InlineData({} bytes, {})", self.data.len(), self.blake3)
    }
}

#[derive(Serialize, Deserialize)]
struct InlineWire<'a> {
    #[serde(borrow)]
    data: std::borrow::Cow<'a, str>,
    blake3: Hash32,
}

impl Serialize for InlineData {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        let data = base64::engine::general_purpose::STANDARD.encode(&self.data);
        InlineWire {
            data: data.into(),
            blake3: self.blake3,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for InlineData {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine;
        let w = InlineWire::deserialize(d)?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(w.data.as_bytes())
            .map_err(serde::de::Error::custom)?;
        Ok(InlineData {
            data: data.into(),
            blake3: w.blake3,
        })
    }
}

impl ObjectManifest {
    /// Every shard this manifest names that is placed on a chunkserver.
    pub fn placed_shards(&self) -> impl Iterator<Item = (ChunkserverId, ShardId)> + '_ {
        self.stripes
            .iter()
            .flat_map(|s| s.shards.iter())
            .filter_map(|l| l.chunkserver.map(|c| (c, l.shard)))
    }
}

/// A chunkserver's life-cycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChunkserverState {
    /// Heartbeating; takes new shards.
    Up,
    /// Missed heartbeats for longer than the suspect timeout; takes no new
    /// shards, still serves reads.
    Suspect,
    /// Missed heartbeats past the down timeout: its shards count as lost.
    Down,
    /// Being emptied by an operator; takes no new shards.
    Draining,
}

/// What the metadata service knows of a chunkserver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkserverInfo {
    /// Its id.
    pub id: ChunkserverId,
    /// Its shard API address (`ip:port`).
    pub addr: String,
    /// Its failure domain.
    pub zone: String,
    /// Bytes of capacity over all its disks.
    pub capacity: u64,
    /// Bytes free for new shards (above the reserve).
    pub free: u64,
    /// Bytes used by shards.
    pub used: u64,
    /// Shards stored.
    pub shard_count: u64,
    /// Last heartbeat written to the log, ms since the epoch (stamped by the
    /// leader).
    pub last_heartbeat_ms: u64,
    /// Life-cycle state.
    pub state: ChunkserverState,
}

/// What a conditional object write requires of the current version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PutCondition {
    /// Unconditional.
    #[default]
    None,
    /// `If-None-Match: *`: the key must not exist.
    IfNoneMatch,
    /// `If-Match: etag`: the key must exist with this ETag.
    IfMatch(String),
    /// The key must currently be exactly this version (repair and internal
    /// compare-and-swap).
    IfVersion(StripeId),
}

/// A state-machine command: the `D` of the Raft log. Time is always a field
/// stamped by the proposer: `apply` never reads a clock or a random source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// `inner`, applied at most once per `id`: clients wrap every write so a
    /// retry after an ambiguous failure (timeout, leader change) returns the
    /// first outcome instead of applying twice.
    Once {
        /// Random id chosen by the client, reused across its retries.
        id: StripeId,
        /// The command.
        inner: Box<Command>,
    },
    /// Several commands applied in order in one log entry (group commit by
    /// the leader's API); each has its own result.
    Batch {
        /// The commands.
        cmds: Vec<Command>,
    },
    /// `inner` (usually a `Batch`) stamped with the leader's clock when it
    /// proposed the log entry: the one time every command of the entry sees
    /// in `apply` (intent leases, GC queue times). Entries written before
    /// this wrapper existed carry no time; `apply` then uses 0 ("long ago":
    /// leases never expire, GC rows are due at once, as before).
    At {
        /// Leader's clock, ms since the epoch.
        now_ms: u64,
        /// The command.
        inner: Box<Command>,
    },
    /// Register (or renew) a write intent: the shards a writer is about to
    /// upload, named before the upload starts, so orphan GC never collects
    /// them while the write is in progress. Creates the intent when it is
    /// new; always extends its lease to entry time + `lease_ms` (O(1) in the
    /// shards registered before) and adds `shards`.
    RegisterIntent {
        /// Intent id, chosen by the writer.
        intent: StripeId,
        /// (chunkserver, shard) pairs about to be uploaded (may be empty:
        /// a plain renewal).
        shards: Vec<(ChunkserverId, ShardId)>,
        /// Lease length from the entry's time.
        lease_ms: u64,
    },
    /// Commit `inner` (a `PutObject` or `PutPart`) on behalf of write intent
    /// `intent`: refused with [`MetaError::IntentExpired`] (retryable; the
    /// write is not acknowledged) when the intent is missing or its lease
    /// ran out, or when a shard the commit places was not registered under
    /// it or is queued for GC. On success the intent and its shard rows are
    /// dropped: the committed manifest or part now names the shards.
    WithIntent {
        /// The writer's intent.
        intent: StripeId,
        /// The commit.
        inner: Box<Command>,
    },
    /// Drop write intents whose lease ended before the entry's time (the
    /// leader's intent reaper), oldest first, removing at most `limit` rows:
    /// their uncommitted shards become ordinary orphans.
    ExpireIntents {
        /// Most shard rows removed by this command.
        limit: u32,
    },
    /// Create a bucket (fails if it exists).
    CreateBucket {
        /// The new bucket.
        bucket: BucketInfo,
    },
    /// Delete an empty bucket.
    DeleteBucket {
        /// Its name.
        name: String,
    },
    /// Commit an object manifest, atomically replacing any previous version
    /// (whose shards are queued for garbage collection).
    PutObject {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The new version.
        manifest: ObjectManifest,
        /// Condition on the current version.
        #[serde(default)]
        condition: PutCondition,
    },
    /// Delete an object (its shards are queued for garbage collection).
    DeleteObject {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Condition on the current version.
        #[serde(default)]
        condition: PutCondition,
    },
    /// Register a new chunkserver; the reply carries its id.
    RegisterChunkserver {
        /// Shard API address.
        addr: String,
        /// Failure domain.
        zone: String,
        /// Capacity, bytes.
        capacity: u64,
        /// Free bytes.
        free: u64,
        /// Leader's clock, ms since the epoch.
        now_ms: u64,
    },
    /// Record a chunkserver's latest stats (written by the leader from
    /// heartbeats, at most every few seconds per chunkserver).
    ChunkserverStats {
        /// Which.
        id: ChunkserverId,
        /// Current address (may change across restarts).
        addr: String,
        /// Zone.
        zone: String,
        /// Capacity, bytes.
        capacity: u64,
        /// Free bytes.
        free: u64,
        /// Bytes used by shards.
        used: u64,
        /// Shards stored.
        shard_count: u64,
        /// Leader's clock, ms since the epoch.
        now_ms: u64,
    },
    /// Change a chunkserver's state (the leader's failure detector, or an
    /// operator's drain).
    SetChunkserverState {
        /// Which.
        id: ChunkserverId,
        /// New state.
        state: ChunkserverState,
    },
    /// Queue shards for repair (reported missing or corrupt by a reader,
    /// or never written by a degraded write).
    QueueRepair {
        /// What to repair.
        items: Vec<RepairItem>,
    },
    /// Chunkservers confirmed these shards deleted: drop them from the GC
    /// queue.
    GcDone {
        /// Which chunkserver.
        chunkserver: ChunkserverId,
        /// Deleted shards.
        shards: Vec<ShardId>,
    },
    /// Create or replace an S3 access key.
    PutAccessKey {
        /// The key, with its secret and grants.
        key: AccessKey,
    },
    /// Delete an S3 access key (deleting a missing key succeeds).
    DeleteAccessKey {
        /// Its id.
        id: String,
    },
    /// Start a multipart upload.
    CreateUpload {
        /// The upload.
        upload: UploadInfo,
    },
    /// Record one uploaded part (its stripes are already durable),
    /// replacing any earlier part with the same number (whose shards are
    /// queued for garbage collection).
    PutPart {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Upload id.
        upload: StripeId,
        /// The part.
        part: UploadPart,
    },
    /// Complete a multipart upload: the object's manifest concatenates the
    /// listed parts' stripes (no data is rewritten); parts not listed are
    /// queued for garbage collection, as is the replaced object version.
    CompleteUpload {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Upload id.
        upload: StripeId,
        /// The parts, in the client's order, with the ETags it expects.
        parts: Vec<CompletePart>,
        /// Every part but the last must hold at least this many bytes.
        min_part_size: u64,
        /// The object's ETag (`md5-of-part-md5s-N`, computed by the
        /// gateway from the listed ETags, which `apply` checks).
        etag: String,
        /// The new version id.
        version: StripeId,
        /// Whole-object checksums to record.
        #[serde(default)]
        checksums: BTreeMap<String, String>,
        /// Proposer's clock, ms since the epoch.
        now_ms: u64,
        /// Condition on the current version.
        #[serde(default)]
        condition: PutCondition,
    },
    /// Abort a multipart upload: its parts' shards are queued for garbage
    /// collection.
    AbortUpload {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Upload id.
        upload: StripeId,
    },
    /// A chunkserver found these shards corrupt, truncated or missing
    /// (scrub or read): they count as lost until repaired.
    ReportBadShards {
        /// Which chunkserver.
        chunkserver: ChunkserverId,
        /// The shards.
        shards: Vec<ShardId>,
    },
    /// Forget bad-shard reports (repaired, seen healthy again, or no longer
    /// named by any manifest), and the repair-queue items about these
    /// copies.
    ClearBadShards {
        /// Which chunkserver.
        chunkserver: ChunkserverId,
        /// The shards.
        shards: Vec<ShardId>,
    },
    /// A rebuilt shard is durable on `to`: move the placement there, but
    /// only if the object's live manifest is still `version` and the shard
    /// at `index` of stripe `stripe` is still `shard` on `from`. Otherwise
    /// the state is unchanged except that `(to, shard)` is queued for
    /// garbage collection, and the result is `Err(Stale)`. On success the
    /// old copy `(from, shard)` is queued for garbage collection and any
    /// repair-queue entry and bad report for it are dropped.
    CommitRepair {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The object version the repair was planned against.
        version: StripeId,
        /// Stripe number within the object.
        stripe: u64,
        /// Shard index within the stripe.
        index: u8,
        /// The shard.
        shard: ShardId,
        /// Where the manifest placed it when the repair was planned.
        from: Option<ChunkserverId>,
        /// Where the rebuilt copy now lives.
        to: ChunkserverId,
        /// The target found the shard already stored and kept that copy
        /// (no new write). Such a copy is refused if `to` confirmed deleting
        /// this shard recently (a GC tombstone): it may be gone.
        #[serde(default)]
        reused: bool,
    },
    /// Queue shards on a chunkserver for deletion (orphans found by
    /// inventory reconciliation, rebuilt copies nobody needs). The proposer
    /// has checked that no manifest or upload names them.
    QueueGc {
        /// Which chunkserver.
        chunkserver: ChunkserverId,
        /// The shards.
        shards: Vec<ShardId>,
    },
    /// Forget a chunkserver. Refused (`Invalid`) while any manifest or
    /// upload still places a shard on it.
    RemoveChunkserver {
        /// Which.
        id: ChunkserverId,
    },
}

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

/// An S3 access key: SigV4 credentials and what they may touch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadInfo {
    /// Upload id.
    pub id: StripeId,
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Start time, ms since the epoch.
    pub initiated_ms: u64,
    /// Access key id of the initiator ("" for the cluster admin).
    #[serde(default)]
    pub owner: String,
    /// Content-Type of the object to be.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Standard headers of the object to be.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// User metadata of the object to be.
    #[serde(default)]
    pub user_meta: BTreeMap<String, String>,
    /// Checksum algorithm the client announced, if any.
    #[serde(default)]
    pub checksum_algorithm: Option<String>,
    /// `COMPOSITE` or `FULL_OBJECT`, when an algorithm is set.
    #[serde(default)]
    pub checksum_type: Option<String>,
    /// Erasure coding of the parts (the bucket's at creation).
    pub ec: EcParams,
    /// Shard size of the parts' full stripes.
    pub shard_size: u32,
}

/// One uploaded part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadPart {
    /// Number, size, ETag, checksums (`stripes` is its stripe count).
    pub info: PartInfo,
    /// The part's stripes (the last may be short).
    pub stripes: Vec<StripeManifest>,
    /// Upload time, ms since the epoch.
    pub created_ms: u64,
}

/// A part named by CompleteMultipartUpload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletePart {
    /// Part number.
    pub number: u32,
    /// The ETag the client saw for it (quotes optional).
    pub etag: String,
}

/// One shard that needs rebuilding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairItem {
    /// Bucket of the object.
    pub bucket: String,
    /// Key of the object.
    pub key: String,
    /// The object version the report is about: a report about an older
    /// version is dropped when the repair is planned.
    pub version: StripeId,
    /// Stripe number within the object.
    pub stripe: u64,
    /// Shard index within the stripe.
    pub index: u8,
    /// The chunkserver the shard was on, if any.
    pub chunkserver: Option<ChunkserverId>,
    /// Why (missing, corrupt, timeout, never written).
    pub reason: String,
}

/// The outcome of applying a [`Command`]: the `R` of the Raft log.
/// Application-level refusals are values here, not Raft errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandResult {
    /// Done.
    Ok,
    /// A new chunkserver's id.
    Registered {
        /// The id.
        id: ChunkserverId,
    },
    /// One result per command of a [`Command::Batch`].
    Batch(Vec<CommandResult>),
    /// Refused: the state is unchanged.
    Err(MetaError),
}

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
}

impl From<InvalidInput> for MetaError {
    fn from(e: InvalidInput) -> Self {
        MetaError::Invalid(e.0)
    }
}

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
    /// One access key (with its secret: the API is cluster-internal).
    GetAccessKey {
        /// Its id.
        id: String,
    },
    /// Every access key.
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
}

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

/// A chunkserver's periodic report to the metadata service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// Its id, or `None` on first start (the reply assigns one).
    pub id: Option<ChunkserverId>,
    /// Its shard API address.
    pub addr: String,
    /// Failure domain.
    pub zone: String,
    /// Capacity, bytes.
    pub capacity: u64,
    /// Free bytes above the reserve.
    pub free: u64,
    /// Bytes used by shards.
    pub used: u64,
    /// Shards stored.
    pub shard_count: u64,
    /// Shards it found corrupt or missing since the last heartbeat.
    #[serde(default)]
    pub bad_shards: Vec<ShardId>,
    /// Shards it deleted on command since the last heartbeat.
    #[serde(default)]
    pub deleted: Vec<ShardId>,
    /// Repair tasks finished (or failed) since the last heartbeat.
    #[serde(default)]
    pub repairs: Vec<RepairReport>,
    /// Repair tasks still running on it.
    #[serde(default)]
    pub repairs_running: u32,
    /// Its scrubber's progress.
    #[serde(default)]
    pub scrub: Option<ScrubProgress>,
    /// The identity (UUID) of each of its data directories, in
    /// configuration order. A change (a replaced or emptied disk) makes the
    /// leader check that it still holds every shard placed on it.
    #[serde(default)]
    pub data_dirs: Vec<String>,
}

/// A command for a chunkserver, riding on a heartbeat reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkserverCommand {
    /// Delete these shards (garbage).
    Delete {
        /// Shards.
        shards: Vec<ShardId>,
    },
    /// Rebuild one shard from the survivors and store it here.
    Repair(RepairTask),
    /// Post the full shard inventory to `/v1/inventory` (orphan
    /// reconciliation), tagged with this round.
    SendInventory {
        /// Round number, echoed in every page.
        round: u64,
    },
    /// The metadata service places these shards on this chunkserver:
    /// report those it does not hold as bad shards on the next heartbeat
    /// ("named but absent", `cairn_metadata::absent`).
    CheckShards {
        /// Shards to look for.
        shards: Vec<ShardId>,
    },
}

/// One surviving shard a repair may read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairSource {
    /// Shard index within the stripe.
    pub index: u8,
    /// The shard.
    pub shard: ShardId,
    /// Address of the chunkserver holding it.
    pub addr: String,
    /// Its BLAKE3 from the manifest (the fetched copy must match).
    pub blake3: Hash32,
}

/// Rebuild shard `index` of a stripe and store it on the receiving
/// chunkserver under `shard`. The rebuilt payload must hash to `blake3` or
/// it is discarded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairTask {
    /// Leader-assigned task id (echoed in the report).
    pub task: u64,
    /// Bucket of the object.
    pub bucket: String,
    /// Key of the object.
    pub key: String,
    /// The object version planned against.
    pub version: StripeId,
    /// Stripe number within the object.
    pub stripe: u64,
    /// The stripe's id (shard file header).
    pub stripe_id: StripeId,
    /// Erasure coding of the stripe.
    pub ec: EcParams,
    /// Length of every shard of the stripe.
    pub shard_len: u64,
    /// The shard index to rebuild.
    pub index: u8,
    /// The shard's id.
    pub shard: ShardId,
    /// The shard's BLAKE3 from the manifest.
    pub blake3: Hash32,
    /// Where the manifest placed the shard when planned (for the commit).
    pub from: Option<ChunkserverId>,
    /// Every healthy surviving shard of the stripe (the target reads any
    /// k of them).
    pub sources: Vec<RepairSource>,
    /// Remaining redundancy of the stripe when planned (survivors - k).
    pub redundancy: i32,
}

/// The outcome of a [`RepairTask`], reported on the next heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairReport {
    /// The task, as received.
    pub task: RepairTask,
    /// Stored durably and verified.
    pub ok: bool,
    /// Why not.
    #[serde(default)]
    pub error: Option<String>,
    /// The shard was already stored here and verified: no new copy was
    /// written (see [`Command::CommitRepair`]'s `reused`).
    #[serde(default)]
    pub reused: bool,
}

/// One page of a chunkserver's inventory, posted to `/v1/inventory`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryPage {
    /// The chunkserver.
    pub id: ChunkserverId,
    /// The round from [`ChunkserverCommand::SendInventory`].
    pub round: u64,
    /// Shards with their age (ms since the file was written).
    pub shards: Vec<InventoryEntry>,
    /// The last page of this round.
    pub last: bool,
}

/// One shard in an [`InventoryPage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryEntry {
    /// The shard.
    pub shard: ShardId,
    /// Milliseconds since it was written.
    pub age_ms: u64,
}

/// A scrubber's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScrubState {
    /// Walking shards now.
    Running,
    /// Paused by an operator.
    Paused,
    /// Between passes.
    Idle,
}

/// A chunkserver scrubber's progress (heartbeats, `cairn admin scrub
/// status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubProgress {
    /// State.
    pub state: ScrubState,
    /// When the current (or last) pass started, ms since the epoch.
    pub pass_started_ms: u64,
    /// When the last full pass finished, ms since the epoch.
    pub last_full_pass_ms: Option<u64>,
    /// Shards checked in the current pass.
    pub scanned_shards: u64,
    /// Shards stored (the pass's total).
    pub total_shards: u64,
    /// Bytes checked in the current pass.
    pub scanned_bytes: u64,
    /// Bad shards found since start.
    pub bad_found: u64,
    /// Throughput cap, MB/s (0 = none).
    pub max_mbps: u64,
    /// Tranquility: sleep this many times the time spent working.
    pub tranquility: u32,
}

/// A scrub control request for a chunkserver's `/v1/admin/scrub`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubControl {
    /// `start` (a new pass now), `pause`, `resume`, or `status` (no change).
    pub action: String,
    /// New throughput cap, MB/s.
    #[serde(default)]
    pub max_mbps: Option<u64>,
    /// New tranquility factor.
    #[serde(default)]
    pub tranquility: Option<u32>,
}

/// One repair the leader dispatched, for `cairn admin status` and tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairRecord {
    /// Dispatch order (leader-local, from 1).
    pub seq: u64,
    /// Stripe redundancy when planned.
    pub redundancy: i32,
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Stripe number.
    pub stripe: u64,
    /// Shard index.
    pub index: u8,
    /// Target chunkserver.
    pub to: ChunkserverId,
    /// `dispatched`, `committed`, `stale` or `failed`.
    pub outcome: String,
}

/// The leader's view of cluster health (`/v1/admin/cluster`, `cairn admin
/// status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// Raft view of the answering node (the leader).
    pub raft: RaftStatus,
    /// Chunkservers.
    pub chunkservers: Vec<ChunkserverInfo>,
    /// Scrub progress by chunkserver (from heartbeats).
    pub scrub: BTreeMap<ChunkserverId, ScrubProgress>,
    /// Objects stored (as of the last planner pass).
    pub objects: u64,
    /// Logical bytes stored.
    pub bytes: u64,
    /// Stripes by remaining redundancy (survivors - k; m = full).
    pub redundancy: BTreeMap<i32, u64>,
    /// Shards waiting for repair.
    pub repair_queue: u64,
    /// Repairs dispatched and not yet reported.
    pub repairs_in_flight: u64,
    /// Repairs committed since this node became leader.
    pub repairs_done: u64,
    /// Repairs committed per second over the last minute.
    pub repair_rate: f64,
    /// Shards queued for deletion (garbage and orphans).
    pub gc_pending: u64,
    /// Orphans found by inventory reconciliation, waiting out the grace
    /// period.
    pub orphans_pending: u64,
    /// When the planner last finished a pass, ms since the epoch.
    pub last_plan_ms: Option<u64>,
    /// Recent dispatches, oldest first (bounded).
    pub recent_repairs: Vec<RepairRecord>,
    /// Shard bytes rebuilt by committed repairs since this node became
    /// leader (the measured repair rate is this over `repair_busy_secs`).
    #[serde(default)]
    pub repaired_bytes: u64,
    /// Seconds during which at least one repair task was running, since
    /// this node became leader (the union of finished tasks' run times).
    #[serde(default)]
    pub repair_busy_secs: f64,
    /// Objects, bytes and erasure-coded stripes per bucket (as of the last
    /// planner pass, from the `bucket_stats` counters; buckets with no
    /// objects are absent).
    #[serde(default)]
    pub buckets: BTreeMap<String, BucketUsage>,
}

/// What one bucket holds (live versions; kept by `apply`, see
/// `crate::stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketUsage {
    /// Objects.
    pub objects: u64,
    /// Logical bytes.
    pub bytes: u64,
    /// Erasure-coded stripes (inline objects have none).
    pub stripes: u64,
}

/// The metadata service's reply to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// The chunkserver's id (assigned on first contact).
    pub id: ChunkserverId,
    /// Work to do.
    pub commands: Vec<ChunkserverCommand>,
}

/// A metadata node's view of the Raft cluster, for `cairn admin status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftStatus {
    /// This node.
    pub id: NodeId,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Last log index.
    pub last_log_index: Option<u64>,
    /// Last applied index.
    pub last_applied: Option<u64>,
    /// Last log index covered by this node's snapshot.
    #[serde(default)]
    pub snapshot: Option<u64>,
    /// Last log index purged from this node's log.
    #[serde(default)]
    pub purged: Option<u64>,
    /// Voters, with addresses.
    pub voters: BTreeMap<NodeId, String>,
    /// Learners, with addresses.
    pub learners: BTreeMap<NodeId, String>,
}
