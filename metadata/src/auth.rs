//! Cluster credentials and per-role authorization of the internal APIs.
//!
//! One **cluster secret** (the root credential) lives only on the metadata
//! nodes and with the operator who creates the cluster. Every other process
//! gets a **role token** derived from it with BLAKE3 as a MAC:
//!
//! ```text
//! cairn1.<role>.<name>.<mac>.<data>
//!   mac  = keyed_hash(derive_key("cairn role token v1", secret), "<role>\0<name>")
//!   data = derive_key("cairn data plane v1", secret)        (hex)
//! ```
//!
//! - A metadata node recomputes the MAC from the secret, so it needs no
//!   table of tokens, and a token cannot be forged or turned into another
//!   role's without the secret (the MAC is one-way). The `name` says who
//!   (audit log); it is not a chunkserver id.
//! - `data` is the **data-plane key**: what clients, gateways and
//!   chunkservers present to chunkservers for shard reads and writes
//!   (chunkservers rebuild from each other, so every data-plane party holds
//!   it; a chunkserver cannot check MACs without the secret). It grants
//!   shard access on chunkservers and nothing on the metadata API.
//! - The cluster secret itself acts as [`Role::Metadata`] (Raft between
//!   nodes, and everything else): existing one-secret deployments keep
//!   working, and `cairn admin token issue` narrows them down.
//!
//! [`Authority`] maps a presented credential to its role;
//! [`allowed_endpoint`], [`allowed_command`] and [`allowed_query`] are the
//! authorization matrix the metadata API enforces.

use std::fmt;
use std::str::FromStr;

use subtle::ConstantTimeEq;

use crate::types::{Command, CommandRole, Query};

/// Prefix of every role token (the format's version).
pub const TOKEN_PREFIX: &str = "cairn1.";

/// Shortest cluster secret accepted: a guessable secret opens everything.
pub const MIN_SECRET_LEN: usize = 16;

/// Longest token `name`.
pub const MAX_NAME_LEN: usize = 64;

const ROLE_CONTEXT: &str = "cairn role token v1";
const DATA_CONTEXT: &str = "cairn data plane v1";

/// Who a credential speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The cluster secret: metadata nodes (Raft) and the cluster's owner.
    Metadata,
    /// An operator (`cairn admin`, the dashboard).
    Admin,
    /// An S3 gateway or the `cairn` object CLI: what S3 requests need.
    Gateway,
    /// A chunkserver: heartbeats, inventories, its tasks.
    Chunkserver,
}

impl Role {
    /// The name used in tokens and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Metadata => "metadata",
            Role::Admin => "admin",
            Role::Gateway => "gateway",
            Role::Chunkserver => "chunkserver",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "metadata" => Ok(Role::Metadata),
            "admin" => Ok(Role::Admin),
            "gateway" => Ok(Role::Gateway),
            "chunkserver" => Ok(Role::Chunkserver),
            _ => Err(format!(
                "unknown role {s:?} (metadata, admin, gateway or chunkserver)"
            )),
        }
    }
}

/// Why a secret or token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Empty or shorter than [`MIN_SECRET_LEN`].
    #[error("the cluster secret must be at least {MIN_SECRET_LEN} bytes (got {0})")]
    TooShort(usize),
    /// Starts like a token but is not one.
    #[error("malformed role token: {0}")]
    Malformed(&'static str),
    /// A token's name is empty, too long or has characters outside
    /// `[A-Za-z0-9_-]`.
    #[error("a token name is 1-{MAX_NAME_LEN} characters of A-Z a-z 0-9 _ -")]
    BadName,
}

fn role_key(secret: &str) -> [u8; 32] {
    blake3::derive_key(ROLE_CONTEXT, secret.as_bytes())
}

fn data_key_of_secret(secret: &str) -> String {
    hex::encode(blake3::derive_key(DATA_CONTEXT, secret.as_bytes()))
}

fn mac(key: &[u8; 32], role: Role, name: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(role.as_str().as_bytes());
    h.update(&[0]);
    h.update(name.as_bytes());
    *h.finalize().as_bytes()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// Checks a cluster secret's strength (not a token).
pub fn check_secret(secret: &str) -> Result<(), CredentialError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(CredentialError::TooShort(secret.len()));
    }
    Ok(())
}

/// True when `cred` has the shape of a role token (not a cluster secret).
pub fn is_token(cred: &str) -> bool {
    cred.starts_with(TOKEN_PREFIX)
}

/// A role token for `role` named `name`, derived from the cluster
/// `secret`.
pub fn issue_token(secret: &str, role: Role, name: &str) -> Result<String, CredentialError> {
    check_secret(secret)?;
    if is_token(secret) {
        return Err(CredentialError::Malformed(
            "tokens are issued from the cluster secret, not from another token",
        ));
    }
    if !valid_name(name) {
        return Err(CredentialError::BadName);
    }
    let m = mac(&role_key(secret), role, name);
    Ok(format!(
        "{TOKEN_PREFIX}{}.{name}.{}.{}",
        role.as_str(),
        hex::encode(m),
        data_key_of_secret(secret)
    ))
}

/// A parsed role token (not verified: only a metadata node can verify the
/// MAC).
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The role it claims.
    pub role: Role,
    /// Its name.
    pub name: String,
    mac: [u8; 32],
    data: String,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("role", &self.role)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Parses `cred` as a role token.
    pub fn parse(cred: &str) -> Result<Token, CredentialError> {
        let rest = cred
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(CredentialError::Malformed("no cairn1. prefix"))?;
        let mut parts = rest.split('.');
        let (Some(role), Some(name), Some(mac), Some(data), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(CredentialError::Malformed(
                "expected cairn1.ROLE.NAME.MAC.DATA",
            ));
        };
        let role = Role::from_str(role).map_err(|_| CredentialError::Malformed("unknown role"))?;
        if !valid_name(name) {
            return Err(CredentialError::BadName);
        }
        let mut m = [0u8; 32];
        hex::decode_to_slice(mac, &mut m)
            .map_err(|_| CredentialError::Malformed("MAC is not 64 hex digits"))?;
        let mut d = [0u8; 32];
        hex::decode_to_slice(data, &mut d)
            .map_err(|_| CredentialError::Malformed("data key is not 64 hex digits"))?;
        Ok(Token {
            role,
            name: name.to_string(),
            mac: m,
            data: data.to_ascii_lowercase(),
        })
    }
}

/// Checks a credential a process was started with: a cluster secret of at
/// least [`MIN_SECRET_LEN`] bytes or a well-formed role token.
pub fn check_credential(cred: &str) -> Result<(), CredentialError> {
    if is_token(cred) {
        Token::parse(cred).map(|_| ())
    } else {
        check_secret(cred)
    }
}

/// The data-plane key that goes with a credential: what to present to (and
/// expect from) chunkservers.
pub fn data_key(cred: &str) -> String {
    match Token::parse(cred) {
        Ok(t) => t.data,
        Err(_) => data_key_of_secret(cred),
    }
}

/// The role a credential presents itself with, without verifying it (what
/// a process logs about itself).
pub fn claimed_role(cred: &str) -> Role {
    Token::parse(cred).map(|t| t.role).unwrap_or(Role::Metadata)
}

/// Who made a request, as a metadata node verified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The verified role.
    pub role: Role,
    /// The token's name (`cluster-secret` for the secret itself).
    pub name: String,
}

/// What a metadata node verifies credentials with: the cluster secret.
/// Its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct Authority {
    secret: String,
    role_key: [u8; 32],
    data: String,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Authority(<redacted>)")
    }
}

impl Authority {
    /// An authority for the cluster `secret`.
    pub fn new(secret: &str) -> Authority {
        Authority {
            secret: secret.to_string(),
            role_key: role_key(secret),
            data: data_key_of_secret(secret),
        }
    }

    /// The verified caller of a presented credential, or `None` when it is
    /// neither the cluster secret nor a token minted from it. Comparisons
    /// are constant-time. A secret shorter than [`MIN_SECRET_LEN`] never
    /// matches anything.
    pub fn verify(&self, presented: &[u8]) -> Option<Caller> {
        if self.secret.len() < MIN_SECRET_LEN {
            return None;
        }
        if bool::from(presented.ct_eq(self.secret.as_bytes())) {
            return Some(Caller {
                role: Role::Metadata,
                name: "cluster-secret".into(),
            });
        }
        let t = Token::parse(std::str::from_utf8(presented).ok()?).ok()?;
        let want = mac(&self.role_key, t.role, &t.name);
        if !bool::from(want.ct_eq(&t.mac)) {
            return None;
        }
        // The MAC covers role and name only: check the data key too, so a
        // token carries exactly what `issue_token` gave it.
        if !bool::from(t.data.as_bytes().ct_eq(self.data.as_bytes())) {
            return None;
        }
        Some(Caller {
            role: t.role,
            name: t.name,
        })
    }
}

/// An endpoint of the metadata API, for [`allowed_endpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Raft RPCs between metadata nodes.
    Raft,
    /// `/v1/write`: checked per command by [`allowed_command`].
    Write,
    /// `/v1/read`: checked per query by [`allowed_query`].
    Read,
    /// `/v1/heartbeat` and `/v1/inventory`.
    Chunkserver,
    /// `/v1/status`: leader discovery, for every role.
    Status,
    /// `/v1/admin/*`.
    Admin,
}

/// Whether `role` may call `ep` at all.
pub fn allowed_endpoint(role: Role, ep: Endpoint) -> bool {
    match ep {
        Endpoint::Raft => role == Role::Metadata,
        Endpoint::Write | Endpoint::Read => role != Role::Chunkserver,
        Endpoint::Chunkserver => matches!(role, Role::Chunkserver | Role::Metadata),
        Endpoint::Status => true,
        Endpoint::Admin => matches!(role, Role::Admin | Role::Metadata),
    }
}

/// Whether `role` may propose `cmd` through `/v1/write`. Commands of the
/// leader's own workers and of chunkservers (which report on heartbeats,
/// never through `/v1/write`) are the cluster secret's only.
pub fn allowed_command(role: Role, cmd: &Command) -> bool {
    matches!(
        (role, cmd.role()),
        (Role::Metadata, _)
            | (Role::Admin | Role::Gateway, CommandRole::User)
            | (Role::Admin, CommandRole::Admin)
    )
}

/// Whether `role` may run `q` through `/v1/read`: a gateway reads what S3
/// requests need, including one access key by id (the secret of a key a
/// request presented); listing every key, the placement audit and the
/// repair queue are an operator's.
pub fn allowed_query(role: Role, q: &Query) -> bool {
    match role {
        Role::Metadata | Role::Admin => true,
        Role::Chunkserver => false,
        Role::Gateway => match q {
            Query::ListAccessKeys
            | Query::AuditPlacement { .. }
            | Query::RepairQueue { .. }
            | Query::AuditLog { .. } => false,
            Query::GetBucket { .. }
            | Query::ListBuckets
            | Query::GetObject { .. }
            | Query::GetObjectPage { .. }
            | Query::ObjectStripes { .. }
            | Query::ListObjects(_)
            | Query::ListChunkservers
            | Query::Allocate { .. }
            | Query::GetAccessKey { .. }
            | Query::GetUpload { .. }
            | Query::ListParts { .. }
            | Query::ListUploads { .. }
            | Query::GetBucketCors { .. }
            | Query::GetBucketTagging { .. }
            | Query::GetBucketVersioning { .. }
            | Query::GetVersionPage { .. }
            | Query::ListVersions(_)
            | Query::GetObjectLockConfig { .. } => true,
        },
    }
}

/// Whether an answer to `role` may carry an S3 secret: only
/// `GetAccessKey` (one key by id) ever does, and only to a gateway (which
/// verifies SigV4 with it) or the cluster secret. An operator manages keys
/// without their secrets (`SetAccessKeyGrant`, `RotateAccessKey`), so a
/// stolen admin token can mint keys but not read or impersonate existing
/// ones.
pub fn may_read_secrets(role: Role) -> bool {
    matches!(role, Role::Gateway | Role::Metadata)
}

/// The serde name of a command's or query's variant (`put_access_key`),
/// for refusal messages. Only called on refusals: it serializes the value.
pub fn kind_of<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Object(m)) => m.keys().next().cloned().unwrap_or_default(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-cluster-secret-of-some-length";

    #[test]
    fn tokens_verify_as_their_role_and_nothing_else() {
        let auth = Authority::new(SECRET);
        for role in [Role::Admin, Role::Gateway, Role::Chunkserver] {
            let t = issue_token(SECRET, role, "n1").unwrap();
            let c = auth.verify(t.as_bytes()).unwrap();
            assert_eq!(c.role, role);
            assert_eq!(c.name, "n1");
            assert_eq!(claimed_role(&t), role);
            assert_eq!(data_key(&t), data_key(SECRET));
        }
        assert_eq!(auth.verify(SECRET.as_bytes()).unwrap().role, Role::Metadata);
        // Another role's name on a gateway's MAC does not verify.
        let gw = issue_token(SECRET, Role::Gateway, "gw").unwrap();
        let forged = gw.replacen("gateway", "admin", 1);
        assert!(auth.verify(forged.as_bytes()).is_none());
        let renamed = gw.replacen(".gw.", ".gx.", 1);
        assert!(auth.verify(renamed.as_bytes()).is_none());
        // A token of another cluster does not verify.
        let other = issue_token("another-secret-long-enough", Role::Admin, "a").unwrap();
        assert!(auth.verify(other.as_bytes()).is_none());
        assert!(auth.verify(b"").is_none());
        assert!(auth.verify(b"cairn1.admin").is_none());
    }

    #[test]
    fn short_secrets_are_refused_everywhere() {
        assert_eq!(check_secret(""), Err(CredentialError::TooShort(0)));
        assert!(check_secret("short").is_err());
        assert!(issue_token("short", Role::Admin, "a").is_err());
        let auth = Authority::new("short");
        assert!(auth.verify(b"short").is_none());
        assert!(check_credential(&issue_token(SECRET, Role::Gateway, "g").unwrap()).is_ok());
        assert!(check_credential("cairn1.gateway.g.zz.zz").is_err());
        assert!(issue_token(SECRET, Role::Admin, "bad name").is_err());
        assert!(issue_token(SECRET, Role::Admin, "").is_err());
    }

    #[test]
    fn token_debug_hides_the_mac() {
        let t = Token::parse(&issue_token(SECRET, Role::Gateway, "g").unwrap()).unwrap();
        let d = format!("{t:?}");
        assert!(!d.contains(&data_key(SECRET)), "{d}");
        assert!(!format!("{:?}", Authority::new(SECRET)).contains(SECRET));
    }

    #[test]
    fn the_matrix_keeps_roles_apart() {
        let put_key = Command::DeleteAccessKey { id: "GK1".into() };
        let remove = Command::RemoveChunkserver { id: 1 };
        let gc = Command::QueueGc {
            chunkserver: 1,
            shards: vec![],
        };
        let mk = Command::DeleteBucket { name: "b".into() };
        for cmd in [&put_key, &remove, &gc] {
            assert!(!allowed_command(Role::Chunkserver, cmd));
            assert!(!allowed_command(Role::Gateway, cmd));
        }
        assert_eq!(kind_of(&put_key), "delete_access_key");
        assert_eq!(kind_of(&Query::ListAccessKeys), "list_access_keys");
        assert!(allowed_command(Role::Admin, &put_key));
        assert!(allowed_command(Role::Admin, &remove));
        assert!(!allowed_command(Role::Admin, &gc));
        assert!(allowed_command(Role::Metadata, &gc));
        assert!(allowed_command(Role::Gateway, &mk));
        assert!(!allowed_command(Role::Chunkserver, &mk));
        assert!(!allowed_query(Role::Gateway, &Query::ListAccessKeys));
        assert!(allowed_query(
            Role::Gateway,
            &Query::GetAccessKey { id: "GK1".into() }
        ));
        assert!(!allowed_query(Role::Chunkserver, &Query::ListBuckets));
        assert!(may_read_secrets(Role::Gateway) && may_read_secrets(Role::Metadata));
        assert!(!allowed_query(Role::Gateway, &Query::AuditLog { limit: 1 }));
        assert!(allowed_query(Role::Admin, &Query::AuditLog { limit: 1 }));
        assert!(!may_read_secrets(Role::Admin) && !may_read_secrets(Role::Chunkserver));
        assert!(!allowed_endpoint(Role::Gateway, Endpoint::Admin));
        assert!(!allowed_endpoint(Role::Admin, Endpoint::Raft));
        assert!(!allowed_endpoint(Role::Gateway, Endpoint::Chunkserver));
        assert!(allowed_endpoint(Role::Chunkserver, Endpoint::Chunkserver));
        assert!(!allowed_endpoint(Role::Chunkserver, Endpoint::Write));
    }
}
