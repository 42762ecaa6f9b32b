//! SigV4 credentials and per-bucket permissions from the access keys stored
//! in the metadata service (`keys` table).
//!
//! s3s verifies signatures (headers, presigned URLs, streaming chunks) with
//! the secret [`KeyStore::secret`] returns; [`KeyStore::allowed`] decides
//! what a verified key may do. Keys and bucket owners are cached for
//! [`CACHE_TTL`], so a revoked key stops working within that time; ids the
//! metadata service does not know are remembered apart for [`NEGATIVE_TTL`]
//! (so a repeated unknown id costs one metadata read, not one per request,
//! and random ids cannot evict the keys in use), and an id that cannot be a
//! key id costs none.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cairn_client::{Client, ClientError};
use cairn_metadata::client::Consistency;
use cairn_metadata::types::{AccessKey, Query, QueryResult};
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::path::S3Path;
use s3s::{s3_error, S3Result};

use super::error::to_s3;

/// How long a key or a bucket's owner is trusted without asking the
/// metadata service: one lookup per key every few seconds instead of one
/// per request, and revocation still takes effect quickly.
pub const CACHE_TTL: Duration = Duration::from_secs(5);

/// How long an unknown key id is answered InvalidAccessKeyId without asking
/// the metadata service again: a key created meanwhile works after this.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// Entries per cache (known keys, unknown ids, bucket owners): bounds the
/// gateway's memory whatever ids clients send.
const MAX_CACHED: usize = 10_000;

/// Longest access key id looked up. Cairn's are 20 characters (AWS's up to
/// 128); anything longer, or with characters no key id has, is unknown
/// without a metadata read.
const MAX_KEY_ID_LEN: usize = 128;

/// Whether `id` could be an access key id at all.
fn plausible_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// What an operation needs on its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Read objects or list.
    Read,
    /// Write or delete objects.
    Write,
    /// Delete the bucket.
    Owner,
}

/// The access-key store shared by the auth and access checks.
pub struct KeyStore {
    client: Client,
    keys: Mutex<HashMap<String, (Instant, AccessKey)>>,
    /// Key ids the metadata service said do not exist, kept apart so a
    /// flood of random ids neither costs a metadata read per request for a
    /// repeated id nor evicts the keys in use.
    unknown: Mutex<HashMap<String, Instant>>,
    owners: Mutex<HashMap<String, (Instant, String)>>,
}

impl KeyStore {
    /// A store reading keys through `client`.
    pub fn new(client: Client) -> Self {
        KeyStore {
            client,
            keys: Mutex::default(),
            unknown: Mutex::default(),
            owners: Mutex::default(),
        }
    }

    /// The key `id`, or `None` if there is no such key or it has expired
    /// (the old key of a rotation, past its overlap: S3 answers 403
    /// InvalidAccessKeyId for a deactivated key, as for an unknown one).
    /// The expiry is checked on every call, cached key or not.
    pub async fn key(&self, id: &str) -> Result<Option<AccessKey>, ClientError> {
        let k = self.lookup(id).await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Ok(k.filter(|k| !k.expired_at(now) && !k.secret.is_empty()))
    }

    /// The key `id` as the metadata service (or the cache) has it.
    async fn lookup(&self, id: &str) -> Result<Option<AccessKey>, ClientError> {
        if !plausible_key_id(id) {
            return Ok(None);
        }
        if let Ok(g) = self.keys.lock() {
            if let Some((t, k)) = g.get(id) {
                if t.elapsed() < CACHE_TTL {
                    return Ok(Some(k.clone()));
                }
            }
        }
        if let Ok(g) = self.unknown.lock() {
            if g.get(id).is_some_and(|t| t.elapsed() < NEGATIVE_TTL) {
                return Ok(None);
            }
        }
        let r = self
            .client
            .meta()
            .query(
                &Query::GetAccessKey { id: id.to_string() },
                Consistency::Stale,
            )
            .await?;
        let k = match r {
            QueryResult::AccessKey(k) => Some(k),
            QueryResult::Err(cairn_metadata::types::MetaError::NoSuchAccessKey(_)) => None,
            QueryResult::Err(e) => return Err(e.into()),
            other => return Err(ClientError::Meta(format!("unexpected reply {other:?}"))),
        };
        match &k {
            Some(k) => {
                if let Ok(mut g) = self.keys.lock() {
                    if g.len() >= MAX_CACHED && !g.contains_key(id) {
                        g.retain(|_, (t, _)| t.elapsed() < CACHE_TTL);
                        if g.len() >= MAX_CACHED {
                            g.clear();
                        }
                    }
                    g.insert(id.to_string(), (Instant::now(), k.clone()));
                }
                if let Ok(mut g) = self.unknown.lock() {
                    g.remove(id);
                }
            }
            None => {
                if let Ok(mut g) = self.unknown.lock() {
                    if g.len() >= MAX_CACHED && !g.contains_key(id) {
                        g.retain(|_, t| t.elapsed() < NEGATIVE_TTL);
                        if g.len() >= MAX_CACHED {
                            g.clear();
                        }
                    }
                    g.insert(id.to_string(), Instant::now());
                }
            }
        }
        Ok(k)
    }

    /// The owner (access key id) of `bucket`; `None` if it does not exist.
    async fn owner(&self, bucket: &str) -> Result<Option<String>, ClientError> {
        if let Ok(g) = self.owners.lock() {
            if let Some((t, o)) = g.get(bucket) {
                if t.elapsed() < CACHE_TTL {
                    return Ok(Some(o.clone()));
                }
            }
        }
        match self.client.bucket(bucket).await {
            Ok(b) => {
                if let Ok(mut g) = self.owners.lock() {
                    if g.len() > 10_000 {
                        g.clear();
                    }
                    g.insert(bucket.to_string(), (Instant::now(), b.owner.clone()));
                }
                Ok(Some(b.owner))
            }
            Err(ClientError::NoSuchBucket(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether `key` may do what `need` says on `bucket`. A missing bucket
    /// is allowed here so the operation itself answers NoSuchBucket.
    pub async fn allowed(&self, key: &AccessKey, bucket: &str, need: Need) -> S3Result<bool> {
        if key.admin {
            return Ok(true);
        }
        let grant = key.buckets.get(bucket).copied().unwrap_or_default();
        let ok = match need {
            Need::Read => grant.read || grant.owner,
            Need::Write => grant.write || grant.owner,
            Need::Owner => grant.owner,
        };
        if ok {
            return Ok(true);
        }
        match self.owner(bucket).await.map_err(to_s3)? {
            None => Ok(true),
            Some(o) => Ok(!o.is_empty() && o == key.id),
        }
    }
}

/// What an S3 operation (by s3s name) needs on its bucket; `None` for
/// operations without a bucket or that create one.
pub fn need_of(op: &str) -> Option<Need> {
    match op {
        "ListBuckets" | "CreateBucket" => None,
        // Bucket configuration is the owner's, as on S3 (where only the
        // owner holds s3:PutBucketCORS / s3:PutBucketTagging by default).
        "DeleteBucket"
        | "PutBucketCors"
        | "DeleteBucketCors"
        | "PutBucketTagging"
        | "DeleteBucketTagging"
        | "PutBucketVersioning"
        | "PutObjectLockConfiguration"
        | "PutBucketAcl" => Some(Need::Owner),
        o if o.starts_with("Get") || o.starts_with("Head") || o.starts_with("List") => {
            Some(Need::Read)
        }
        _ => Some(Need::Write),
    }
}

/// s3s auth: the secret of an access key.
pub struct Auth(pub std::sync::Arc<KeyStore>);

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.key(access_key).await.map_err(to_s3)? {
            Some(k) => Ok(SecretKey::from(k.secret)),
            None => Err(s3_error!(InvalidAccessKeyId)),
        }
    }
}

/// s3s access control: every request must be signed by a known key with a
/// grant (or ownership) covering the bucket, within that key's request
/// rate; it also hands the key's stripe share to the write path.
pub struct Access(
    pub std::sync::Arc<KeyStore>,
    pub std::sync::Arc<super::hygiene::KeyLimits>,
);

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let op = cx.s3_op().name().to_string();
        if let Some(slot) = cx.extensions_mut().get::<super::ops::OpSlot>() {
            slot.set(&op);
        }
        let Some(cred) = cx.credentials() else {
            return Err(s3_error!(AccessDenied, "requests must be signed"));
        };
        let Some(key) = self.0.key(&cred.access_key).await.map_err(to_s3)? else {
            return Err(s3_error!(InvalidAccessKeyId));
        };
        // Before s3s reads any input: SSE is refused, never ignored.
        super::s3::encryption::refuse_sse(cx.headers(), cx.uri())?;
        let Some(share) = self.1.admit(&key.id) else {
            return Err(s3_error!(
                SlowDown,
                "access key {} is over its request rate (--key-rate-limit); slow down",
                key.id
            ));
        };
        if let Some(slot) = cx.extensions_mut().get::<cairn_client::ShareSlot>() {
            slot.set(share);
        }
        let Some(need) = need_of(cx.s3_op().name()) else {
            return Ok(());
        };
        let bucket = match cx.s3_path() {
            S3Path::Root => return Ok(()),
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => bucket.to_string(),
        };
        if self.0.allowed(&key, &bucket, need).await? {
            Ok(())
        } else {
            Err(s3_error!(
                AccessDenied,
                "access key has no {need:?} grant on {bucket}"
            ))
        }
    }
}

/// A fresh access key: a 20-character id (`CK` + 18 hex digits, the shape
/// S3 tools expect) and a 40-character hex secret, both random.
pub fn generate_key(name: &str, admin: bool) -> AccessKey {
    let id = format!("CK{}", hex::encode_upper(rand::random::<[u8; 9]>()));
    let secret = hex::encode(rand::random::<[u8; 20]>());
    AccessKey {
        id,
        secret,
        name: name.to_string(),
        created_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        admin,
        buckets: Default::default(),
        expires_ms: None,
    }
}
