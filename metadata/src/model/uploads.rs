//! Multipart uploads: parts and completion.

use super::*;

pub(super) fn part_key(upload: &StripeId, number: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(&upload.0);
    k[16..].copy_from_slice(&number.to_be_bytes());
    k
}

/// Removes every part of `upload`, returning them by number.
pub(super) fn take_parts(
    txn: &redb::WriteTransaction,
    upload: &StripeId,
) -> StoreResult<Vec<UploadPart>> {
    let t = txn.open_table(UPLOAD_PARTS)?;
    let start = part_key(upload, 0);
    let end = part_key(upload, u32::MAX);
    let mut keys = Vec::new();
    let mut parts = Vec::new();
    for r in t.range::<&[u8]>(start.as_slice()..=end.as_slice())? {
        let (k, v) = r?;
        keys.push(k.value().to_vec());
        parts.push(dec::<UploadPart>(v.value())?);
    }
    drop(t);
    let mut t = txn.open_table(UPLOAD_PARTS)?;
    for (k, p) in keys.into_iter().zip(&parts) {
        t.remove(k.as_slice())?;
        // Part rows are not counted: `k` unused.
        shard_index::remove(txn, &OwnerRow::Part(k), &p.stripes, 1)?;
    }
    Ok(parts)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn complete_upload(
    txn: &redb::WriteTransaction,
    now: u64,
    bucket: &str,
    key: &str,
    upload: &StripeId,
    wanted: &[CompletePart],
    min_part_size: u64,
    etag: &str,
    version: StripeId,
    checksums: &std::collections::BTreeMap<String, String>,
    now_ms: u64,
    condition: &PutCondition,
) -> StoreResult<Result<CommandResult, MetaError>> {
    let uk = upload_key(bucket, key, upload);
    let info: UploadInfo = match txn.open_table(UPLOADS)?.get(uk.as_slice())? {
        Some(v) => dec(v.value())?,
        None => return Ok(Err(MetaError::NoSuchUpload(upload.to_hex()))),
    };
    if wanted.is_empty() {
        return Ok(Err(MetaError::Invalid(
            "a multipart upload needs at least one part".into(),
        )));
    }
    // Validate everything before changing anything.
    let mut chosen: Vec<UploadPart> = Vec::with_capacity(wanted.len());
    {
        let t = txn.open_table(UPLOAD_PARTS)?;
        let mut prev = 0u32;
        for w in wanted {
            if w.number <= prev {
                return Ok(Err(MetaError::InvalidPartOrder(format!(
                    "part {} follows part {prev}",
                    w.number
                ))));
            }
            prev = w.number;
        }
        for (i, w) in wanted.iter().enumerate() {
            let part: UploadPart = match t.get(part_key(upload, w.number).as_slice())? {
                Some(v) => dec(v.value())?,
                None => {
                    return Ok(Err(MetaError::InvalidPart(format!(
                        "part {} was not uploaded",
                        w.number
                    ))))
                }
            };
            if w.etag.trim_matches('"') != part.info.etag {
                return Ok(Err(MetaError::InvalidPart(format!(
                    "part {} has ETag {}, not {}",
                    w.number,
                    part.info.etag,
                    w.etag.trim_matches('"')
                ))));
            }
            if i + 1 < wanted.len() && part.info.size < min_part_size {
                return Ok(Err(MetaError::EntityTooSmall(format!(
                    "part {} is {} bytes; every part but the last needs {min_part_size}",
                    w.number, part.info.size
                ))));
            }
            chosen.push(part);
        }
    }
    let ok = object_key(bucket, key);
    let cur = get_head(&txn.open_table(OBJECTS)?, &ok)?;
    if let Err(e) = check_condition(condition, cur.as_ref().map(|h| &h.manifest), bucket, key) {
        return Ok(Err(e));
    }
    let size: u64 = chosen.iter().map(|p| p.info.size).sum();
    if size > MAX_OBJECT_SIZE {
        return Ok(Err(MetaError::EntityTooLarge(format!(
            "the parts hold {size} bytes; an object holds at most {MAX_OBJECT_SIZE}"
        ))));
    }
    // Each part's stripes met the full invariant when the part was
    // accepted. Two shards on one chunkserver can only come from an older
    // binary and are refused; a zone cap exceeded because zones were added
    // since the part was written is accepted (refusing would fail an
    // upload the user cannot repair): the mover restores it.
    let rules = PlacementRules::load(txn)?;
    for p in &chosen {
        let what = format!("{bucket}/{key} part {}", p.info.number);
        if let Err(e) = rules.refuse_write(info.ec, &p.stripes, false, &what) {
            return Ok(Err(e));
        }
    }
    let mut stripes = Vec::new();
    let mut part_infos = Vec::with_capacity(chosen.len());
    for p in &chosen {
        let mut info = p.info.clone();
        info.stripes = p.stripes.len() as u32;
        part_infos.push(info);
        stripes.extend(p.stripes.iter().cloned());
    }
    let manifest = ObjectManifest {
        version,
        size,
        etag: etag.to_string(),
        content_type: info.content_type.clone(),
        headers: info.headers.clone(),
        user_meta: info.user_meta.clone(),
        checksums: checksums.clone(),
        created_ms: now_ms,
        ec: info.ec,
        shard_size: info.shard_size,
        stripes,
        parts: part_infos,
        inline: None,
        tags: info.tags.clone(),
    };
    // `install` refuses before it changes anything; the upload stays.
    let result = match install(txn, now, bucket, key, &ok, cur, &manifest)? {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    // The order of index changes does not matter (see `shard_index`): the
    // parts' rows are dropped only where the parts still own them.
    txn.open_table(UPLOADS)?.remove(uk.as_slice())?;
    let all = take_parts(txn, upload)?;
    // The parts' index rows went with the parts; the shards the object
    // does not keep (parts not chosen) are garbage.
    let keep: HashSet<ShardId> = manifest.placed_shards().map(|(_, s)| s).collect();
    let garbage: Vec<(ChunkserverId, ShardId)> = all
        .iter()
        .flat_map(|p| placed_in(&p.stripes))
        .filter(|(_, s)| !keep.contains(s))
        .collect();
    queue_gc(txn, now, garbage.into_iter())?;
    Ok(Ok(result))
}
