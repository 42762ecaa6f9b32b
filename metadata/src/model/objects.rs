//! Object rows of model format 3: a small head row per object version and
//! one row per stripe.
//!
//! # Layout
//! - `objects` (and `object_versions`, see `versions`): bucket NUL key ->
//!   [`ROW_V1`] ++ postcard [`HeadRow`], or [`ROW_V2`] ++ postcard
//!   [`VersionMeta`] ++ postcard [`HeadRow`] for a version written with
//!   versioning configured: size, ETag, headers, metadata, checksums,
//!   coding, parts, tags, inline bytes and the stripe count; never the
//!   stripes, so a head costs the same for a 1-byte and a 5 TiB object and
//!   a listing reads heads only.
//! - `object_stripes`: bucket NUL key NUL version (16 bytes) ++ stripe
//!   number (u64 BE) -> [`ROW_V1`] ++ postcard [`StripeRow`]. One version's
//!   stripes are one key range in object order, so a read pages through
//!   them and a repair rewrites one row. The version is part of the key:
//!   two versions of one key (S3 versioning) never share rows, and two
//!   objects never do, whatever ids their writers chose.
//!
//! Rows hold ids and hashes as raw bytes (the API types serialize them as
//! hex strings, twice the size). A value whose first byte is not
//! [`ROW_V1`] is refused as corrupt, never guessed at; a new row layout
//! takes a new first byte. Format 2 kept the whole manifest as JSON in
//! `objects`; [`split_json_rows`] rewrites such rows once, at upgrade.

use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::*;

/// Stripe rows, by object key, version and stripe number.
pub const OBJECT_STRIPES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("object_stripes");

/// First byte of every `objects` and `object_stripes` value this build
/// writes.
pub const ROW_V1: u8 = 1;

/// First byte of a head row that carries its [`VersionMeta`] (a version
/// written while its bucket had versioning configured, or a delete
/// marker): `ROW_V2` ++ postcard `VersionMeta` ++ postcard head. A
/// [`ROW_V1`] head is [`VersionMeta::LEGACY`].
pub const ROW_V2: u8 = 2;

/// Where a version stands in its key's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMeta {
    /// Order of the key's versions: higher is newer (0 for versions
    /// written while the bucket was unversioned).
    pub seq: u64,
    /// It is the key's `null` version.
    pub null: bool,
    /// It is a delete marker (no data, no stripes).
    pub delete_marker: bool,
    /// Object Lock retention.
    pub retention: Option<Retention>,
    /// Object Lock legal hold.
    pub legal_hold: bool,
}

impl VersionMeta {
    /// A version written while its bucket was unversioned.
    pub const LEGACY: VersionMeta = VersionMeta {
        seq: 0,
        null: true,
        delete_marker: false,
        retention: None,
        legal_hold: false,
    };

    /// Why Object Lock protects it at `now_ms` from deletion or
    /// replacement (`bypass`: a GOVERNANCE retention may be bypassed),
    /// if it does.
    pub fn lock(&self, now_ms: u64, bypass: bool) -> Option<String> {
        if self.legal_hold {
            return Some("it is under a legal hold".into());
        }
        match self.retention {
            Some(r) if r.active(now_ms) => match r.mode {
                LockMode::Compliance => Some(format!(
                    "it is under COMPLIANCE retention until {} ms",
                    r.until_ms
                )),
                LockMode::Governance if !bypass => Some(format!(
                    "it is under GOVERNANCE retention until {} ms (bypass needs x-amz-bypass-governance-retention)",
                    r.until_ms
                )),
                LockMode::Governance => None,
            },
            _ => None,
        }
    }

    /// Its S3 version id (`version` is the manifest's version).
    pub fn version_ref(&self, version: StripeId) -> VersionRef {
        if self.null {
            VersionRef::Null
        } else {
            VersionRef::Id(version)
        }
    }
}

/// An object version's head: its manifest without the stripes, how many
/// stripes it has, and its place in the key's version chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The manifest, with `stripes` empty.
    pub manifest: ObjectManifest,
    /// Number of stripe rows.
    pub stripes: u64,
    /// Its version chain data.
    pub meta: VersionMeta,
}

impl Head {
    /// Its S3 version id.
    pub fn version_ref(&self) -> VersionRef {
        self.meta.version_ref(self.manifest.version)
    }

    /// Whether `v` names it.
    pub fn is(&self, v: &VersionRef) -> bool {
        *v == self.version_ref()
    }
}

#[derive(Serialize, Deserialize)]
struct HeadRow {
    version: [u8; 16],
    size: u64,
    etag: String,
    content_type: Option<String>,
    headers: BTreeMap<String, String>,
    user_meta: BTreeMap<String, String>,
    checksums: BTreeMap<String, String>,
    created_ms: u64,
    k: u8,
    m: u8,
    shard_size: u32,
    stripes: u64,
    parts: Vec<PartRow>,
    inline: Option<InlineRow>,
    tags: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct PartRow {
    number: u32,
    size: u64,
    etag: String,
    checksums: BTreeMap<String, String>,
    stripes: u32,
}

#[derive(Serialize, Deserialize)]
struct InlineRow {
    data: Vec<u8>,
    blake3: [u8; 32],
}

#[derive(Serialize, Deserialize)]
struct StripeRow {
    id: [u8; 16],
    len: u64,
    shards: Vec<ShardRow>,
}

#[derive(Serialize, Deserialize)]
struct ShardRow {
    chunkserver: Option<u64>,
    shard: [u8; 16],
    blake3: [u8; 32],
}

pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> redb::Error {
    redb::Error::Corrupted(format!("{what}: {e}"))
}

fn encode_row<T: Serialize>(row: &T) -> StoreResult<Vec<u8>> {
    let mut out = vec![ROW_V1];
    postcard::to_io(row, &mut out).map_err(|e| corrupt("encode object row", e))?;
    Ok(out)
}

fn decode_row<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> StoreResult<T> {
    match bytes.split_first() {
        Some((&ROW_V1, body)) => {
            let (v, rest) = postcard::take_from_bytes(body).map_err(|e| corrupt(what, e))?;
            if !rest.is_empty() {
                return Err(corrupt(what, format!("{} bytes after the row", rest.len())));
            }
            Ok(v)
        }
        Some((b, _)) => Err(corrupt(what, format!("unknown row format byte {b:#04x}"))),
        None => Err(corrupt(what, "empty row")),
    }
}

fn encode_head(m: &ObjectManifest, stripes: u64, meta: VersionMeta) -> StoreResult<Vec<u8>> {
    let row = HeadRow {
        version: m.version.0,
        size: m.size,
        etag: m.etag.clone(),
        content_type: m.content_type.clone(),
        headers: m.headers.clone(),
        user_meta: m.user_meta.clone(),
        checksums: m.checksums.clone(),
        created_ms: m.created_ms,
        k: m.ec.k,
        m: m.ec.m,
        shard_size: m.shard_size,
        stripes,
        parts: m
            .parts
            .iter()
            .map(|p| PartRow {
                number: p.number,
                size: p.size,
                etag: p.etag.clone(),
                checksums: p.checksums.clone(),
                stripes: p.stripes,
            })
            .collect(),
        inline: m.inline.as_ref().map(|i| InlineRow {
            data: i.data.to_vec(),
            blake3: i.blake3.0,
        }),
        tags: m.tags.clone(),
    };
    if meta == VersionMeta::LEGACY {
        return encode_row(&row);
    }
    let mut out = vec![ROW_V2];
    postcard::to_io(&meta, &mut out).map_err(|e| corrupt("encode object row", e))?;
    postcard::to_io(&row, &mut out).map_err(|e| corrupt("encode object row", e))?;
    Ok(out)
}

/// Decodes an `objects` or `object_versions` value.
pub fn decode_head(bytes: &[u8]) -> StoreResult<Head> {
    let (r, meta): (HeadRow, VersionMeta) = match bytes.split_first() {
        Some((&ROW_V2, body)) => {
            let what = "object head row";
            let (meta, rest) = postcard::take_from_bytes(body).map_err(|e| corrupt(what, e))?;
            let (r, rest) = postcard::take_from_bytes(rest).map_err(|e| corrupt(what, e))?;
            if !rest.is_empty() {
                return Err(corrupt(what, format!("{} bytes after the row", rest.len())));
            }
            (r, meta)
        }
        _ => (decode_row(bytes, "object head row")?, VersionMeta::LEGACY),
    };
    Ok(Head {
        meta,
        manifest: ObjectManifest {
            version: StripeId(r.version),
            size: r.size,
            etag: r.etag,
            content_type: r.content_type,
            headers: r.headers,
            user_meta: r.user_meta,
            checksums: r.checksums,
            created_ms: r.created_ms,
            ec: EcParams { k: r.k, m: r.m },
            shard_size: r.shard_size,
            stripes: Vec::new(),
            parts: r
                .parts
                .into_iter()
                .map(|p| PartInfo {
                    number: p.number,
                    size: p.size,
                    etag: p.etag,
                    checksums: p.checksums,
                    stripes: p.stripes,
                })
                .collect(),
            inline: r.inline.map(|i| InlineData {
                data: i.data.into(),
                blake3: Hash32(i.blake3),
            }),
            tags: r.tags,
        },
        stripes: r.stripes,
    })
}

fn encode_stripe(s: &StripeManifest) -> StoreResult<Vec<u8>> {
    encode_row(&StripeRow {
        id: s.id.0,
        len: s.len,
        shards: s
            .shards
            .iter()
            .map(|l| ShardRow {
                chunkserver: l.chunkserver,
                shard: l.shard.0,
                blake3: l.blake3.0,
            })
            .collect(),
    })
}

/// Decodes an `object_stripes` value.
pub fn decode_stripe(bytes: &[u8]) -> StoreResult<StripeManifest> {
    let r: StripeRow = decode_row(bytes, "object stripe row")?;
    Ok(StripeManifest {
        id: StripeId(r.id),
        len: r.len,
        shards: r
            .shards
            .into_iter()
            .map(|l| ShardLoc {
                chunkserver: l.chunkserver,
                shard: ShardId(l.shard),
                blake3: Hash32(l.blake3),
            })
            .collect(),
    })
}

/// The key prefix of one version's stripe rows: object key NUL version.
fn stripe_prefix(object: &[u8], version: &StripeId) -> Vec<u8> {
    let mut k = Vec::with_capacity(object.len() + 1 + 16 + 8);
    k.extend_from_slice(object);
    k.push(0);
    k.extend_from_slice(&version.0);
    k
}

/// The `object_stripes` key of stripe `n` of `version` of `object` (an
/// `objects` key).
pub fn stripe_key(object: &[u8], version: &StripeId, n: u64) -> Vec<u8> {
    let mut k = stripe_prefix(object, version);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// The head of `object` (an `objects` key), if any.
pub fn get_head(
    objects: &impl ReadableTable<&'static [u8], &'static [u8]>,
    object: &[u8],
) -> StoreResult<Option<Head>> {
    match objects.get(object)? {
        Some(v) => Ok(Some(decode_head(v.value())?)),
        None => Ok(None),
    }
}

/// Stripe `n` of `version` of `object`, if stored.
pub fn get_stripe(
    stripes: &impl ReadableTable<&'static [u8], &'static [u8]>,
    object: &[u8],
    version: &StripeId,
    n: u64,
) -> StoreResult<Option<StripeManifest>> {
    match stripes.get(stripe_key(object, version, n).as_slice())? {
        Some(v) => Ok(Some(decode_stripe(v.value())?)),
        None => Ok(None),
    }
}

/// Up to `limit` stripes of `version` of `object` from stripe `from` on,
/// in order: one range read.
pub fn stripe_page(
    stripes: &impl ReadableTable<&'static [u8], &'static [u8]>,
    object: &[u8],
    version: &StripeId,
    from: u64,
    limit: usize,
) -> StoreResult<Vec<StripeManifest>> {
    let start = stripe_key(object, version, from);
    let end = stripe_key(object, version, u64::MAX);
    let mut out = Vec::new();
    for r in stripes.range::<&[u8]>((
        Bound::Included(start.as_slice()),
        Bound::Included(end.as_slice()),
    ))? {
        if out.len() >= limit {
            break;
        }
        let (_, v) = r?;
        out.push(decode_stripe(v.value())?);
    }
    Ok(out)
}

/// Every stripe of a head, in order. A stripe row missing in the middle
/// is corruption (apply writes all of them in one transaction).
pub(super) fn all_stripes(
    stripes: &impl ReadableTable<&'static [u8], &'static [u8]>,
    object: &[u8],
    head: &Head,
) -> StoreResult<Vec<StripeManifest>> {
    let want = usize::try_from(head.stripes)
        .map_err(|_| corrupt("object head row", "stripe count too large"))?;
    let out = stripe_page(stripes, object, &head.manifest.version, 0, want)?;
    if out.len() != want {
        return Err(corrupt(
            "object stripe rows",
            format!("{} of {want} stripe rows present", out.len()),
        ));
    }
    Ok(out)
}

/// The whole manifest of `object`, stripes included, if any.
pub fn get_object(
    objects: &impl ReadableTable<&'static [u8], &'static [u8]>,
    stripes: &impl ReadableTable<&'static [u8], &'static [u8]>,
    object: &[u8],
) -> StoreResult<Option<ObjectManifest>> {
    let Some(head) = get_head(objects, object)? else {
        return Ok(None);
    };
    let s = all_stripes(stripes, object, &head)?;
    let mut m = head.manifest;
    m.stripes = s;
    Ok(Some(m))
}

/// Removes the stripe rows of `version` of `object`.
pub(super) fn erase_stripes(
    stripes: &mut redb::Table<&'static [u8], &'static [u8]>,
    object: &[u8],
    version: &StripeId,
) -> StoreResult<()> {
    let start = stripe_key(object, version, 0);
    let end = stripe_key(object, version, u64::MAX);
    stripes.retain_in::<&[u8], _>(start.as_slice()..=end.as_slice(), |_, _| false)?;
    Ok(())
}

/// Writes `m` as the live version of `object`: its head and every stripe
/// row, replacing the version `old` names (its stripe rows are dropped).
pub(super) fn store_object(
    txn: &redb::WriteTransaction,
    object: &[u8],
    old: Option<&StripeId>,
    m: &ObjectManifest,
    meta: VersionMeta,
) -> StoreResult<()> {
    let mut stripes = txn.open_table(OBJECT_STRIPES)?;
    if let Some(old) = old {
        erase_stripes(&mut stripes, object, old)?;
    }
    for (n, s) in m.stripes.iter().enumerate() {
        stripes.insert(
            stripe_key(object, &m.version, n as u64).as_slice(),
            encode_stripe(s)?.as_slice(),
        )?;
    }
    drop(stripes);
    txn.open_table(OBJECTS)?.insert(
        object,
        encode_head(m, m.stripes.len() as u64, meta)?.as_slice(),
    )?;
    Ok(())
}

/// Rewrites the head of `object` (its stripes stay): `m.stripes` is
/// ignored, `head.stripes` kept.
pub(super) fn store_head(
    txn: &redb::WriteTransaction,
    object: &[u8],
    head: &Head,
) -> StoreResult<()> {
    txn.open_table(OBJECTS)?
        .insert(object, encode_head_row(head)?.as_slice())?;
    Ok(())
}

/// The encoded value of `head` (for `objects` or `object_versions`).
pub(super) fn encode_head_row(head: &Head) -> StoreResult<Vec<u8>> {
    encode_head(&head.manifest, head.stripes, head.meta)
}

/// Rewrites stripe `n` of `version` of `object`.
pub(super) fn store_stripe(
    txn: &redb::WriteTransaction,
    object: &[u8],
    version: &StripeId,
    n: u64,
    s: &StripeManifest,
) -> StoreResult<()> {
    txn.open_table(OBJECT_STRIPES)?.insert(
        stripe_key(object, version, n).as_slice(),
        encode_stripe(s)?.as_slice(),
    )?;
    Ok(())
}

/// Format 2 -> 3: every `objects` row that is still a JSON manifest
/// becomes a head row and its stripe rows. Once per state: a counter marks
/// it done, so reopening costs nothing. Deterministic.
pub(super) fn split_json_rows(txn: &redb::WriteTransaction) -> StoreResult<()> {
    let mut counters = txn.open_table(COUNTERS)?;
    if counters.get(b"object_rows_v3".as_slice())?.is_some() {
        return Ok(());
    }
    counters.insert(b"object_rows_v3".as_slice(), 1u64.to_be_bytes().as_slice())?;
    drop(counters);
    let mut from: Option<Vec<u8>> = None;
    loop {
        // In pages, so the rows read are never held all at once.
        let mut batch: Vec<(Vec<u8>, ObjectManifest)> = Vec::new();
        let mut last = None;
        {
            let objects = txn.open_table(OBJECTS)?;
            let lower = match &from {
                Some(k) => Bound::Excluded(k.as_slice()),
                None => Bound::Unbounded,
            };
            for r in objects.range::<&[u8]>((lower, Bound::Unbounded))? {
                let (k, v) = r?;
                last = Some(k.value().to_vec());
                if v.value().first() == Some(&b'{') {
                    batch.push((k.value().to_vec(), dec(v.value())?));
                }
                if batch.len() >= 1024 {
                    break;
                }
            }
        }
        let Some(l) = last else {
            break;
        };
        for (k, m) in &batch {
            store_object(txn, k, None, m, VersionMeta::LEGACY)?;
        }
        from = Some(l);
    }
    Ok(())
}
