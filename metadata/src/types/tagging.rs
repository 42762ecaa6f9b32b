//! S3 object tags: the limits S3 enforces and their check, shared by the
//! gateway (which maps a refusal to `InvalidTag` / `BadRequest`) and
//! `apply` (which refuses a command that breaks them).

use std::collections::BTreeMap;

/// Most tags on one object (S3's limit).
pub const MAX_TAGS: usize = 10;

/// Longest tag key, in UTF-16 code units (S3 counts Unicode characters as
/// Java does).
pub const MAX_TAG_KEY: usize = 128;

/// Longest tag value, in UTF-16 code units.
pub const MAX_TAG_VALUE: usize = 256;

/// Why a tag set is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagError {
    /// More than [`MAX_TAGS`] tags (S3: `BadRequest`).
    TooMany(usize),
    /// More than [`crate::types::MAX_BUCKET_TAGS`] tags on a bucket (S3:
    /// `InvalidTag`).
    TooManyBucket(usize),
    /// A key or value breaks a rule (S3: `InvalidTag`).
    Invalid(String),
}

impl std::fmt::Display for TagError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TagError::TooMany(_) => write!(f, "Object tags cannot be greater than {MAX_TAGS}"),
            TagError::TooManyBucket(_) => write!(
                f,
                "Bucket tag count cannot be greater than {}",
                super::MAX_BUCKET_TAGS
            ),
            TagError::Invalid(why) => f.write_str(why),
        }
    }
}

/// Checks one key/value pair (count and duplicates are the caller's).
pub fn validate_tag(key: &str, value: &str) -> Result<(), TagError> {
    let klen = key.encode_utf16().count();
    if klen == 0 || klen > MAX_TAG_KEY {
        return Err(TagError::Invalid(format!(
            "The TagKey you have provided is invalid: it must be 1 to {MAX_TAG_KEY} characters"
        )));
    }
    if key.starts_with("aws:") {
        return Err(TagError::Invalid(
            "Your TagKey cannot be prefixed with aws:".into(),
        ));
    }
    if value.encode_utf16().count() > MAX_TAG_VALUE {
        return Err(TagError::Invalid(format!(
            "The TagValue you have provided is invalid: it must be at most {MAX_TAG_VALUE} characters"
        )));
    }
    if key.chars().chain(value.chars()).any(char::is_control) {
        return Err(TagError::Invalid(
            "The TagKey or TagValue you have provided contains a control character".into(),
        ));
    }
    Ok(())
}

/// Checks a whole tag set (a map, so keys are already unique).
pub fn validate_tags(tags: &BTreeMap<String, String>) -> Result<(), TagError> {
    if tags.len() > MAX_TAGS {
        return Err(TagError::TooMany(tags.len()));
    }
    tags.iter().try_for_each(|(k, v)| validate_tag(k, v))
}

/// Builds a tag set from pairs, refusing duplicate keys and broken limits.
pub fn tags_from_pairs(
    pairs: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, TagError> {
    let mut out = BTreeMap::new();
    let mut n = 0;
    for (k, v) in pairs {
        n += 1;
        if n > MAX_TAGS {
            return Err(TagError::TooMany(n));
        }
        validate_tag(&k, &v)?;
        if out.insert(k, v).is_some() {
            return Err(TagError::Invalid(
                "Cannot provide multiple Tags with the same key".into(),
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(n: usize) -> Vec<(String, String)> {
        (0..n).map(|i| (format!("k{i}"), format!("v{i}"))).collect()
    }

    #[test]
    fn tag_limits_follow_s3() {
        assert_eq!(tags_from_pairs(pairs(10)).map(|t| t.len()), Ok(10));
        assert_eq!(tags_from_pairs(pairs(11)), Err(TagError::TooMany(11)));
        let dup = vec![("a".to_string(), "1".to_string()), ("a".into(), "2".into())];
        assert!(matches!(tags_from_pairs(dup), Err(TagError::Invalid(_))));
        // 128 UTF-16 units: an astral character counts twice.
        assert!(validate_tag(&"k".repeat(128), "").is_ok());
        assert!(validate_tag(&"k".repeat(129), "").is_err());
        assert!(validate_tag(&"\u{1F600}".repeat(64), "").is_ok());
        assert!(validate_tag(&"\u{1F600}".repeat(65), "").is_err());
        assert!(validate_tag("k", &"v".repeat(256)).is_ok());
        assert!(validate_tag("k", &"v".repeat(257)).is_err());
        assert!(validate_tag("", "v").is_err());
        assert!(validate_tag("aws:x", "v").is_err());
        assert!(validate_tag("k", "a\nb").is_err());
    }
}
