//! Access key commands (the `keys` table): create or replace, grants,
//! rotation, and sealing legacy plaintext secrets. Secrets arrive sealed
//! ([`crate::secrets`]) from the proposing node; `apply` never sees a KEK
//! and never decides anything by a clock (the entry's `now`).

use super::*;

fn get_key(txn: &redb::WriteTransaction, id: &str) -> StoreResult<Option<AccessKey>> {
    let t = txn.open_table(KEYS)?;
    let v = t.get(id.as_bytes())?;
    match v {
        Some(v) => Ok(Some(dec(v.value())?)),
        None => Ok(None),
    }
}

fn put_key(txn: &redb::WriteTransaction, key: &AccessKey) -> StoreResult<()> {
    txn.open_table(KEYS)?
        .insert(key.id.as_bytes(), enc(key)?.as_slice())?;
    Ok(())
}

/// `PutAccessKey`: create or replace. A replaced key keeps its expiry (a
/// rotated-out key cannot be revived by writing it again), and a new one
/// never gets one from here (only `RotateAccessKey` sets expiries).
pub(super) fn put_access_key(
    txn: &redb::WriteTransaction,
    key: &AccessKey,
) -> StoreResult<Result<CommandResult, MetaError>> {
    if key.id.is_empty() || key.secret.is_empty() {
        return Ok(Err(MetaError::Invalid(
            "access key id and secret must not be empty".into(),
        )));
    }
    let mut k = key.clone();
    k.expires_ms = get_key(txn, &key.id)?.and_then(|old| old.expires_ms);
    put_key(txn, &k)?;
    Ok(Ok(CommandResult::Ok))
}

/// `SetAccessKeyGrant`.
pub(super) fn set_access_key_grant(
    txn: &redb::WriteTransaction,
    id: &str,
    bucket: &str,
    grant: &BucketGrant,
) -> StoreResult<Result<CommandResult, MetaError>> {
    if let Err(e) = validate_bucket_name(bucket) {
        return Ok(Err(e.into()));
    }
    let Some(mut k) = get_key(txn, id)? else {
        return Ok(Err(MetaError::NoSuchAccessKey(id.to_string())));
    };
    k.buckets.insert(bucket.to_string(), *grant);
    put_key(txn, &k)?;
    Ok(Ok(CommandResult::Ok))
}

/// `RotateAccessKey`.
pub(super) fn rotate_access_key(
    txn: &redb::WriteTransaction,
    id: &str,
    new_id: &str,
    secret: &str,
    overlap_ms: u64,
    now: u64,
) -> StoreResult<Result<CommandResult, MetaError>> {
    if new_id.is_empty() || secret.is_empty() {
        return Ok(Err(MetaError::Invalid(
            "access key id and secret must not be empty".into(),
        )));
    }
    let Some(mut old) = get_key(txn, id)? else {
        return Ok(Err(MetaError::NoSuchAccessKey(id.to_string())));
    };
    if new_id == id || get_key(txn, new_id)?.is_some() {
        return Ok(Err(MetaError::Invalid(format!(
            "access key {new_id} exists"
        ))));
    }
    let mut new = old.clone();
    new.id = new_id.to_string();
    new.secret = secret.to_string();
    new.created_ms = now;
    new.expires_ms = None;
    // Buckets the old key created are its own without a grant (their
    // owner is its id): the new key gets an owner grant on each.
    {
        let t = txn.open_table(BUCKETS)?;
        for r in t.iter()? {
            let (_, v) = r?;
            let b: BucketInfo = dec(v.value())?;
            if b.owner == id {
                new.buckets.entry(b.name).or_default().owner = true;
            }
        }
    }
    let until = now.saturating_add(overlap_ms);
    old.expires_ms = Some(old.expires_ms.map_or(until, |e| e.min(until)));
    put_key(txn, &new)?;
    put_key(txn, &old)?;
    Ok(Ok(CommandResult::Ok))
}

/// BLAKE3 of a legacy plaintext secret, hex: what `SealAccessKey` names
/// the plaintext it replaces by.
pub fn legacy_secret_hash(plaintext: &str) -> String {
    blake3::hash(plaintext.as_bytes()).to_hex().to_string()
}

/// `SealAccessKey`.
pub(super) fn seal_access_key(
    txn: &redb::WriteTransaction,
    id: &str,
    legacy_hash: &str,
    sealed: &str,
) -> StoreResult<Result<CommandResult, MetaError>> {
    if !crate::secrets::is_sealed(sealed) {
        return Ok(Err(MetaError::Invalid(format!(
            "SealAccessKey of {id} carries no sealed secret"
        ))));
    }
    let Some(mut k) = get_key(txn, id)? else {
        return Ok(Err(MetaError::NoSuchAccessKey(id.to_string())));
    };
    if crate::secrets::is_sealed(&k.secret) || legacy_secret_hash(&k.secret) != legacy_hash {
        return Ok(Err(MetaError::Stale(format!(
            "the secret of access key {id} changed"
        ))));
    }
    k.secret = sealed.to_string();
    put_key(txn, &k)?;
    Ok(Ok(CommandResult::Ok))
}

/// Access keys whose secret is still legacy plaintext (rows of an older
/// data dir), at most `limit`: what the leader's key sealer seals.
pub fn legacy_secrets(txn: &redb::ReadTransaction, limit: usize) -> StoreResult<Vec<AccessKey>> {
    let mut out = Vec::new();
    if let Some(t) = open_ro(txn, KEYS)? {
        for r in t.iter()? {
            let (_, v) = r?;
            let k: AccessKey = dec(v.value())?;
            if !k.secret.is_empty() && !crate::secrets::is_sealed(&k.secret) {
                out.push(k);
                if out.len() >= limit {
                    break;
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    fn db() -> redb::Database {
        match redb::Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())
        {
            Ok(d) => d,
            Err(e) => panic!("in-memory redb: {e}"),
        }
    }

    fn run(db: &redb::Database, cmd: Command, now: u64) -> CommandResult {
        let txn = db.begin_write().unwrap();
        let r = apply_at(
            &txn,
            &Command::At {
                now_ms: now,
                inner: Box::new(cmd),
            },
            0,
        )
        .unwrap();
        txn.commit().unwrap();
        r
    }

    fn get(db: &redb::Database, id: &str) -> Option<AccessKey> {
        let txn = db.begin_read().unwrap();
        match query(&txn, &Query::GetAccessKey { id: id.into() }).unwrap() {
            QueryResult::AccessKey(k) => Some(k),
            _ => None,
        }
    }

    fn key(id: &str, secret: &str) -> AccessKey {
        AccessKey {
            id: id.into(),
            secret: secret.into(),
            name: "alice".into(),
            created_ms: 1,
            admin: false,
            buckets: BTreeMap::from([(
                "granted".to_string(),
                BucketGrant {
                    read: true,
                    write: false,
                    owner: false,
                },
            )]),
            // Never taken from a PutAccessKey.
            expires_ms: Some(5),
        }
    }

    #[test]
    fn rotation_copies_grants_and_ownership_and_expires_the_old_key() {
        let db = db();
        assert_eq!(
            run(
                &db,
                Command::PutAccessKey {
                    key: key("CK1", "sealed-1")
                },
                10
            ),
            CommandResult::Ok
        );
        assert_eq!(get(&db, "CK1").unwrap().expires_ms, None);
        let bucket = |name: &str, owner: &str| Command::CreateBucket {
            bucket: BucketInfo {
                name: name.into(),
                ec: EcParams { k: 2, m: 1 },
                shard_size: 4096,
                created_ms: 1,
                owner: owner.into(),
            },
        };
        run(&db, bucket("mine", "CK1"), 11);
        run(&db, bucket("theirs", "CK9"), 11);
        let grant = Command::SetAccessKeyGrant {
            id: "CK1".into(),
            bucket: "more".into(),
            grant: BucketGrant {
                read: true,
                write: true,
                owner: false,
            },
        };
        assert_eq!(run(&db, grant, 12), CommandResult::Ok);
        assert_eq!(
            get(&db, "CK1").unwrap().secret,
            "sealed-1",
            "grant kept the secret"
        );
        let rotate = |new_id: &str, overlap_ms| Command::RotateAccessKey {
            id: "CK1".into(),
            new_id: new_id.into(),
            secret: SecretString("sealed-2".into()),
            overlap_ms,
        };
        assert_eq!(run(&db, rotate("CK2", 1000), 100), CommandResult::Ok);
        let old = get(&db, "CK1").unwrap();
        let new = get(&db, "CK2").unwrap();
        assert_eq!(old.expires_ms, Some(1100));
        assert!(!old.expired_at(1099) && old.expired_at(1100));
        assert_eq!((new.expires_ms, new.created_ms), (None, 100));
        assert_eq!(new.secret, "sealed-2");
        assert_eq!(new.name, old.name);
        assert_eq!(new.buckets["granted"], old.buckets["granted"]);
        assert!(new.buckets["more"].write);
        assert!(new.buckets["mine"].owner, "owns what the old key created");
        assert!(!new.buckets.contains_key("theirs"));
        // A second rotation never extends the old key's life; a new id
        // that exists is refused; a missing key too.
        assert_eq!(run(&db, rotate("CK3", 5000), 200), CommandResult::Ok);
        assert_eq!(get(&db, "CK1").unwrap().expires_ms, Some(1100));
        assert!(matches!(
            run(&db, rotate("CK2", 1), 300),
            CommandResult::Err(MetaError::Invalid(_))
        ));
        let missing = Command::RotateAccessKey {
            id: "CKX".into(),
            new_id: "CK4".into(),
            secret: SecretString("s".into()),
            overlap_ms: 1,
        };
        assert!(matches!(
            run(&db, missing, 300),
            CommandResult::Err(MetaError::NoSuchAccessKey(_))
        ));
        // Writing the old key again keeps its expiry.
        run(
            &db,
            Command::PutAccessKey {
                key: key("CK1", "sealed-x"),
            },
            400,
        );
        assert_eq!(get(&db, "CK1").unwrap().expires_ms, Some(1100));
    }

    #[test]
    fn sealing_replaces_only_the_plaintext_it_names() {
        let db = db();
        run(
            &db,
            Command::PutAccessKey {
                key: key("CK1", "plain"),
            },
            1,
        );
        let txn = db.begin_read().unwrap();
        let legacy = legacy_secrets(&txn, 10).unwrap();
        drop(txn);
        assert_eq!(legacy.len(), 1);
        let seal = |hash: String, sealed: &str| Command::SealAccessKey {
            id: "CK1".into(),
            legacy_hash: hash,
            sealed: SecretString(sealed.into()),
        };
        let sealed = format!("{}0011223344556677:00", crate::secrets::SEALED_PREFIX);
        assert!(matches!(
            run(&db, seal(legacy_secret_hash("other"), &sealed), 2),
            CommandResult::Err(MetaError::Stale(_))
        ));
        assert!(matches!(
            run(&db, seal(legacy_secret_hash("plain"), "not sealed"), 2),
            CommandResult::Err(MetaError::Invalid(_))
        ));
        assert_eq!(
            run(&db, seal(legacy_secret_hash("plain"), &sealed), 2),
            CommandResult::Ok
        );
        assert_eq!(get(&db, "CK1").unwrap().secret, sealed);
        let txn = db.begin_read().unwrap();
        assert!(legacy_secrets(&txn, 10).unwrap().is_empty());
    }
}
