//! `query`: reads against a consistent snapshot of the tables, and the
//! table walks the leader's workers use.

use super::*;

/// Rows in a model table (redb keeps table lengths: O(1)).
pub fn table_len(
    txn: &redb::ReadTransaction,
    def: TableDefinition<'static, &'static [u8], &'static [u8]>,
) -> StoreResult<u64> {
    match open_ro(txn, def)? {
        Some(t) => Ok(t.len()?),
        None => Ok(0),
    }
}

/// Calls `f` with every (bucket, key, manifest), in key order.
pub fn for_each_object(
    txn: &redb::ReadTransaction,
    mut f: impl FnMut(&str, &str, ObjectManifest),
) -> StoreResult<()> {
    let (Some(t), Some(stripes)) = (open_ro(txn, OBJECTS)?, open_ro(txn, OBJECT_STRIPES)?) else {
        return Ok(());
    };
    for r in t.iter()? {
        let (k, _) = r?;
        let raw = k.value();
        let Ok(ks) = std::str::from_utf8(raw) else {
            continue;
        };
        let Some((bucket, key)) = ks.split_once('\0') else {
            continue;
        };
        if let Some(m) = get_object(&t, &stripes, raw)? {
            f(bucket, key, m);
        }
    }
    Ok(())
}

/// Calls `f` with the stripes of every uploaded part of every upload in
/// progress.
pub fn for_each_part(
    txn: &redb::ReadTransaction,
    mut f: impl FnMut(&UploadPart),
) -> StoreResult<()> {
    let Some(t) = open_ro(txn, UPLOAD_PARTS)? else {
        return Ok(());
    };
    for r in t.iter()? {
        let (_, v) = r?;
        f(&dec(v.value())?);
    }
    Ok(())
}

/// Answers a read against a consistent snapshot of the tables. Placement
/// (`Allocate`) uses `rand` to spread load: queries are not replicated, so
/// this does not break determinism.
pub fn query(txn: &redb::ReadTransaction, q: &Query) -> StoreResult<QueryResult> {
    Ok(match query_inner(txn, q)? {
        Ok(r) => r,
        Err(e) => QueryResult::Err(e),
    })
}

pub(super) fn open_ro<'a>(
    txn: &redb::ReadTransaction,
    def: TableDefinition<'a, &'static [u8], &'static [u8]>,
) -> StoreResult<Option<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(super) fn get_bucket(
    txn: &redb::ReadTransaction,
    name: &str,
) -> StoreResult<Option<BucketInfo>> {
    let Some(t) = open_ro(txn, BUCKETS)? else {
        return Ok(None);
    };
    match t.get(name.as_bytes())? {
        Some(v) => Ok(Some(dec(v.value())?)),
        None => Ok(None),
    }
}

pub(super) fn query_inner(
    txn: &redb::ReadTransaction,
    q: &Query,
) -> StoreResult<Result<QueryResult, MetaError>> {
    match q {
        Query::GetBucket { name } => Ok(match get_bucket(txn, name)? {
            Some(b) => Ok(QueryResult::Bucket(b)),
            None => Err(MetaError::NoSuchBucket(name.clone())),
        }),
        Query::ListBuckets => {
            let mut out = Vec::new();
            if let Some(t) = open_ro(txn, BUCKETS)? {
                for r in t.iter()? {
                    let (_, v) = r?;
                    out.push(dec(v.value())?);
                }
            }
            Ok(Ok(QueryResult::Buckets(out)))
        }
        Query::GetObject { bucket, key } => {
            if get_bucket(txn, bucket)?.is_none() {
                return Ok(Err(MetaError::NoSuchBucket(bucket.clone())));
            }
            let not_found = || MetaError::NoSuchKey {
                bucket: bucket.clone(),
                key: key.clone(),
            };
            let (Some(t), Some(stripes)) = (open_ro(txn, OBJECTS)?, open_ro(txn, OBJECT_STRIPES)?)
            else {
                return Ok(Err(not_found()));
            };
            Ok(match get_object(&t, &stripes, &object_key(bucket, key))? {
                Some(m) => Ok(QueryResult::Object(m)),
                None => Err(not_found()),
            })
        }
        Query::GetObjectPage {
            bucket,
            key,
            stripes: want,
        } => {
            if get_bucket(txn, bucket)?.is_none() {
                return Ok(Err(MetaError::NoSuchBucket(bucket.clone())));
            }
            let not_found = || MetaError::NoSuchKey {
                bucket: bucket.clone(),
                key: key.clone(),
            };
            let Some(t) = open_ro(txn, OBJECTS)? else {
                return Ok(Err(not_found()));
            };
            let object = object_key(bucket, key);
            let Some(head) = get_head(&t, &object)? else {
                return Ok(Err(not_found()));
            };
            let mut m = head.manifest;
            let want = u64::from((*want).min(STRIPE_PAGE_MAX)).min(head.stripes);
            if want > 0 {
                if let Some(st) = open_ro(txn, OBJECT_STRIPES)? {
                    // `want` <= STRIPE_PAGE_MAX, so it fits in usize.
                    m.stripes = stripe_page(&st, &object, &m.version, 0, want as usize)?;
                }
                if (m.stripes.len() as u64) < want {
                    return Err(corrupt(
                        "object stripe rows",
                        format!("{bucket}/{key} lacks some"),
                    ));
                }
            }
            Ok(Ok(QueryResult::Object(m)))
        }
        Query::ObjectStripes {
            bucket,
            key,
            version,
            from,
            limit,
        } => {
            let stale = || {
                MetaError::Stale(format!(
                    "{bucket}/{key} is no longer version {version} (overwritten or deleted)"
                ))
            };
            let object = object_key(bucket, key);
            // Current or not: a read keeps its version while it exists
            // (an older version of a versioned key does).
            match read_version_head(txn, &object, version)? {
                Some(h) => {
                    let limit = u64::from((*limit).min(STRIPE_PAGE_MAX))
                        .min(h.stripes.saturating_sub(*from));
                    let rows = match open_ro(txn, OBJECT_STRIPES)? {
                        Some(st) if limit > 0 => {
                            stripe_page(&st, &object, version, *from, limit as usize)?
                        }
                        _ => Vec::new(),
                    };
                    if (rows.len() as u64) < limit {
                        return Err(corrupt(
                            "object stripe rows",
                            format!("{bucket}/{key} lacks some"),
                        ));
                    }
                    Ok(Ok(QueryResult::Stripes(rows)))
                }
                None => Ok(Err(stale())),
            }
        }
        Query::ListObjects(req) => {
            if get_bucket(txn, &req.bucket)?.is_none() {
                return Ok(Err(MetaError::NoSuchBucket(req.bucket.clone())));
            }
            Ok(list_objects(txn, req)?.map(QueryResult::List))
        }
        Query::ListChunkservers => Ok(Ok(QueryResult::Chunkservers(chunkservers(txn)?))),
        Query::RepairQueue { limit } => {
            let mut out = Vec::new();
            if let Some(t) = open_ro(txn, REPAIR)? {
                for r in t.iter()?.take(*limit) {
                    let (_, v) = r?;
                    out.push(dec(v.value())?);
                }
            }
            Ok(Ok(QueryResult::Repairs(out)))
        }
        Query::GetAccessKey { id } => {
            let Some(t) = open_ro(txn, KEYS)? else {
                return Ok(Err(MetaError::NoSuchAccessKey(id.clone())));
            };
            Ok(match t.get(id.as_bytes())? {
                Some(v) => Ok(QueryResult::AccessKey(dec(v.value())?)),
                None => Err(MetaError::NoSuchAccessKey(id.clone())),
            })
        }
        Query::ListAccessKeys => {
            let mut out = Vec::new();
            if let Some(t) = open_ro(txn, KEYS)? {
                for r in t.iter()? {
                    let (_, v) = r?;
                    out.push(dec(v.value())?);
                }
            }
            Ok(Ok(QueryResult::AccessKeys(out)))
        }
        Query::GetUpload {
            bucket,
            key,
            upload,
        } => {
            let Some(t) = open_ro(txn, UPLOADS)? else {
                return Ok(Err(MetaError::NoSuchUpload(upload.to_hex())));
            };
            Ok(match t.get(upload_key(bucket, key, upload).as_slice())? {
                Some(v) => Ok(QueryResult::Upload(dec(v.value())?)),
                None => Err(MetaError::NoSuchUpload(upload.to_hex())),
            })
        }
        Query::ListParts {
            bucket,
            key,
            upload,
            after,
            max,
        } => {
            let exists = match open_ro(txn, UPLOADS)? {
                Some(t) => t.get(upload_key(bucket, key, upload).as_slice())?.is_some(),
                None => false,
            };
            if !exists {
                return Ok(Err(MetaError::NoSuchUpload(upload.to_hex())));
            }
            let max = (*max).clamp(1, MAX_LIST_KEYS) as usize;
            let mut parts = Vec::new();
            let mut truncated = false;
            if let Some(t) = open_ro(txn, UPLOAD_PARTS)? {
                let start = part_key(upload, after.saturating_add(1));
                let end = part_key(upload, u32::MAX);
                for r in t.range::<&[u8]>(start.as_slice()..=end.as_slice())? {
                    if parts.len() >= max {
                        truncated = true;
                        break;
                    }
                    let (_, v) = r?;
                    let p: UploadPart = dec(v.value())?;
                    let mut info = p.info;
                    info.stripes = p.stripes.len() as u32;
                    parts.push((info, p.created_ms));
                }
            }
            Ok(Ok(QueryResult::Parts { parts, truncated }))
        }
        Query::GetBucketCors { bucket } => Ok(get_bucket_cors(txn, bucket)?),
        Query::GetBucketTagging { bucket } => Ok(get_bucket_tagging(txn, bucket)?),
        Query::GetBucketVersioning { bucket } => Ok(get_bucket_versioning(txn, bucket)?),
        Query::GetVersionPage {
            bucket,
            key,
            version,
            stripes,
        } => Ok(get_version_page(
            txn,
            bucket,
            key,
            version.as_ref(),
            *stripes,
        )?),
        Query::ListVersions(req) => Ok(list_versions(txn, req)?.map(QueryResult::Versions)),
        Query::GetObjectLockConfig { bucket } => Ok(get_object_lock_config(txn, bucket)?),
        Query::ListUploads {
            bucket,
            prefix,
            after,
            max,
        } => {
            if get_bucket(txn, bucket)?.is_none() {
                return Ok(Err(MetaError::NoSuchBucket(bucket.clone())));
            }
            let max = (*max).clamp(1, MAX_LIST_KEYS) as usize;
            let mut uploads = Vec::new();
            let mut truncated = false;
            if let Some(t) = open_ro(txn, UPLOADS)? {
                let start: Bound<Vec<u8>> = match after {
                    Some((k, Some(id))) => Bound::Excluded(upload_key(bucket, k, id)),
                    Some((k, None)) => {
                        // Past every upload of key k.
                        let mut b = object_key(bucket, k);
                        b.push(1);
                        Bound::Included(b)
                    }
                    None => Bound::Included(object_key(bucket, prefix)),
                };
                let mut end = object_key(bucket, prefix);
                end.push(0xff);
                let range = t.range::<&[u8]>((
                    match &start {
                        Bound::Included(k) => Bound::Included(k.as_slice()),
                        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
                        Bound::Unbounded => Bound::Unbounded,
                    },
                    Bound::Excluded(end.as_slice()),
                ))?;
                for r in range {
                    let (_, v) = r?;
                    let u: UploadInfo = dec(v.value())?;
                    if !u.key.starts_with(prefix.as_str()) {
                        continue;
                    }
                    if uploads.len() >= max {
                        truncated = true;
                        break;
                    }
                    uploads.push(u);
                }
            }
            Ok(Ok(QueryResult::Uploads { uploads, truncated }))
        }
        Query::Allocate {
            bucket,
            exclude,
            count,
            min,
            placed,
        } => {
            let Some(b) = get_bucket(txn, bucket)? else {
                return Ok(Err(MetaError::NoSuchBucket(bucket.clone())));
            };
            let n = count.unwrap_or(b.ec.total());
            let shard_bytes = u64::from(b.shard_size);
            let all = chunkservers(txn)?;
            let min = min.unwrap_or(n).min(n);
            Ok(place(&all, n, min, b.ec, shard_bytes, exclude, placed).map(QueryResult::Placement))
        }
        Query::AuditPlacement { cursor, stripes } => {
            let limit = stripes
                .unwrap_or(AUDIT_PAGE_STRIPES)
                .clamp(1, AUDIT_PAGE_STRIPES);
            audit_page(txn, cursor.as_deref(), limit)
        }
        // Issue 14 (security), in `audit_log`.
        Query::AuditLog { limit } => Ok(Ok(QueryResult::AuditLog(audit_log(txn, *limit)?))),
    }
}
