//! Per-bucket S3 configuration: CORS rules and bucket tags, their limits
//! and their checks, shared by the gateway (which maps a refusal to the S3
//! error AWS answers) and `apply` (which refuses a command that breaks
//! them). Stored in the `bucket_config` table, one row per bucket and kind.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::tagging::{validate_tag, TagError};

/// Most rules in one CORS configuration (S3's limit).
pub const MAX_CORS_RULES: usize = 100;

/// Largest CORS configuration, in bytes of its XML (S3's limit; `apply`
/// holds the stored rules to the same bound).
pub const MAX_CORS_BYTES: usize = 64 << 10;

/// Longest CORS rule id (S3's limit).
pub const MAX_CORS_ID: usize = 255;

/// Most tags on one bucket (S3's limit).
pub const MAX_BUCKET_TAGS: usize = 50;

/// The methods a CORS rule may allow.
pub const CORS_METHODS: &[&str] = &["GET", "PUT", "POST", "DELETE", "HEAD"];

/// One CORS rule, as S3's `CORSRule`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsRule {
    /// `ID`: a name for the rule, at most [`MAX_CORS_ID`] characters.
    pub id: Option<String>,
    /// `AllowedMethod`s, among [`CORS_METHODS`].
    pub allowed_methods: Vec<String>,
    /// `AllowedOrigin`s, each with at most one `*` wildcard.
    pub allowed_origins: Vec<String>,
    /// `AllowedHeader`s (request headers a preflight may ask for; each
    /// with at most one `*`), compared without case.
    pub allowed_headers: Vec<String>,
    /// `ExposeHeader`s: response headers a browser may show the script.
    pub expose_headers: Vec<String>,
    /// `MaxAgeSeconds`: how long a browser may cache a preflight answer.
    pub max_age_seconds: Option<i32>,
}

/// Why a CORS configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsError {
    /// Not well formed (no rule, a rule without methods or origins):
    /// S3 answers `MalformedXML`.
    Malformed(String),
    /// Well formed but not allowed (a method S3 does not know, two
    /// wildcards, too many rules): S3 answers `InvalidRequest`.
    Invalid(String),
}

impl std::fmt::Display for CorsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CorsError::Malformed(m) | CorsError::Invalid(m) => f.write_str(m),
        }
    }
}

/// About the size of `rules` as S3 XML: what [`MAX_CORS_BYTES`] bounds.
pub fn cors_xml_len(rules: &[CorsRule]) -> usize {
    // <CORSConfiguration></CORSConfiguration>, <CORSRule></CORSRule>, and
    // each element's tags around its text.
    let each = |v: &[String], tag: usize| v.iter().map(|s| s.len() + 2 * tag + 5).sum::<usize>();
    39 + rules
        .iter()
        .map(|r| {
            21 + r.id.as_ref().map_or(0, |s| s.len() + 9)
                + each(&r.allowed_methods, 13)
                + each(&r.allowed_origins, 13)
                + each(&r.allowed_headers, 13)
                + each(&r.expose_headers, 12)
                + r.max_age_seconds.map_or(0, |_| 42)
        })
        .sum::<usize>()
}

/// Checks a CORS configuration as S3 does.
pub fn validate_cors(rules: &[CorsRule]) -> Result<(), CorsError> {
    if rules.is_empty() {
        return Err(CorsError::Malformed(
            "The XML you provided was not well-formed or did not validate against our published schema: a CORSConfiguration needs at least one CORSRule".into(),
        ));
    }
    if rules.len() > MAX_CORS_RULES {
        return Err(CorsError::Invalid(format!(
            "A CORS configuration can have at most {MAX_CORS_RULES} rules, this one has {}",
            rules.len()
        )));
    }
    if cors_xml_len(rules) > MAX_CORS_BYTES {
        return Err(CorsError::Invalid(format!(
            "The CORS configuration exceeds the maximum size of {MAX_CORS_BYTES} bytes"
        )));
    }
    for r in rules {
        if r.allowed_methods.is_empty() || r.allowed_origins.is_empty() {
            return Err(CorsError::Malformed(
                "The XML you provided was not well-formed or did not validate against our published schema: a CORSRule needs an AllowedMethod and an AllowedOrigin".into(),
            ));
        }
        if r.id
            .as_ref()
            .is_some_and(|id| id.chars().count() > MAX_CORS_ID)
        {
            return Err(CorsError::Invalid(format!(
                "The ID of a CORSRule can be at most {MAX_CORS_ID} characters"
            )));
        }
        if let Some(m) = r
            .allowed_methods
            .iter()
            .find(|m| !CORS_METHODS.contains(&m.as_str()))
        {
            return Err(CorsError::Invalid(format!(
                "Found unsupported HTTP method in CORS config. Unsupported method is {m}"
            )));
        }
        for (what, list) in [
            ("AllowedOrigin", &r.allowed_origins),
            ("AllowedHeader", &r.allowed_headers),
        ] {
            if let Some(v) = list.iter().find(|v| v.matches('*').count() > 1) {
                return Err(CorsError::Invalid(format!(
                    "{what} \"{v}\" can not have more than one wildcard."
                )));
            }
        }
        if let Some(v) = r.expose_headers.iter().find(|v| v.contains('*')) {
            return Err(CorsError::Invalid(format!(
                "ExposeHeader \"{v}\" contains wildcard. We currently do not support wildcard for ExposeHeader."
            )));
        }
        if r.max_age_seconds.is_some_and(|a| a < 0) {
            return Err(CorsError::Malformed(
                "The XML you provided was not well-formed or did not validate against our published schema: MaxAgeSeconds cannot be negative".into(),
            ));
        }
    }
    Ok(())
}

/// True when `value` matches `pattern`, whose one `*` (if any) stands for
/// any run of characters. Case matters unless `fold` (header names).
pub fn wildcard_match(pattern: &str, value: &str, fold: bool) -> bool {
    let (p, v) = if fold {
        (pattern.to_ascii_lowercase(), value.to_ascii_lowercase())
    } else {
        (pattern.to_string(), value.to_string())
    };
    match p.split_once('*') {
        None => p == v,
        Some((pre, post)) => {
            v.len() >= pre.len() + post.len() && v.starts_with(pre) && v.ends_with(post)
        }
    }
}

impl CorsRule {
    /// Whether this rule allows a request from `origin` with `method`
    /// asking to send `headers` (a preflight's
    /// `Access-Control-Request-Headers`; empty for an actual request).
    pub fn allows(&self, origin: &str, method: &str, headers: &[&str]) -> bool {
        self.allowed_origins
            .iter()
            .any(|o| wildcard_match(o, origin, false))
            && self.allowed_methods.iter().any(|m| m == method)
            && headers.iter().all(|h| {
                self.allowed_headers
                    .iter()
                    .any(|a| wildcard_match(a, h, true))
            })
    }

    /// True when the rule allows every origin: S3 then answers
    /// `Access-Control-Allow-Origin: *` without credentials.
    pub fn any_origin(&self) -> bool {
        self.allowed_origins.iter().any(|o| o == "*")
    }
}

/// Checks a bucket tag set (a map, so keys are already unique): at most
/// [`MAX_BUCKET_TAGS`] tags, each as object tags are.
pub fn validate_bucket_tags(tags: &BTreeMap<String, String>) -> Result<(), TagError> {
    if tags.len() > MAX_BUCKET_TAGS {
        return Err(TagError::TooManyBucket(tags.len()));
    }
    tags.iter().try_for_each(|(k, v)| validate_tag(k, v))
}

/// Builds a bucket tag set from pairs, refusing duplicate keys and broken
/// limits.
pub fn bucket_tags_from_pairs(
    pairs: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, TagError> {
    let mut out = BTreeMap::new();
    for (n, (k, v)) in pairs.into_iter().enumerate() {
        if n >= MAX_BUCKET_TAGS {
            return Err(TagError::TooManyBucket(n + 1));
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

    fn rule(methods: &[&str], origins: &[&str]) -> CorsRule {
        CorsRule {
            allowed_methods: methods.iter().map(|s| s.to_string()).collect(),
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            ..CorsRule::default()
        }
    }

    #[test]
    fn cors_limits_follow_s3() {
        assert!(validate_cors(&[rule(&["GET"], &["*"])]).is_ok());
        assert!(matches!(validate_cors(&[]), Err(CorsError::Malformed(_))));
        assert!(matches!(
            validate_cors(&[rule(&[], &["*"])]),
            Err(CorsError::Malformed(_))
        ));
        assert!(matches!(
            validate_cors(&[rule(&["GET"], &[])]),
            Err(CorsError::Malformed(_))
        ));
        let e = validate_cors(&[rule(&["PATCH"], &["*"])]);
        assert_eq!(
            e,
            Err(CorsError::Invalid(
                "Found unsupported HTTP method in CORS config. Unsupported method is PATCH".into()
            ))
        );
        // Methods are case-sensitive, as on S3.
        assert!(validate_cors(&[rule(&["get"], &["*"])]).is_err());
        assert!(validate_cors(&[rule(&["GET"], &["http://*.*.com"])]).is_err());
        let mut r = rule(&["GET"], &["http://*.example.com"]);
        r.allowed_headers = vec!["x-amz-*".into()];
        assert!(validate_cors(std::slice::from_ref(&r)).is_ok());
        r.allowed_headers = vec!["x-*-*".into()];
        assert!(validate_cors(std::slice::from_ref(&r)).is_err());
        r.allowed_headers = vec![];
        r.expose_headers = vec!["*".into()];
        assert!(validate_cors(&[r]).is_err());
        let hundred = vec![rule(&["GET"], &["*"]); 100];
        assert!(validate_cors(&hundred).is_ok());
        let many = vec![rule(&["GET"], &["*"]); 101];
        assert!(matches!(validate_cors(&many), Err(CorsError::Invalid(_))));
        let big = rule(&["GET"], &[&"o".repeat(70_000)]);
        assert!(matches!(validate_cors(&[big]), Err(CorsError::Invalid(_))));
    }

    #[test]
    fn cors_rules_match_as_s3() {
        let mut r = rule(&["GET", "PUT"], &["http://*.example.com"]);
        r.allowed_headers = vec!["x-amz-*".into(), "Content-Type".into()];
        assert!(r.allows("http://a.example.com", "GET", &[]));
        assert!(!r.allows("https://a.example.com", "GET", &[]));
        assert!(!r.allows("http://a.example.com", "DELETE", &[]));
        assert!(r.allows(
            "http://a.example.com",
            "PUT",
            &["content-type", "x-amz-date"]
        ));
        assert!(!r.allows("http://a.example.com", "PUT", &["authorization"]));
        assert!(!r.any_origin());
        assert!(wildcard_match("*", "anything", false));
        assert!(wildcard_match("http://a*", "http://a", false));
        assert!(!wildcard_match("ab*ba", "aba", false));
        assert!(!wildcard_match("http://A.com", "http://a.com", false));
    }

    #[test]
    fn bucket_tag_limits_follow_s3() {
        let pairs = |n: usize| (0..n).map(|i| (format!("k{i}"), String::new()));
        assert_eq!(bucket_tags_from_pairs(pairs(50)).map(|t| t.len()), Ok(50));
        assert_eq!(
            bucket_tags_from_pairs(pairs(51)),
            Err(TagError::TooManyBucket(51))
        );
        let dup = vec![("a".to_string(), "1".to_string()), ("a".into(), "2".into())];
        assert!(matches!(
            bucket_tags_from_pairs(dup),
            Err(TagError::Invalid(_))
        ));
        let aws = vec![("aws:x".to_string(), String::new())];
        assert!(bucket_tags_from_pairs(aws).is_err());
        let many: BTreeMap<String, String> = pairs(51).collect();
        assert!(validate_bucket_tags(&many).is_err());
    }
}
