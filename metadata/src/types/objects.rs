//! Buckets, object manifests (stripes, shards, parts, inline data), write
//! conditions and multipart uploads: what the S3-facing commands carry.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::*;

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
    /// Object tags (S3 object tagging), by key: at most [`MAX_TAGS`],
    /// checked by [`validate_tags`]. Absent in JSON when empty; in Raft
    /// entries of log format 1 it did not exist (see
    /// `raft::codec::added_in_entry_v2`).
    #[serde(
        default,
        skip_serializing_if = "crate::raft::codec::skip_empty_in_json",
        deserialize_with = "crate::raft::codec::added_in_entry_v2"
    )]
    pub tags: BTreeMap<String, String>,
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
    /// Tags of the object to be (`x-amz-tagging`), by key: at most [`MAX_TAGS`],
    /// checked by [`validate_tags`]. Absent in JSON when empty; in Raft
    /// entries of log format 1 it did not exist (see
    /// `raft::codec::added_in_entry_v2`).
    #[serde(
        default,
        skip_serializing_if = "crate::raft::codec::skip_empty_in_json",
        deserialize_with = "crate::raft::codec::added_in_entry_v2"
    )]
    pub tags: BTreeMap<String, String>,
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
