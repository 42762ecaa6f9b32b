//! `apply`: the dispatch of every [`Command`] to the tables it changes,
//! with the checks shared by object writes (conditions, inline data).

use super::*;

/// Applies one command inside the caller's write transaction. A refusal is a
/// `CommandResult::Err` and leaves the tables untouched; an `Err` is a
/// storage failure.
pub fn apply(txn: &redb::WriteTransaction, cmd: &Command) -> StoreResult<CommandResult> {
    apply_at(txn, cmd, 0)
}

/// [`apply`] with the entry's time `now` (ms; 0 when the entry carries
/// none, see [`Command::At`]).
pub(super) fn apply_at(
    txn: &redb::WriteTransaction,
    cmd: &Command,
    now: u64,
) -> StoreResult<CommandResult> {
    match cmd {
        Command::Once { id, inner } => return apply_once(txn, id, inner, now),
        Command::Batch { cmds } => {
            let mut out = Vec::with_capacity(cmds.len());
            for c in cmds {
                out.push(apply_at(txn, c, now)?);
            }
            return Ok(CommandResult::Batch(out));
        }
        Command::At { now_ms, inner } => return apply_at(txn, inner, *now_ms),
        _ => {}
    }
    match apply_inner(txn, cmd, now)? {
        Ok(r) => Ok(r),
        Err(e) => Ok(CommandResult::Err(e)),
    }
}

pub(super) fn apply_once(
    txn: &redb::WriteTransaction,
    id: &StripeId,
    inner: &Command,
    now: u64,
) -> StoreResult<CommandResult> {
    if let Some(v) = txn.open_table(REQUESTS)?.get(id.0.as_slice())? {
        let v = v.value();
        if v.len() >= 8 {
            return dec(&v[8..]);
        }
    }
    // Nested `Once` is flattened: only the outer id counts.
    let inner = match inner {
        Command::Once { inner, .. } => inner.as_ref(),
        c => c,
    };
    let result = match apply_inner(txn, inner, now)? {
        Ok(r) => r,
        Err(e) => CommandResult::Err(e),
    };
    let mut counters = txn.open_table(COUNTERS)?;
    let seq = match counters.get(b"request_seq".as_slice())? {
        Some(v) => u64_from(v.value()),
        None => 0,
    } + 1;
    counters.insert(b"request_seq".as_slice(), seq.to_be_bytes().as_slice())?;
    drop(counters);
    let mut value = seq.to_be_bytes().to_vec();
    value.extend_from_slice(&enc(&result)?);
    let mut requests = txn.open_table(REQUESTS)?;
    let mut order = txn.open_table(REQUEST_ORDER)?;
    requests.insert(id.0.as_slice(), value.as_slice())?;
    order.insert(seq.to_be_bytes().as_slice(), id.0.as_slice())?;
    if seq > DEDUP_WINDOW {
        let old = (seq - DEDUP_WINDOW).to_be_bytes();
        let old_id = order.remove(old.as_slice())?.map(|g| g.value().to_vec());
        if let Some(old_id) = old_id {
            requests.remove(old_id.as_slice())?;
        }
    }
    Ok(result)
}

/// True when `def` (a table keyed by bucket NUL ...) has a row of `bucket`.
pub(super) fn has_bucket_rows(
    txn: &redb::WriteTransaction,
    def: TableDefinition<&[u8], &[u8]>,
    bucket: &str,
) -> StoreResult<bool> {
    let t = txn.open_table(def)?;
    let start = object_key(bucket, "");
    let mut end = bucket.as_bytes().to_vec();
    end.push(1);
    let found = t
        .range::<&[u8]>(start.as_slice()..end.as_slice())?
        .next()
        .is_some();
    Ok(found)
}

pub(super) fn apply_inner(
    txn: &redb::WriteTransaction,
    cmd: &Command,
    now: u64,
) -> StoreResult<Result<CommandResult, MetaError>> {
    match cmd {
        Command::Once { inner, .. } => apply_inner(txn, inner, now),
        Command::Batch { .. } => Ok(Err(MetaError::Invalid("nested batch".into()))),
        Command::At { now_ms, inner } => apply_inner(txn, inner, *now_ms),
        Command::RegisterIntent {
            intent,
            shards,
            lease_ms,
        } => register_intent(txn, intent, shards, *lease_ms, now),
        Command::WithIntent { intent, inner } => commit_with_intent(txn, intent, inner, now),
        Command::ExpireIntents { limit } => {
            expire_intents(txn, now, *limit as usize)?;
            Ok(Ok(CommandResult::Ok))
        }
        Command::CreateBucket { bucket } => {
            if let Err(e) = validate_bucket_name(&bucket.name).and_then(|_| bucket.ec.validate()) {
                return Ok(Err(e.into()));
            }
            let mut t = txn.open_table(BUCKETS)?;
            if t.get(bucket.name.as_bytes())?.is_some() {
                return Ok(Err(MetaError::BucketExists(bucket.name.clone())));
            }
            t.insert(bucket.name.as_bytes(), enc(bucket)?.as_slice())?;
            Ok(Ok(CommandResult::Ok))
        }
        Command::DeleteBucket { name } => {
            let mut t = txn.open_table(BUCKETS)?;
            if t.get(name.as_bytes())?.is_none() {
                return Ok(Err(MetaError::NoSuchBucket(name.clone())));
            }
            if has_bucket_rows(txn, UPLOADS, name)?
                || has_bucket_rows(txn, OBJECTS, name)?
                || has_versions(txn, name)?
            {
                return Ok(Err(MetaError::BucketNotEmpty(name.clone())));
            }
            t.remove(name.as_bytes())?;
            drop(t);
            stats::forget(txn, name)?;
            forget_bucket_config(txn, name)?;
            Ok(Ok(CommandResult::Ok))
        }
        Command::PutObject {
            bucket,
            key,
            manifest,
            condition,
        } => {
            if let Err(e) = validate_key(key)
                .and_then(|_| manifest.ec.validate())
                .and_then(|_| validate_inline(manifest))
                .and_then(|_| check_tags(&manifest.tags))
            {
                return Ok(Err(e.into()));
            }
            if txn.open_table(BUCKETS)?.get(bucket.as_bytes())?.is_none() {
                return Ok(Err(MetaError::NoSuchBucket(bucket.clone())));
            }
            if let Err(e) = PlacementRules::load(txn)?.refuse_write(
                manifest.ec,
                &manifest.stripes,
                true,
                &format!("{bucket}/{key}"),
            ) {
                return Ok(Err(e));
            }
            let ok = object_key(bucket, key);
            let cur = get_head(&txn.open_table(OBJECTS)?, &ok)?;
            if let Err(e) =
                check_condition(condition, cur.as_ref().map(|h| &h.manifest), bucket, key)
            {
                return Ok(Err(e));
            }
            install(txn, now, bucket, key, &ok, cur, manifest)
        }
        Command::DeleteObject {
            bucket,
            key,
            condition,
        } => {
            if txn.open_table(BUCKETS)?.get(bucket.as_bytes())?.is_none() {
                return Ok(Err(MetaError::NoSuchBucket(bucket.clone())));
            }
            let ok = object_key(bucket, key);
            let cur = get_head(&txn.open_table(OBJECTS)?, &ok)?;
            if let Err(e) =
                check_condition(condition, cur.as_ref().map(|h| &h.manifest), bucket, key)
            {
                return Ok(Err(e));
            }
            // S3 deletes of a missing key succeed.
            delete_current(txn, now, bucket, &ok, cur)
        }
        Command::RegisterChunkserver {
            addr,
            zone,
            capacity,
            free,
            now_ms,
        } => {
            let mut counters = txn.open_table(COUNTERS)?;
            let next = match counters.get(b"next_chunkserver_id".as_slice())? {
                Some(v) => u64_from(v.value()),
                None => 1,
            };
            counters.insert(
                b"next_chunkserver_id".as_slice(),
                (next + 1).to_be_bytes().as_slice(),
            )?;
            let info = ChunkserverInfo {
                id: next,
                addr: addr.clone(),
                zone: zone.clone(),
                capacity: *capacity,
                free: *free,
                used: 0,
                shard_count: 0,
                last_heartbeat_ms: *now_ms,
                state: ChunkserverState::Up,
            };
            let mut t = txn.open_table(CHUNKSERVERS)?;
            // A process registering anew at an address another id holds
            // replaced it (its whole data dir, `chunkserver-id` included,
            // is gone): the old id is Down at once, its shards lost.
            let mut replaced = Vec::new();
            for r in t.iter()? {
                let (_, v) = r?;
                let old: ChunkserverInfo = dec(v.value())?;
                if old.addr == *addr && old.state != ChunkserverState::Down {
                    replaced.push(old);
                }
            }
            for mut old in replaced {
                old.state = ChunkserverState::Down;
                t.insert(old.id.to_be_bytes().as_slice(), enc(&old)?.as_slice())?;
            }
            t.insert(next.to_be_bytes().as_slice(), enc(&info)?.as_slice())?;
            Ok(Ok(CommandResult::Registered { id: next }))
        }
        Command::ChunkserverStats {
            id,
            addr,
            zone,
            capacity,
            free,
            used,
            shard_count,
            now_ms,
        } => {
            let mut t = txn.open_table(CHUNKSERVERS)?;
            let mut info: ChunkserverInfo = match t.get(id.to_be_bytes().as_slice())? {
                Some(v) => dec(v.value())?,
                None => return Ok(Err(MetaError::NoSuchChunkserver(*id))),
            };
            info.addr = addr.clone();
            info.zone = zone.clone();
            info.capacity = *capacity;
            info.free = *free;
            info.used = *used;
            info.shard_count = *shard_count;
            info.last_heartbeat_ms = *now_ms;
            t.insert(id.to_be_bytes().as_slice(), enc(&info)?.as_slice())?;
            Ok(Ok(CommandResult::Ok))
        }
        Command::SetChunkserverState { id, state } => {
            let mut t = txn.open_table(CHUNKSERVERS)?;
            let mut info: ChunkserverInfo = match t.get(id.to_be_bytes().as_slice())? {
                Some(v) => dec(v.value())?,
                None => return Ok(Err(MetaError::NoSuchChunkserver(*id))),
            };
            info.state = *state;
            t.insert(id.to_be_bytes().as_slice(), enc(&info)?.as_slice())?;
            Ok(Ok(CommandResult::Ok))
        }
        Command::QueueRepair { items } => {
            let mut t = txn.open_table(REPAIR)?;
            for item in items {
                t.insert(repair_key(item).as_slice(), enc(item)?.as_slice())?;
            }
            Ok(Ok(CommandResult::Ok))
        }
        // The proposer (orphan reconciliation, `crate::orphans`) checked
        // that nothing names these shards on this chunkserver.
        Command::QueueGc {
            chunkserver,
            shards,
        } => {
            queue_gc(txn, now, shards.iter().map(|s| (*chunkserver, *s)))?;
            Ok(Ok(CommandResult::Ok))
        }
        Command::ReportBadShards {
            chunkserver,
            shards,
        } => {
            let mut t = txn.open_table(BAD)?;
            for s in shards {
                t.insert(gc_key(*chunkserver, s).as_slice(), [].as_slice())?;
            }
            Ok(Ok(CommandResult::Ok))
        }
        Command::ClearBadShards {
            chunkserver,
            shards,
        } => {
            let mut t = txn.open_table(BAD)?;
            for s in shards {
                t.remove(gc_key(*chunkserver, s).as_slice())?;
            }
            drop(t);
            clear_seen_repairs(txn, *chunkserver, shards)?;
            Ok(Ok(CommandResult::Ok))
        }
        Command::CommitRepair {
            bucket,
            key,
            version,
            stripe,
            index,
            shard,
            from,
            to,
            reused,
        } => commit_repair(
            txn, bucket, key, *version, *stripe, *index, shard, *from, *to, *reused, now,
        ),
        Command::RemoveChunkserver { id } => remove_chunkserver(txn, *id),
        Command::SetRebalance {
            enabled,
            threshold_pct,
        } => set_rebalance(txn, *enabled, *threshold_pct),
        Command::PutObjectTags {
            bucket,
            key,
            version,
            tags,
        } => put_object_tags(txn, bucket, key, version, tags),
        Command::PutBucketCors { bucket, rules } => put_bucket_cors(txn, bucket, rules),
        Command::DeleteBucketCors { bucket } => delete_bucket_cors(txn, bucket),
        Command::PutBucketTagging { bucket, tags } => put_bucket_tagging(txn, bucket, tags),
        Command::DeleteBucketTagging { bucket } => delete_bucket_tagging(txn, bucket),
        Command::PutBucketVersioning { bucket, state } => {
            put_bucket_versioning(txn, bucket, *state)
        }
        Command::DeleteObjectVersion {
            bucket,
            key,
            version,
            bypass_governance,
        } => delete_version(txn, now, bucket, key, version, *bypass_governance),
        Command::PutObjectLockConfig { bucket, config } => {
            put_object_lock_config(txn, bucket, config)
        }
        Command::PutObjectRetention {
            bucket,
            key,
            version,
            retention,
            bypass_governance,
        } => put_retention(
            txn,
            now,
            bucket,
            key,
            version.as_ref(),
            *retention,
            *bypass_governance,
        ),
        Command::PutObjectLegalHold {
            bucket,
            key,
            version,
            on,
        } => put_legal_hold(txn, bucket, key, version.as_ref(), *on),
        // Issue 14 (security): access keys, in `access_keys`.
        Command::SetAccessKeyGrant { id, bucket, grant } => {
            set_access_key_grant(txn, id, bucket, grant)
        }
        Command::RotateAccessKey {
            id,
            new_id,
            secret,
            overlap_ms,
        } => rotate_access_key(txn, id, new_id, &secret.0, *overlap_ms, now),
        Command::SealAccessKey {
            id,
            legacy_hash,
            sealed,
        } => seal_access_key(txn, id, legacy_hash, &sealed.0),
        Command::Audited { who, role, inner } => audited(txn, who, role, inner, now),
        Command::AuditRecord {
            who,
            role,
            what,
            result,
        } => {
            record_audit(txn, who, role, what, result, now)?;
            Ok(Ok(CommandResult::Ok))
        }
        Command::GcDone {
            chunkserver,
            shards,
        } => {
            for s in shards {
                unqueue_gc(txn, *chunkserver, s)?;
            }
            record_deleted(txn, *chunkserver, shards, now)?;
            Ok(Ok(CommandResult::Ok))
        }
        Command::PutAccessKey { key } => put_access_key(txn, key),
        Command::DeleteAccessKey { id } => {
            txn.open_table(KEYS)?.remove(id.as_bytes())?;
            Ok(Ok(CommandResult::Ok))
        }
        Command::CreateUpload { upload } => {
            if let Err(e) = validate_key(&upload.key)
                .and_then(|_| upload.ec.validate())
                .and_then(|_| check_tags(&upload.tags))
            {
                return Ok(Err(e.into()));
            }
            if txn
                .open_table(BUCKETS)?
                .get(upload.bucket.as_bytes())?
                .is_none()
            {
                return Ok(Err(MetaError::NoSuchBucket(upload.bucket.clone())));
            }
            txn.open_table(UPLOADS)?.insert(
                upload_key(&upload.bucket, &upload.key, &upload.id).as_slice(),
                enc(upload)?.as_slice(),
            )?;
            Ok(Ok(CommandResult::Ok))
        }
        Command::PutPart {
            bucket,
            key,
            upload,
            part,
        } => {
            let n = part.info.number;
            if n == 0 || n > MAX_PART_NUMBER {
                return Ok(Err(MetaError::Invalid(format!(
                    "part number {n} is outside 1..={MAX_PART_NUMBER}"
                ))));
            }
            let info: UploadInfo = match txn
                .open_table(UPLOADS)?
                .get(upload_key(bucket, key, upload).as_slice())?
            {
                Some(v) => dec(v.value())?,
                None => return Ok(Err(MetaError::NoSuchUpload(upload.to_hex()))),
            };
            if let Err(e) = PlacementRules::load(txn)?.refuse_write(
                info.ec,
                &part.stripes,
                true,
                &format!("{bucket}/{key} part {n}"),
            ) {
                return Ok(Err(e));
            }
            let mut t = txn.open_table(UPLOAD_PARTS)?;
            let pk = part_key(upload, n);
            let old: Option<UploadPart> = match t.get(pk.as_slice())? {
                Some(v) => Some(dec(v.value())?),
                None => None,
            };
            t.insert(pk.as_slice(), enc(part)?.as_slice())?;
            drop(t);
            let row = OwnerRow::Part(pk.to_vec());
            if let Some(old) = &old {
                shard_index::remove(txn, &row, &old.stripes, info.ec.k)?;
            }
            shard_index::add(txn, &row, *upload, 0, &part.stripes, info.ec.k)?;
            if let Some(old) = old {
                let keep: HashSet<ShardId> = placed_in(&part.stripes).map(|(_, s)| s).collect();
                let old: Vec<_> = placed_in(&old.stripes)
                    .filter(|(_, s)| !keep.contains(s))
                    .collect();
                queue_gc(txn, now, old.into_iter())?;
            }
            Ok(Ok(CommandResult::Ok))
        }
        Command::CompleteUpload {
            bucket,
            key,
            upload,
            parts,
            min_part_size,
            etag,
            version,
            checksums,
            now_ms,
            condition,
        } => complete_upload(
            txn,
            now,
            bucket,
            key,
            upload,
            parts,
            *min_part_size,
            etag,
            *version,
            checksums,
            *now_ms,
            condition,
        ),
        Command::AbortUpload {
            bucket,
            key,
            upload,
        } => {
            let removed = txn
                .open_table(UPLOADS)?
                .remove(upload_key(bucket, key, upload).as_slice())?
                .is_some();
            if !removed {
                return Ok(Err(MetaError::NoSuchUpload(upload.to_hex())));
            }
            let parts = take_parts(txn, upload)?;
            queue_gc(txn, now, parts.iter().flat_map(|p| placed_in(&p.stripes)))?;
            Ok(Ok(CommandResult::Ok))
        }
    }
}

/// An inline manifest holds exactly its bytes (bounded) and no stripes.
pub(super) fn validate_inline(m: &ObjectManifest) -> Result<(), InvalidInput> {
    let Some(inline) = &m.inline else {
        return Ok(());
    };
    if inline.data.len() > MAX_INLINE {
        return Err(InvalidInput(format!(
            "inline data of {} bytes is over {MAX_INLINE}",
            inline.data.len()
        )));
    }
    if inline.data.len() as u64 != m.size || !m.stripes.is_empty() || !m.parts.is_empty() {
        return Err(InvalidInput(
            "an inline manifest holds its whole object and no stripes".into(),
        ));
    }
    if !inline.verify() {
        return Err(InvalidInput("inline data does not match its BLAKE3".into()));
    }
    Ok(())
}

pub(super) fn check_condition(
    cond: &PutCondition,
    current: Option<&ObjectManifest>,
    bucket: &str,
    key: &str,
) -> Result<(), MetaError> {
    match (cond, current) {
        (PutCondition::None, _) => Ok(()),
        (PutCondition::IfNoneMatch, None) => Ok(()),
        (PutCondition::IfNoneMatch, Some(_)) => Err(MetaError::PreconditionFailed(format!(
            "{bucket}/{key} exists"
        ))),
        (PutCondition::IfMatch(_), None) | (PutCondition::IfVersion(_), None) => {
            Err(MetaError::NoSuchKey {
                bucket: bucket.into(),
                key: key.into(),
            })
        }
        (PutCondition::IfMatch(etag), Some(m)) => {
            let want = etag.trim_matches('"');
            if want == "*" || want == m.etag {
                Ok(())
            } else {
                Err(MetaError::PreconditionFailed(format!(
                    "{bucket}/{key} has ETag {}, not {want}",
                    m.etag
                )))
            }
        }
        (PutCondition::IfVersion(v), Some(m)) => {
            if *v == m.version {
                Ok(())
            } else {
                Err(MetaError::PreconditionFailed(format!(
                    "{bucket}/{key} changed"
                )))
            }
        }
    }
}
