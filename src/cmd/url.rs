//! `cairn://bucket/key` URLs of the user commands. Pure parsing with no
//! dependency but `anyhow`, so the fuzz target
//! `fuzz/fuzz_targets/cli_url.rs` includes this file as it is.

use anyhow::{bail, Context};

/// A parsed `cairn://bucket/key` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CairnUrl {
    /// Bucket.
    pub bucket: String,
    /// Key or prefix (may be empty).
    pub key: String,
}

impl std::str::FromStr for CairnUrl {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let rest = s
            .strip_prefix("cairn://")
            .with_context(|| format!("{s:?} is not a cairn://bucket/key URL"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            bail!("{s:?} names no bucket");
        }
        Ok(CairnUrl {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }
}

/// What `cairn ls` lists: the buckets (no URL, or `cairn://`) or the keys
/// under `cairn://bucket[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsTarget(pub Option<CairnUrl>);

impl std::str::FromStr for LsTarget {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        if s == "cairn://" || s == "cairn:///" {
            return Ok(LsTarget(None));
        }
        Ok(LsTarget(Some(s.parse()?)))
    }
}

/// Whether `s` names a Cairn object (rather than a local path or `-`).
pub fn is_remote(s: &str) -> bool {
    s.starts_with("cairn://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u: CairnUrl = "cairn://b/a/b/c".parse().unwrap();
        assert_eq!(u.bucket, "b");
        assert_eq!(u.key, "a/b/c");
        let u: CairnUrl = "cairn://b".parse().unwrap();
        assert_eq!(u.key, "");
        assert!("s3://b/k".parse::<CairnUrl>().is_err());
        assert!("cairn:///k".parse::<CairnUrl>().is_err());
    }

    #[test]
    fn ls_targets() {
        assert_eq!("cairn://".parse::<LsTarget>().unwrap(), LsTarget(None));
        assert!("cairn://b/p".parse::<LsTarget>().unwrap().0.is_some());
        assert!("b".parse::<LsTarget>().is_err());
        assert!(is_remote("cairn://b") && !is_remote("-"));
    }
}
