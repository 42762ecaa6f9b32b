//! Ids and common values: node and chunkserver ids, shard and stripe ids,
//! hashes, erasure-coding parameters, name and key validation.

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
