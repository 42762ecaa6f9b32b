//! The shard file format: a small fixed header, then the payload.
//!
//! ```text
//! Shard file, format version 1. All integers big-endian.
//!
//!  offset  size  field
//!  ------  ----  -----------------------------------------------------------
//!       0     8  magic, the ASCII bytes "CAIRNSHD"
//!       8     2  format version, u16 = 1
//!      10    16  shard id (raw bytes of the 128-bit ShardId)
//!      26    16  stripe id (raw bytes of the 128-bit StripeId)
//!      42     1  shard index within the stripe, u8, < k + m
//!      43     1  k (data shards of the stripe), u8
//!      44     1  m (parity shards of the stripe), u8
//!      45     8  payload length in bytes, u64
//!      53    32  BLAKE3 of the payload
//!      85     4  header checksum: the first 4 bytes of BLAKE3(bytes 0..85)
//!      89     -  payload (exactly `payload length` bytes; nothing after it)
//! ```
//!
//! The header checksum catches a damaged header (which would otherwise
//! mislabel a shard) without reading the payload, so `HEAD` and the startup
//! scan stay cheap; the payload hash is checked on every read.
//!
//! Versioning and migration: the version sits right after the magic, and the
//! header length is a function of the version. A reader dispatches on it;
//! a build that introduces version 2 must keep decoding version 1 (shards are
//! immutable, so old files are never rewritten in place: the scrubber may
//! rewrite them lazily through the normal temp-file-and-rename path). A
//! version newer than this build understands is reported as
//! [`Error::UnsupportedFormat`](crate::Error::UnsupportedFormat) and left on
//! disk, never quarantined, so a downgrade does not destroy data.

use crate::codec::EcParams;
use crate::ids::{ShardId, StripeId};

/// First bytes of every shard file.
pub const MAGIC: [u8; 8] = *b"CAIRNSHD";

/// The format version this build writes.
pub const FORMAT_VERSION: u16 = 1;

/// Length of a version-1 header.
pub const HEADER_LEN: usize = 89;

/// Offset of the header checksum (= bytes it covers).
const CHECKSUM_AT: usize = 85;

/// Everything the chunkserver knows about one shard: what a `PUT` declares
/// and what the file header records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMeta {
    /// The shard.
    pub id: ShardId,
    /// The stripe it belongs to.
    pub stripe: StripeId,
    /// Its index within the stripe (`0..k` data, `k..k+m` parity).
    pub index: u8,
    /// The stripe's erasure-coding parameters.
    pub params: EcParams,
    /// Payload length in bytes.
    pub len: u64,
    /// BLAKE3 of the payload.
    pub blake3: blake3::Hash,
}

impl ShardMeta {
    /// Metadata of `payload` as shard `index` of `stripe`.
    pub fn for_payload(
        id: ShardId,
        stripe: StripeId,
        index: u8,
        params: EcParams,
        payload: &[u8],
    ) -> Self {
        ShardMeta {
            id,
            stripe,
            index,
            params,
            len: payload.len() as u64,
            blake3: blake3::hash(payload),
        }
    }

    /// Checks the parameters and that the index fits them.
    pub fn validate(&self) -> crate::Result<()> {
        self.params.validate()?;
        if usize::from(self.index) >= self.params.total() {
            return Err(crate::Error::BadRequest(format!(
                "shard index {} out of range for {}",
                self.index, self.params
            )));
        }
        Ok(())
    }
}

/// Why a header could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// The header is damaged or not a shard header at all.
    Corrupt(String),
    /// A well-formed header of a version this build cannot read.
    Unsupported(u16),
}

/// Encodes `meta` as a version-1 header.
pub fn encode_header(meta: &ShardMeta) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    h[10..26].copy_from_slice(meta.id.as_bytes());
    h[26..42].copy_from_slice(meta.stripe.as_bytes());
    h[42] = meta.index;
    h[43] = meta.params.k();
    h[44] = meta.params.m();
    h[45..53].copy_from_slice(&meta.len.to_be_bytes());
    h[53..85].copy_from_slice(meta.blake3.as_bytes());
    let sum = blake3::hash(&h[..CHECKSUM_AT]);
    h[CHECKSUM_AT..HEADER_LEN].copy_from_slice(&sum.as_bytes()[..4]);
    h
}

/// Decodes a header from the start of `buf` (which may hold more bytes).
pub fn decode_header(buf: &[u8]) -> Result<ShardMeta, HeaderError> {
    if buf.len() < 10 {
        return Err(HeaderError::Corrupt(format!(
            "file too short for a header ({} bytes)",
            buf.len()
        )));
    }
    if buf[0..8] != MAGIC {
        return Err(HeaderError::Corrupt("bad magic".into()));
    }
    let version = u16::from_be_bytes([buf[8], buf[9]]);
    if version != FORMAT_VERSION {
        return Err(HeaderError::Unsupported(version));
    }
    if buf.len() < HEADER_LEN {
        return Err(HeaderError::Corrupt(format!(
            "file too short for a header ({} bytes)",
            buf.len()
        )));
    }
    let sum = blake3::hash(&buf[..CHECKSUM_AT]);
    if sum.as_bytes()[..4] != buf[CHECKSUM_AT..HEADER_LEN] {
        return Err(HeaderError::Corrupt("header checksum mismatch".into()));
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&buf[10..26]);
    let mut stripe = [0u8; 16];
    stripe.copy_from_slice(&buf[26..42]);
    let params = EcParams::new(buf[43], buf[44])
        .map_err(|e| HeaderError::Corrupt(format!("header: {e}")))?;
    let mut len = [0u8; 8];
    len.copy_from_slice(&buf[45..53]);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&buf[53..85]);
    let meta = ShardMeta {
        id: ShardId(id),
        stripe: StripeId(stripe),
        index: buf[42],
        params,
        len: u64::from_be_bytes(len),
        blake3: blake3::Hash::from_bytes(hash),
    };
    meta.validate()
        .map_err(|e| HeaderError::Corrupt(format!("header: {e}")))?;
    Ok(meta)
}

/// Checks a shard file's payload (the bytes after the header) against its
/// decoded header: exact length, then BLAKE3. Every byte a chunkserver
/// serves has passed this check; the error is the reason to quarantine.
pub fn verify_payload(meta: &ShardMeta, payload: &[u8]) -> Result<(), String> {
    if payload.len() as u64 != meta.len {
        return Err(format!(
            "payload is {} bytes, header says {}",
            payload.len(),
            meta.len
        ));
    }
    let actual = blake3::hash(payload);
    if actual != meta.blake3 {
        return Err(format!(
            "payload BLAKE3 {} does not match header {}",
            actual.to_hex(),
            meta.blake3.to_hex()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ShardMeta {
        ShardMeta::for_payload(
            ShardId::random(),
            StripeId::random(),
            5,
            EcParams::default(),
            b"payload",
        )
    }

    #[test]
    fn round_trip_and_layout() {
        let m = meta();
        let h = encode_header(&m);
        assert_eq!(&h[0..8], b"CAIRNSHD");
        assert_eq!(&h[8..10], &[0, 1]);
        assert_eq!(&h[45..53], &7u64.to_be_bytes());
        assert_eq!(decode_header(&h).unwrap(), m);
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let h = encode_header(&meta());
        for i in 0..HEADER_LEN {
            let mut bad = h;
            bad[i] ^= 0x01;
            assert!(decode_header(&bad).is_err(), "flip at {i} not caught");
        }
        assert!(matches!(
            decode_header(&h[..50]),
            Err(HeaderError::Corrupt(_))
        ));
        let mut v2 = h;
        v2[9] = 2;
        assert_eq!(decode_header(&v2), Err(HeaderError::Unsupported(2)));
    }

    #[test]
    fn payload_is_checked_for_length_and_hash() {
        let m = meta();
        assert_eq!(verify_payload(&m, b"payload"), Ok(()));
        assert!(verify_payload(&m, b"payloa")
            .unwrap_err()
            .contains("6 bytes"));
        assert!(verify_payload(&m, b"payloadX").is_err());
        assert!(verify_payload(&m, b"Payload")
            .unwrap_err()
            .contains("BLAKE3"));
        assert!(verify_payload(&m, b"").is_err());
    }
}
