//! Object tags: `Command::PutObjectTags`, conditional on the object's
//! version. Tags live in the object's head row (`ObjectManifest.tags`):
//! retagging rewrites the head only, never the stripe rows.

use super::*;

/// The tag limits as an `apply` refusal.
pub(super) fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), InvalidInput> {
    validate_tags(tags).map_err(|e| InvalidInput(e.to_string()))
}

/// Replaces the tags of `bucket/key` if its live version is `version`.
pub(super) fn put_object_tags(
    txn: &redb::WriteTransaction,
    bucket: &str,
    key: &str,
    version: &StripeId,
    tags: &BTreeMap<String, String>,
) -> StoreResult<Result<CommandResult, MetaError>> {
    if let Err(e) = check_tags(tags) {
        return Ok(Err(e.into()));
    }
    if txn.open_table(BUCKETS)?.get(bucket.as_bytes())?.is_none() {
        return Ok(Err(MetaError::NoSuchBucket(bucket.to_string())));
    }
    let ok = object_key(bucket, key);
    let mut head = match get_head(&txn.open_table(OBJECTS)?, &ok)? {
        Some(h) => h,
        None => {
            return Ok(Err(MetaError::NoSuchKey {
                bucket: bucket.to_string(),
                key: key.to_string(),
            }))
        }
    };
    if head.manifest.version != *version {
        return Ok(Err(MetaError::Stale(format!(
            "{bucket}/{key} is version {}, not {version}",
            head.manifest.version
        ))));
    }
    head.manifest.tags = tags.clone();
    store_head(txn, &ok, &head)?;
    Ok(Ok(CommandResult::Ok))
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

    fn inline(version: u8, tags: BTreeMap<String, String>) -> ObjectManifest {
        ObjectManifest {
            version: StripeId([version; 16]),
            size: 3,
            etag: "e".into(),
            content_type: None,
            headers: BTreeMap::new(),
            user_meta: BTreeMap::new(),
            checksums: BTreeMap::new(),
            created_ms: 0,
            ec: EcParams { k: 1, m: 1 },
            shard_size: 4,
            stripes: Vec::new(),
            parts: Vec::new(),
            inline: Some(InlineData::new(bytes::Bytes::from_static(b"abc"))),
            tags,
        }
    }

    fn tags_of(db: &redb::Database) -> Option<BTreeMap<String, String>> {
        let txn = db.begin_read().expect("read");
        let t = txn.open_table(OBJECTS).expect("objects");
        let head = get_head(&t, object_key("bkt", "k").as_slice()).expect("get")?;
        Some(head.manifest.tags)
    }

    fn tag(version: u8, k: &str) -> Command {
        Command::PutObjectTags {
            bucket: "bkt".into(),
            key: "k".into(),
            version: StripeId([version; 16]),
            tags: BTreeMap::from([(k.to_string(), "v".to_string())]),
        }
    }

    #[test]
    fn tagging_is_conditional_on_the_version() {
        let db = redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("in-memory redb");
        let bucket = BucketInfo {
            name: "bkt".into(),
            ec: EcParams { k: 1, m: 1 },
            shard_size: 4,
            created_ms: 0,
            owner: String::new(),
        };
        assert_eq!(
            run(&db, Command::CreateBucket { bucket }),
            CommandResult::Ok
        );
        // No object: NoSuchKey, nothing created.
        assert!(matches!(
            run(&db, tag(1, "a")),
            CommandResult::Err(MetaError::NoSuchKey { .. })
        ));
        assert_eq!(tags_of(&db), None);
        let put = |m: ObjectManifest| Command::PutObject {
            bucket: "bkt".into(),
            key: "k".into(),
            manifest: m,
            condition: PutCondition::None,
        };
        let initial = BTreeMap::from([("t".to_string(), "0".to_string())]);
        assert_eq!(run(&db, put(inline(1, initial.clone()))), CommandResult::Ok);
        assert_eq!(tags_of(&db), Some(initial));
        assert_eq!(run(&db, tag(1, "a")), CommandResult::Ok);
        assert_eq!(tags_of(&db).map(|t| t.contains_key("a")), Some(true));
        // Overwritten meanwhile: a tagging planned against version 1 is
        // refused and the new version keeps its (empty) tags.
        assert_eq!(run(&db, put(inline(2, BTreeMap::new()))), CommandResult::Ok);
        assert!(matches!(
            run(&db, tag(1, "b")),
            CommandResult::Err(MetaError::Stale(_))
        ));
        assert_eq!(tags_of(&db), Some(BTreeMap::new()));
        // Too many tags are refused by apply too, on tagging and on put.
        let many: BTreeMap<String, String> =
            (0..11).map(|i| (format!("k{i}"), String::new())).collect();
        let cmd = Command::PutObjectTags {
            bucket: "bkt".into(),
            key: "k".into(),
            version: StripeId([2; 16]),
            tags: many.clone(),
        };
        assert!(matches!(
            run(&db, cmd),
            CommandResult::Err(MetaError::Invalid(_))
        ));
        assert!(matches!(
            run(&db, put(inline(3, many))),
            CommandResult::Err(MetaError::Invalid(_))
        ));
        // Deleted meanwhile: NoSuchKey, nothing resurrected.
        let del = Command::DeleteObject {
            bucket: "bkt".into(),
            key: "k".into(),
            condition: PutCondition::None,
        };
        assert_eq!(run(&db, del), CommandResult::Ok);
        assert!(matches!(
            run(&db, tag(2, "c")),
            CommandResult::Err(MetaError::NoSuchKey { .. })
        ));
        assert_eq!(tags_of(&db), None);
    }
}
