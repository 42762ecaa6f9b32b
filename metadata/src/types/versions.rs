//! S3 object versioning: a bucket's versioning state, version ids, and what
//! GET/HEAD by version and ListObjectVersions see.
//!
//! The model keeps every version of a key (the current one in `objects`,
//! older ones and delete markers in `object_versions`, see
//! `model::versions`); these are the API types around it.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::*;

/// A bucket's versioning state (S3 `VersioningConfiguration/Status`). A
/// bucket starts [`Versioning::Unversioned`] and, once versioning was
/// enabled, can only be `Enabled` or `Suspended`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Versioning {
    /// Versioning was never enabled: a write replaces the key's one
    /// version (its version id is `null`).
    #[default]
    Unversioned,
    /// Every write makes a new version; a delete without a version id adds
    /// a delete marker.
    Enabled,
    /// Writes replace the `null` version and keep the others.
    Suspended,
}

impl Versioning {
    /// True once versioning was ever enabled (responses then carry
    /// `x-amz-version-id`).
    pub fn configured(self) -> bool {
        self != Versioning::Unversioned
    }
}

/// Which version of a key a request names: S3's `versionId`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VersionRef {
    /// The `null` version: the one written while the bucket was
    /// unversioned or suspended.
    Null,
    /// A version written while versioning was enabled (or a delete
    /// marker): its id.
    Id(StripeId),
}

impl VersionRef {
    /// Parses S3's `versionId`: `null`, or the 32 hex characters Cairn
    /// hands out. Anything else is S3's "Invalid version id specified".
    pub fn parse(s: &str) -> Result<VersionRef, InvalidInput> {
        if s == "null" {
            return Ok(VersionRef::Null);
        }
        s.parse::<StripeId>()
            .map(VersionRef::Id)
            .map_err(|_| InvalidInput("Invalid version id specified".into()))
    }
}

impl fmt::Display for VersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionRef::Null => f.write_str("null"),
            VersionRef::Id(id) => write!(f, "{id}"),
        }
    }
}

impl fmt::Debug for VersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VersionRef({self})")
    }
}

/// What a write or delete in a bucket with versioning configured made or
/// removed ([`CommandResult::Version`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionStamp {
    /// The version written, or removed by a delete naming a version.
    pub version: VersionRef,
    /// It is (or was) a delete marker.
    pub delete_marker: bool,
}

/// An Object Lock retention mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockMode {
    /// Deletable or shortened only with `x-amz-bypass-governance-retention`
    /// by the bucket's owner (or an admin key).
    Governance,
    /// Never deleted, shortened or weakened by anyone until it ends.
    Compliance,
}

/// A version's retention: locked until `until_ms` (ms since the epoch, as
/// the leader's clock stamps every log entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Mode.
    pub mode: LockMode,
    /// End of the retention, ms since the epoch.
    pub until_ms: u64,
}

/// A bucket's default retention (S3 `DefaultRetention`), applied to every
/// new version written into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultRetention {
    /// Mode.
    pub mode: LockMode,
    /// Length in days (S3 `Years` are stored as 365 days each).
    pub days: u32,
}

/// A bucket's Object Lock configuration: present once Object Lock is
/// enabled (it can never be disabled, as on S3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectLockConfig {
    /// Default retention of new versions, if any.
    pub default: Option<DefaultRetention>,
}

/// Longest retention Cairn accepts (100 years): bounds `until_ms`
/// arithmetic and catches unit mistakes.
pub const MAX_RETENTION_DAYS: u32 = 36_500;

impl Retention {
    /// Whether it still holds at `now_ms`.
    pub fn active(&self, now_ms: u64) -> bool {
        self.until_ms > now_ms
    }
}

/// One version of a key as GET/HEAD see it ([`QueryResult::Version`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionView {
    /// The version's manifest with its first page of stripes (empty for a
    /// delete marker: size 0, no stripes).
    pub manifest: ObjectManifest,
    /// Its id.
    pub version: VersionRef,
    /// It is a delete marker.
    pub delete_marker: bool,
    /// It is the key's newest version.
    pub latest: bool,
    /// The bucket's versioning state.
    pub versioning: Versioning,
    /// Its Object Lock retention, if any.
    pub retention: Option<Retention>,
    /// Its Object Lock legal hold.
    pub legal_hold: bool,
}

/// A ListObjectVersions request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListVersionsRequest {
    /// Bucket.
    pub bucket: String,
    /// Only keys starting with this.
    #[serde(default)]
    pub prefix: String,
    /// Roll keys up to common prefixes at the first occurrence of this
    /// after the prefix (empty = none).
    #[serde(default)]
    pub delimiter: Option<String>,
    /// Start after this key (all its versions), or, with
    /// `version_marker`, after that version of it.
    #[serde(default)]
    pub key_marker: Option<String>,
    /// With `key_marker`: start after this version of that key.
    #[serde(default)]
    pub version_marker: Option<VersionRef>,
    /// At most this many versions, delete markers and common prefixes
    /// (S3 caps at 1000).
    pub max_keys: u32,
}

/// One listed version or delete marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionEntry {
    /// Key.
    pub key: String,
    /// Version id.
    pub version: VersionRef,
    /// Newest version of its key.
    pub latest: bool,
    /// A delete marker (no size, no ETag).
    pub delete_marker: bool,
    /// Size.
    pub size: u64,
    /// ETag (empty for a delete marker).
    pub etag: String,
    /// Creation time, ms.
    pub created_ms: u64,
}

/// A page of ListObjectVersions, newest version of each key first, keys in
/// order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionPage {
    /// Versions and delete markers, in listing order.
    pub entries: Vec<VersionEntry>,
    /// Common prefixes, sorted.
    pub common_prefixes: Vec<String>,
    /// More results follow.
    pub truncated: bool,
    /// Pass back as `key_marker` for the next page.
    pub next_key_marker: Option<String>,
    /// Pass back as `version_marker` for the next page.
    pub next_version_marker: Option<VersionRef>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ids_parse_and_print() {
        assert_eq!(VersionRef::parse("null").ok(), Some(VersionRef::Null));
        let id = StripeId([7; 16]);
        let s = VersionRef::Id(id).to_string();
        assert_eq!(s.len(), 32);
        assert_eq!(VersionRef::parse(&s).ok(), Some(VersionRef::Id(id)));
        let upper = format!("{}A", &s[..31]);
        for bad in ["", "NULL", "xyz", "0707", &upper] {
            assert!(VersionRef::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
