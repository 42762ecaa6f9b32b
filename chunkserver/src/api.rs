//! The chunkserver's HTTP API, as names and shapes shared by the server
//! ([`crate::server`]) and the client ([`crate::client`]).
//!
//! ```text
//! PUT    /v1/shards/{id}   headers x-cairn-{stripe,index,k,m,blake3}, content-length
//!                          (x-cairn-length optional, must equal content-length)
//!                          -> 201 created | 200 identical shard already stored
//! GET    /v1/shards/{id}   optional Range: bytes=a-b -> 200 | 206, verified payload
//! HEAD   /v1/shards/{id}   -> 200 with the shard's metadata headers
//! DELETE /v1/shards/{id}   -> 204
//! GET    /v1/shards?after=ID&limit=N -> InventoryPage (JSON)
//! GET    /v1/stats         -> StatsReply (JSON)
//! POST   /v1/admin/scrub   ScrubControl (JSON) -> ScrubProgress (JSON)
//! POST   /v1/admin/workers -> [WorkerInfo] (JSON): this process's workers
//! ```
//!
//! Every request carries the cluster secret in `x-cairn-secret`; every error
//! reply is a JSON [`ErrorBody`](cairn_metadata::net::ErrorBody).

use std::ops::Range;

use http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::codec::EcParams;
use crate::error::{Error, Result};
use crate::format::ShardMeta;
use crate::ids::{ShardId, StripeId};
use crate::store::DiskStats;

/// Header: the shard's stripe id (32 hex).
pub const HDR_STRIPE: &str = "x-cairn-stripe";
/// Header: the shard's index within its stripe.
pub const HDR_INDEX: &str = "x-cairn-index";
/// Header: the stripe's data shard count.
pub const HDR_K: &str = "x-cairn-k";
/// Header: the stripe's parity shard count.
pub const HDR_M: &str = "x-cairn-m";
/// Header: BLAKE3 of the whole payload (64 hex).
pub const HDR_BLAKE3: &str = "x-cairn-blake3";
/// Header (replies): the whole payload's length, also on `HEAD` and `206`.
pub const HDR_LENGTH: &str = "x-cairn-length";

/// Path prefix of shard resources.
pub const SHARDS_PATH: &str = "/v1/shards";
/// Path of the stats resource.
pub const STATS_PATH: &str = "/v1/stats";
/// Path of the scrubber's control endpoint.
pub const SCRUB_PATH: &str = "/v1/admin/scrub";
/// Path of the worker listing.
pub const WORKERS_PATH: &str = "/v1/admin/workers";

/// Default page size of the inventory.
pub const DEFAULT_LIST_LIMIT: usize = 1000;
/// Largest page of the inventory: bounds the reply to well under 1 MiB.
pub const MAX_LIST_LIMIT: usize = 10_000;

/// One page of a chunkserver's shard inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryPage {
    /// Shard ids, ascending.
    pub shards: Vec<ShardId>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<ShardId>,
}

/// Totals over all data directories.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatsTotals {
    /// Sum of capacities.
    pub capacity: u64,
    /// Sum of free bytes.
    pub free: u64,
    /// Sum of bytes taken by shard files.
    pub used_by_shards: u64,
    /// Sum of shard counts.
    pub shard_count: u64,
}

/// The reply of `GET /v1/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReply {
    /// The chunkserver's failure zone.
    pub zone: String,
    /// One entry per data directory.
    pub disks: Vec<DiskStats>,
    /// Sums over `disks`.
    pub total: StatsTotals,
}

impl StatsReply {
    /// Builds a reply, summing `disks`.
    pub fn new(zone: String, disks: Vec<DiskStats>) -> Self {
        let mut total = StatsTotals::default();
        for d in &disks {
            total.capacity += d.capacity;
            total.free += d.free;
            total.used_by_shards += d.used_by_shards;
            total.shard_count += d.shard_count;
        }
        StatsReply { zone, disks, total }
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Result<&'a str> {
    h.get(name)
        .ok_or_else(|| Error::BadRequest(format!("missing header {name}")))?
        .to_str()
        .map_err(|_| Error::BadRequest(format!("header {name} is not ASCII")))
}

fn header_u8(h: &HeaderMap, name: &str) -> Result<u8> {
    header(h, name)?
        .trim()
        .parse()
        .map_err(|_| Error::BadRequest(format!("header {name} must be an integer 0-255")))
}

/// Parses 64 hex characters into a BLAKE3 hash.
pub fn parse_blake3(s: &str) -> Result<blake3::Hash> {
    let s = s.trim();
    if s.len() != 64 {
        return Err(Error::BadRequest(format!(
            "{HDR_BLAKE3} must be 64 hex characters, got {}",
            s.len().min(1000)
        )));
    }
    blake3::Hash::from_hex(s).map_err(|_| Error::BadRequest(format!("{HDR_BLAKE3} is not hex")))
}

/// Reads shard metadata (all but the id and length) from request or reply
/// headers.
pub fn meta_from_headers(id: ShardId, len: u64, h: &HeaderMap) -> Result<ShardMeta> {
    let stripe: StripeId = header(h, HDR_STRIPE)?.trim().parse()?;
    let index = header_u8(h, HDR_INDEX)?;
    let k = header_u8(h, HDR_K)?;
    let m = header_u8(h, HDR_M)?;
    let params = EcParams::new(k, m).map_err(|e| Error::BadRequest(e.to_string()))?;
    let blake3 = parse_blake3(header(h, HDR_BLAKE3)?)?;
    let meta = ShardMeta {
        id,
        stripe,
        index,
        params,
        len,
        blake3,
    };
    meta.validate()?;
    Ok(meta)
}

/// The metadata headers of `meta` (everything but the id), as name/value
/// pairs.
pub fn meta_headers(meta: &ShardMeta) -> [(&'static str, String); 6] {
    [
        (HDR_STRIPE, meta.stripe.to_hex()),
        (HDR_INDEX, meta.index.to_string()),
        (HDR_K, meta.params.k().to_string()),
        (HDR_M, meta.params.m().to_string()),
        (HDR_BLAKE3, meta.blake3.to_hex().to_string()),
        (HDR_LENGTH, meta.len.to_string()),
    ]
}

/// Parses a single-range `Range` header (`bytes=a-b`, `bytes=a-`,
/// `bytes=-n`) against a payload of `len` bytes. `Ok(None)`: serve the whole
/// payload; `Err(BadRequest)`: unsatisfiable or malformed (the server answers
/// 416).
pub fn parse_range(value: &str, len: u64) -> Result<Option<Range<u64>>> {
    let bad = || Error::BadRequest(format!("unsupported or unsatisfiable range {value:?}"));
    let spec = value.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    if spec.contains(',') {
        return Err(bad());
    }
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(bad());
        }
        len.saturating_sub(n)..len
    } else {
        let start: u64 = a.parse().map_err(|_| bad())?;
        let end = if b.is_empty() {
            len
        } else {
            let last: u64 = b.parse().map_err(|_| bad())?;
            if last < start {
                return Err(bad());
            }
            last.saturating_add(1).min(len)
        };
        start..end
    };
    if range.start >= len {
        return Err(bad());
    }
    if range.start == 0 && range.end == len {
        return Ok(None);
    }
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), Some(0..10));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), Some(90..100));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), Some(90..100));
        assert_eq!(parse_range("bytes=50-500", 100).unwrap(), Some(50..100));
        assert_eq!(parse_range("bytes=0-99", 100).unwrap(), None);
        assert_eq!(parse_range("bytes=-1000", 100).unwrap(), None);
        for bad in [
            "bytes=100-",
            "bytes=5-4",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=x-1",
            "bytes=-0",
        ] {
            assert!(parse_range(bad, 100).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn meta_headers_round_trip() {
        let meta = ShardMeta::for_payload(
            ShardId::random(),
            StripeId::random(),
            3,
            EcParams::default(),
            b"x",
        );
        let mut h = HeaderMap::new();
        for (k, v) in meta_headers(&meta) {
            h.insert(k, v.parse().unwrap());
        }
        assert_eq!(meta_from_headers(meta.id, 1, &h).unwrap(), meta);
        h.insert(HDR_INDEX, "6".parse().unwrap());
        assert!(meta_from_headers(meta.id, 1, &h).is_err());
        h.insert(HDR_INDEX, "1".parse().unwrap());
        h.insert(HDR_BLAKE3, "abc".parse().unwrap());
        assert!(meta_from_headers(meta.id, 1, &h).is_err());
    }
}
