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

/// A secret (plaintext or sealed) inside a command: serialized as the bare
/// string, `Debug` shows `<redacted>`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(pub String);

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// An S3 access key: SigV4 credentials and what they may touch. Its
/// `Debug` leaves the secret out (commands carrying keys get logged).
///
/// `secret` is the plaintext only in the admin's `PutAccessKey` request
/// and in the `GetAccessKey` answer to a role allowed secrets
/// ([`crate::auth::may_read_secrets`]); in the Raft log, the state and
/// snapshots it is sealed ([`crate::secrets`]), and every other answer
/// leaves it empty.
///
/// `expires_ms` (set by `RotateAccessKey` on the key it replaces) is a
/// JSON-only field: it is in the state's `keys` rows and the HTTP API,
/// never in postcard (the Raft log's encoding of `PutAccessKey` keeps
/// its shape, so older log entries decode unchanged; a `PutAccessKey`
/// never sets an expiry, see `apply`).
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    /// Access key id (public, e.g. `GK...`).
    pub id: String,
    /// Secret access key: plaintext, sealed or empty (see above).
    pub secret: String,
    /// A human name.
    pub name: String,
    /// Creation time, ms since the epoch (stamped by the proposer).
    pub created_ms: u64,
    /// Full access to every bucket.
    pub admin: bool,
    /// Grants by bucket name. A key owns the buckets it creates (their
    /// `BucketInfo::owner` is its id) without a grant here.
    pub buckets: BTreeMap<String, BucketGrant>,
    /// From this time (ms since the epoch) on the key is refused: the old
    /// key of a rotation, after its overlap. `None`: no expiry.
    pub expires_ms: Option<u64>,
}

impl AccessKey {
    /// Whether the key has expired at `now_ms`.
    pub fn expired_at(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|e| now_ms >= e)
    }
}

/// The postcard shape of [`AccessKey`] (the Raft log): the fields it had
/// before expiry existed, in order.
#[derive(Serialize, Deserialize)]
#[serde(rename = "AccessKey")]
struct AccessKeyWire {
    id: String,
    secret: String,
    name: String,
    created_ms: u64,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    buckets: BTreeMap<String, BucketGrant>,
}

/// The JSON shape of [`AccessKey`] (state rows, HTTP API).
#[derive(Serialize, Deserialize)]
#[serde(rename = "AccessKey")]
struct AccessKeyJson {
    id: String,
    secret: String,
    name: String,
    created_ms: u64,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    buckets: BTreeMap<String, BucketGrant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_ms: Option<u64>,
}

impl Serialize for AccessKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            AccessKeyJson {
                id: self.id.clone(),
                secret: self.secret.clone(),
                name: self.name.clone(),
                created_ms: self.created_ms,
                admin: self.admin,
                buckets: self.buckets.clone(),
                expires_ms: self.expires_ms,
            }
            .serialize(s)
        } else {
            AccessKeyWire {
                id: self.id.clone(),
                secret: self.secret.clone(),
                name: self.name.clone(),
                created_ms: self.created_ms,
                admin: self.admin,
                buckets: self.buckets.clone(),
            }
            .serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for AccessKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<AccessKey, D::Error> {
        if d.is_human_readable() {
            let k = AccessKeyJson::deserialize(d)?;
            Ok(AccessKey {
                id: k.id,
                secret: k.secret,
                name: k.name,
                created_ms: k.created_ms,
                admin: k.admin,
                buckets: k.buckets,
                expires_ms: k.expires_ms,
            })
        } else {
            let k = AccessKeyWire::deserialize(d)?;
            Ok(AccessKey {
                id: k.id,
                secret: k.secret,
                name: k.name,
                created_ms: k.created_ms,
                admin: k.admin,
                buckets: k.buckets,
                expires_ms: None,
            })
        }
    }
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
            .field("expires_ms", &self.expires_ms)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AccessKey {
        AccessKey {
            id: "CK1".into(),
            secret: "s".into(),
            name: "n".into(),
            created_ms: 7,
            admin: true,
            buckets: BTreeMap::from([("b".to_string(), BucketGrant::default())]),
            expires_ms: Some(99),
        }
    }

    #[test]
    fn expiry_is_json_only_and_postcard_keeps_the_old_shape() {
        let k = key();
        let j = serde_json::to_string(&k).unwrap();
        assert!(j.contains(r#""expires_ms":99"#), "{j}");
        assert_eq!(serde_json::from_str::<AccessKey>(&j).unwrap(), k);
        let mut no = k.clone();
        no.expires_ms = None;
        assert!(!serde_json::to_string(&no).unwrap().contains("expires_ms"));
        // postcard: exactly the bytes of the shape without expiry.
        let wire = AccessKeyWire {
            id: "CK1".into(),
            secret: "s".into(),
            name: "n".into(),
            created_ms: 7,
            admin: true,
            buckets: k.buckets.clone(),
        };
        let b = postcard::to_allocvec(&k).unwrap();
        assert_eq!(b, postcard::to_allocvec(&wire).unwrap());
        assert_eq!(postcard::from_bytes::<AccessKey>(&b).unwrap(), no);
        assert!(k.expired_at(99) && !k.expired_at(98) && !no.expired_at(u64::MAX));
        assert!(!format!("{k:?}").contains("\"s\""));
    }
}
