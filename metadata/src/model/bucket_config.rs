//! Per-bucket S3 configuration: CORS rules (`PutBucketCors`,
//! `DeleteBucketCors`), bucket tags (`PutBucketTagging`,
//! `DeleteBucketTagging`), the versioning state (`PutBucketVersioning`)
//! and Object Lock (`PutObjectLockConfig`).
//!
//! # Layout
//! `bucket_config`: bucket name, NUL, kind (`cors`, `tagging`,
//! `versioning`, `object_lock`) -> [`CONFIG_V1`] ++ postcard value
//! (`Vec<CorsRule>` for `cors`, `BTreeMap<String, String>` for `tagging`,
//! [`Versioning`] for `versioning`, [`ObjectLockConfig`] for
//! `object_lock`). One bucket's rows are one key range, dropped with the
//! bucket (`DeleteBucket`). A bucket without a row has no configuration of
//! that kind (no versioning row: never versioned; no `object_lock` row:
//! no Object Lock); an empty CORS rule list or tag set is never stored. A
//! value whose first byte is not [`CONFIG_V1`] is refused as corrupt; a
//! new layout takes a new first byte. The table was
//! added within model format 3: an older file has it empty.

use super::*;

/// Bucket configuration rows: bucket NUL kind -> format byte ++ postcard.
pub const BUCKET_CONFIG: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bucket_config");

/// First byte of every `bucket_config` value this build writes.
pub const CONFIG_V1: u8 = 1;

/// The kind of a CORS row.
const CORS: &str = "cors";
/// The kind of a tagging row.
const TAGGING: &str = "tagging";
/// The kind of a versioning row (postcard [`Versioning`]; no row =
/// [`Versioning::Unversioned`]).
const VERSIONING: &str = "versioning";
/// The kind of an Object Lock row (postcard [`ObjectLockConfig`]; no row =
/// Object Lock not enabled).
const OBJECT_LOCK: &str = "object_lock";

fn encode<T: serde::Serialize>(v: &T) -> StoreResult<Vec<u8>> {
    let mut out = vec![CONFIG_V1];
    postcard::to_io(v, &mut out).map_err(|e| corrupt("encode bucket config", e))?;
    Ok(out)
}

fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> StoreResult<T> {
    match b.split_first() {
        Some((&CONFIG_V1, rest)) => {
            postcard::from_bytes(rest).map_err(|e| corrupt("decode bucket config", e))
        }
        _ => Err(corrupt("bucket config", "unknown row format")),
    }
}

/// Stores (or with `None` drops) one configuration row of `bucket`,
/// refusing a bucket that does not exist.
fn put_config(
    txn: &redb::WriteTransaction,
    bucket: &str,
    kind: &str,
    value: Option<Vec<u8>>,
) -> StoreResult<Result<CommandResult, MetaError>> {
    if txn.open_table(BUCKETS)?.get(bucket.as_bytes())?.is_none() {
        return Ok(Err(MetaError::NoSuchBucket(bucket.to_string())));
    }
    let key = object_key(bucket, kind);
    let mut t = txn.open_table(BUCKET_CONFIG)?;
    match value {
        Some(v) => {
            t.insert(key.as_slice(), v.as_slice())?;
        }
        None => {
            t.remove(key.as_slice())?;
        }
    }
    Ok(Ok(CommandResult::Ok))
}

/// Applies `PutBucketCors`.
pub(super) fn put_bucket_cors(
    txn: &redb::WriteTransaction,
    bucket: &str,
    rules: &[CorsRule],
) -> StoreResult<Result<CommandResult, MetaError>> {
    if let Err(e) = validate_cors(rules) {
        return Ok(Err(MetaError::Invalid(e.to_string())));
    }
    put_config(txn, bucket, CORS, Some(encode(&rules)?))
}

/// Applies `DeleteBucketCors`.
pub(super) fn delete_bucket_cors(
    txn: &redb::WriteTransaction,
    bucket: &str,
) -> StoreResult<Result<CommandResult, MetaError>> {
    put_config(txn, bucket, CORS, None)
}

/// Applies `PutBucketTagging` (an empty set drops the row).
pub(super) fn put_bucket_tagging(
    txn: &redb::WriteTransaction,
    bucket: &str,
    tags: &BTreeMap<String, String>,
) -> StoreResult<Result<CommandResult, MetaError>> {
    if let Err(e) = validate_bucket_tags(tags) {
        return Ok(Err(MetaError::Invalid(e.to_string())));
    }
    let value = if tags.is_empty() {
        None
    } else {
        Some(encode(tags)?)
    };
    put_config(txn, bucket, TAGGING, value)
}

/// Applies `DeleteBucketTagging`.
pub(super) fn delete_bucket_tagging(
    txn: &redb::WriteTransaction,
    bucket: &str,
) -> StoreResult<Result<CommandResult, MetaError>> {
    put_config(txn, bucket, TAGGING, None)
}

/// Applies `PutBucketVersioning`: `Enabled` or `Suspended` (a bucket
/// never goes back to unversioned, as on S3).
pub(super) fn put_bucket_versioning(
    txn: &redb::WriteTransaction,
    bucket: &str,
    state: Versioning,
) -> StoreResult<Result<CommandResult, MetaError>> {
    if state == Versioning::Unversioned {
        return Ok(Err(MetaError::Invalid(
            "versioning can be Enabled or Suspended, never turned off".into(),
        )));
    }
    if state == Versioning::Suspended && object_lock(txn, bucket)?.is_some() {
        return Ok(Err(MetaError::InvalidBucketState(
            "an Object Lock configuration is present on this bucket, so the versioning state cannot be changed".into(),
        )));
    }
    put_config(txn, bucket, VERSIONING, Some(encode(&state)?))
}

/// Applies `PutObjectLockConfig`: needs versioning `Enabled`.
pub(super) fn put_object_lock_config(
    txn: &redb::WriteTransaction,
    bucket: &str,
    config: &ObjectLockConfig,
) -> StoreResult<Result<CommandResult, MetaError>> {
    if txn.open_table(BUCKETS)?.get(bucket.as_bytes())?.is_none() {
        return Ok(Err(MetaError::NoSuchBucket(bucket.to_string())));
    }
    if let Some(d) = config.default {
        if d.days == 0 || d.days > MAX_RETENTION_DAYS {
            return Ok(Err(MetaError::Invalid(format!(
                "default retention must be 1 to {MAX_RETENTION_DAYS} days"
            ))));
        }
    }
    if bucket_versioning(txn, bucket)? != Versioning::Enabled {
        return Ok(Err(MetaError::InvalidBucketState(
            "Object Lock needs versioning Enabled on the bucket".into(),
        )));
    }
    put_config(txn, bucket, OBJECT_LOCK, Some(encode(config)?))
}

/// The Object Lock configuration of `bucket` inside a write transaction
/// (`None`: Object Lock is not enabled).
pub(super) fn object_lock(
    txn: &redb::WriteTransaction,
    bucket: &str,
) -> StoreResult<Option<ObjectLockConfig>> {
    let t = txn.open_table(BUCKET_CONFIG)?;
    let v = t.get(object_key(bucket, OBJECT_LOCK).as_slice())?;
    match v {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

/// Answers `GetObjectLockConfig`.
pub(super) fn get_object_lock_config(
    txn: &redb::ReadTransaction,
    bucket: &str,
) -> StoreResult<Result<QueryResult, MetaError>> {
    if get_bucket(txn, bucket)?.is_none() {
        return Ok(Err(MetaError::NoSuchBucket(bucket.to_string())));
    }
    let Some(t) = open_ro(txn, BUCKET_CONFIG)? else {
        return Ok(Ok(QueryResult::ObjectLock(None)));
    };
    let v = t.get(object_key(bucket, OBJECT_LOCK).as_slice())?;
    Ok(Ok(QueryResult::ObjectLock(match v {
        Some(v) => Some(decode(v.value())?),
        None => None,
    })))
}

/// The versioning state of `bucket` inside a write transaction.
pub(super) fn bucket_versioning(
    txn: &redb::WriteTransaction,
    bucket: &str,
) -> StoreResult<Versioning> {
    let t = txn.open_table(BUCKET_CONFIG)?;
    let v = t.get(object_key(bucket, VERSIONING).as_slice())?;
    match v {
        Some(v) => decode(v.value()),
        None => Ok(Versioning::Unversioned),
    }
}

/// The versioning state of `bucket` in a read transaction (no bucket
/// check).
pub(super) fn read_versioning(
    txn: &redb::ReadTransaction,
    bucket: &str,
) -> StoreResult<Versioning> {
    let Some(t) = open_ro(txn, BUCKET_CONFIG)? else {
        return Ok(Versioning::Unversioned);
    };
    let v = t.get(object_key(bucket, VERSIONING).as_slice())?;
    match v {
        Some(v) => decode(v.value()),
        None => Ok(Versioning::Unversioned),
    }
}

/// Answers `GetBucketVersioning`.
pub(super) fn get_bucket_versioning(
    txn: &redb::ReadTransaction,
    bucket: &str,
) -> StoreResult<Result<QueryResult, MetaError>> {
    Ok(get_config(txn, bucket, VERSIONING)?.map(QueryResult::Versioning))
}

/// Drops every configuration row of `bucket` (with the bucket).
pub(super) fn forget_bucket_config(txn: &redb::WriteTransaction, bucket: &str) -> StoreResult<()> {
    let mut t = txn.open_table(BUCKET_CONFIG)?;
    let start = object_key(bucket, "");
    let mut end = bucket.as_bytes().to_vec();
    end.push(1);
    let keys: Vec<Vec<u8>> = t
        .range::<&[u8]>(start.as_slice()..end.as_slice())?
        .map(|r| r.map(|(k, _)| k.value().to_vec()))
        .collect::<Result<_, _>>()?;
    for k in keys {
        t.remove(k.as_slice())?;
    }
    Ok(())
}

/// One configuration row of an existing bucket, decoded; `Err` when the
/// bucket does not exist.
fn get_config<T: serde::de::DeserializeOwned + Default>(
    txn: &redb::ReadTransaction,
    bucket: &str,
    kind: &str,
) -> StoreResult<Result<T, MetaError>> {
    if get_bucket(txn, bucket)?.is_none() {
        return Ok(Err(MetaError::NoSuchBucket(bucket.to_string())));
    }
    let Some(t) = open_ro(txn, BUCKET_CONFIG)? else {
        return Ok(Ok(T::default()));
    };
    match t.get(object_key(bucket, kind).as_slice())? {
        Some(v) => Ok(Ok(decode(v.value())?)),
        None => Ok(Ok(T::default())),
    }
}

/// Answers `GetBucketCors`.
pub(super) fn get_bucket_cors(
    txn: &redb::ReadTransaction,
    bucket: &str,
) -> StoreResult<Result<QueryResult, MetaError>> {
    Ok(get_config(txn, bucket, CORS)?.map(QueryResult::BucketCors))
}

/// Answers `GetBucketTagging`.
pub(super) fn get_bucket_tagging(
    txn: &redb::ReadTransaction,
    bucket: &str,
) -> StoreResult<Result<QueryResult, MetaError>> {
    Ok(get_config(txn, bucket, TAGGING)?.map(QueryResult::BucketTags))
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    fn run(db: &redb::Database, cmd: Command) -> CommandResult {
        let txn = db.begin_write().expect("begin");
        let r = apply(&txn, &cmd).expect("apply");
        txn.commit().expect("commit");
        r
    }

    fn ask(db: &redb::Database, q: Query) -> QueryResult {
        let txn = db.begin_read().expect("read");
        query(&txn, &q).expect("query")
    }

    fn create(db: &redb::Database, name: &str) -> CommandResult {
        let bucket = BucketInfo {
            name: name.into(),
            ec: EcParams { k: 1, m: 1 },
            shard_size: 4,
            created_ms: 0,
            owner: String::new(),
        };
        run(db, Command::CreateBucket { bucket })
    }

    fn rules() -> Vec<CorsRule> {
        vec![CorsRule {
            id: Some("r1".into()),
            allowed_methods: vec!["GET".into(), "PUT".into()],
            allowed_origins: vec!["http://*.example.com".into()],
            allowed_headers: vec!["*".into()],
            expose_headers: vec!["ETag".into()],
            max_age_seconds: Some(60),
        }]
    }

    #[test]
    fn bucket_config_round_trips_and_dies_with_its_bucket() {
        let db = redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("in-memory redb");
        let cors = |b: &str| Query::GetBucketCors { bucket: b.into() };
        let tagging = |b: &str| Query::GetBucketTagging { bucket: b.into() };
        let put_cors = |b: &str, rules: Vec<CorsRule>| Command::PutBucketCors {
            bucket: b.into(),
            rules,
        };
        let tags = BTreeMap::from([("team".to_string(), "storage".to_string())]);
        let put_tags = |b: &str, tags: BTreeMap<String, String>| Command::PutBucketTagging {
            bucket: b.into(),
            tags,
        };
        // No bucket: refused, nothing stored.
        assert_eq!(
            run(&db, put_cors("bkt", rules())),
            CommandResult::Err(MetaError::NoSuchBucket("bkt".into()))
        );
        assert_eq!(
            run(&db, put_tags("bkt", tags.clone())),
            CommandResult::Err(MetaError::NoSuchBucket("bkt".into()))
        );
        assert_eq!(
            ask(&db, cors("bkt")),
            QueryResult::Err(MetaError::NoSuchBucket("bkt".into()))
        );
        assert_eq!(create(&db, "bkt"), CommandResult::Ok);
        assert_eq!(create(&db, "bkt2"), CommandResult::Ok);
        assert_eq!(ask(&db, cors("bkt")), QueryResult::BucketCors(vec![]));
        assert_eq!(
            ask(&db, tagging("bkt")),
            QueryResult::BucketTags(BTreeMap::new())
        );
        assert_eq!(run(&db, put_cors("bkt", rules())), CommandResult::Ok);
        assert_eq!(run(&db, put_tags("bkt", tags.clone())), CommandResult::Ok);
        assert_eq!(ask(&db, cors("bkt")), QueryResult::BucketCors(rules()));
        assert_eq!(
            ask(&db, tagging("bkt")),
            QueryResult::BucketTags(tags.clone())
        );
        // The other bucket (a prefix-sharing name too) is untouched.
        assert_eq!(ask(&db, cors("bkt2")), QueryResult::BucketCors(vec![]));
        // Invalid input is refused by apply too, the old config kept.
        let bad = vec![CorsRule {
            allowed_methods: vec!["PATCH".into()],
            allowed_origins: vec!["*".into()],
            ..CorsRule::default()
        }];
        assert!(matches!(
            run(&db, put_cors("bkt", bad)),
            CommandResult::Err(MetaError::Invalid(_))
        ));
        let many: BTreeMap<String, String> =
            (0..51).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(matches!(
            run(&db, put_tags("bkt", many)),
            CommandResult::Err(MetaError::Invalid(_))
        ));
        assert_eq!(ask(&db, cors("bkt")), QueryResult::BucketCors(rules()));
        // Deletes.
        let del_cors = Command::DeleteBucketCors {
            bucket: "bkt".into(),
        };
        assert_eq!(run(&db, del_cors.clone()), CommandResult::Ok);
        assert_eq!(run(&db, del_cors), CommandResult::Ok);
        assert_eq!(ask(&db, cors("bkt")), QueryResult::BucketCors(vec![]));
        assert_eq!(
            run(&db, put_tags("bkt", BTreeMap::new())),
            CommandResult::Ok
        );
        assert_eq!(
            ask(&db, tagging("bkt")),
            QueryResult::BucketTags(BTreeMap::new())
        );
        assert_eq!(run(&db, put_tags("bkt", tags.clone())), CommandResult::Ok);
        let del_tags = Command::DeleteBucketTagging {
            bucket: "bkt".into(),
        };
        assert_eq!(run(&db, del_tags), CommandResult::Ok);
        assert_eq!(
            ask(&db, tagging("bkt")),
            QueryResult::BucketTags(BTreeMap::new())
        );
        // Deleting the bucket drops its rows; a new bucket of the same
        // name starts bare.
        assert_eq!(run(&db, put_cors("bkt", rules())), CommandResult::Ok);
        assert_eq!(run(&db, put_tags("bkt", tags)), CommandResult::Ok);
        let del = Command::DeleteBucket { name: "bkt".into() };
        assert_eq!(run(&db, del), CommandResult::Ok);
        let txn = db.begin_read().expect("read");
        assert_eq!(table_len(&txn, BUCKET_CONFIG).expect("len"), 0);
        drop(txn);
        assert_eq!(create(&db, "bkt"), CommandResult::Ok);
        assert_eq!(ask(&db, cors("bkt")), QueryResult::BucketCors(vec![]));
    }
}
