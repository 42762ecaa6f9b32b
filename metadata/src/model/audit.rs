//! The placement audit (`Query::AuditPlacement`), one page at a time.

use super::*;

pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(super) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// One page of `Query::AuditPlacement`. The cursor is `o` and the hex of
/// the last object key walked, `v` and the hex of the last noncurrent
/// version key, `p` and the hex of the last upload-part key, or `i` and the
/// hex of the last reverse-index key (`i` alone: its start): current
/// versions first, then noncurrent ones, then uploaded parts, each in key
/// order, then the index.
pub(super) fn audit_page(
    txn: &redb::ReadTransaction,
    cursor: Option<&str>,
    limit: u64,
) -> StoreResult<Result<QueryResult, MetaError>> {
    let bad_cursor = || {
        Ok(Err(MetaError::Invalid(format!(
            "bad audit cursor {:?}",
            cursor.unwrap_or("")
        ))))
    };
    // Phase 0: current versions, 1: noncurrent versions, 2: parts.
    let (phase, after) = match cursor {
        None => (0u8, None),
        Some(c) => {
            let (tag, rest) = c.split_at(c.len().min(1));
            let Some(bytes) = unhex(rest) else {
                return bad_cursor();
            };
            match tag {
                "o" => (0, Some(bytes)),
                "v" => (1, Some(bytes)),
                "p" => (2, Some(bytes)),
                "i" => {
                    return audit_index_page(txn, Some(bytes), limit);
                }
                _ => return bad_cursor(),
            }
        }
    };
    let rules = PlacementRules::new(&chunkservers(txn)?);
    let mut page = AuditPage::default();
    let push = |page: &mut AuditPage,
                bucket: &str,
                key: &str,
                upload: Option<(StripeId, u32)>,
                row: OwnerRow,
                version: StripeId,
                ec: EcParams,
                stripes: &[StripeManifest]|
     -> StoreResult<()> {
        let cap = rules.cap(ec);
        for (si, s) in stripes.iter().enumerate() {
            let mut found = rules.check(ec, &s.shards);
            for (idx, l) in s.shards.iter().enumerate() {
                let Some(cs) = l.chunkserver else { continue };
                let want = shard_index::Owner {
                    row: row.clone(),
                    version,
                    stripe: si as u64,
                    index: idx as u8,
                };
                if shard_index::owner(txn, cs, &l.shard)?.as_ref() != Some(&want) {
                    found.push(StripeViolation {
                        kind: ViolationKind::Index,
                        chunkserver: Some(cs),
                        zone: None,
                        indexes: vec![idx as u8],
                    });
                }
            }
            for v in found {
                page.violations.push(PlacementViolation {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    upload: upload.map(|u| u.0),
                    part: upload.map(|u| u.1),
                    stripe: si as u64,
                    kind: v.kind,
                    chunkserver: v.chunkserver,
                    zone: v.zone.clone(),
                    indexes: v.indexes.clone(),
                    detail: v.describe(cap),
                });
            }
        }
        page.manifests += 1;
        page.stripes += stripes.len() as u64;
        Ok(())
    };
    if phase == 0 {
        let lower = match &after {
            Some(a) => Bound::Excluded(a.as_slice()),
            None => Bound::Unbounded,
        };
        if let (Some(t), Some(st)) = (open_ro(txn, OBJECTS)?, open_ro(txn, OBJECT_STRIPES)?) {
            for r in t.range::<&[u8]>((lower, Bound::Unbounded))? {
                let (k, _) = r?;
                let raw = k.value();
                let Some(m) = get_object(&t, &st, raw)? else {
                    continue;
                };
                let (bucket, key) = match raw.iter().position(|b| *b == 0) {
                    Some(p) => (
                        String::from_utf8_lossy(&raw[..p]).into_owned(),
                        String::from_utf8_lossy(&raw[p + 1..]).into_owned(),
                    ),
                    None => (String::from_utf8_lossy(raw).into_owned(), String::new()),
                };
                let row = OwnerRow::Object(raw.to_vec());
                push(
                    &mut page, &bucket, &key, None, row, m.version, m.ec, &m.stripes,
                )?;
                if page.stripes >= limit {
                    page.next = Some(format!("o{}", hex(raw)));
                    return Ok(Ok(QueryResult::Audit(page)));
                }
            }
        }
    }
    if phase <= 1 {
        let lower = match (phase, &after) {
            (1, Some(a)) => Bound::Excluded(a.as_slice()),
            _ => Bound::Unbounded,
        };
        if let (Some(t), Some(st)) = (
            open_ro(txn, OBJECT_VERSIONS)?,
            open_ro(txn, OBJECT_STRIPES)?,
        ) {
            for r in t.range::<&[u8]>((lower, Bound::Unbounded))? {
                let (k, v) = r?;
                let raw = k.value();
                let head = decode_head(v.value())?;
                let Some(object) = raw.get(..raw.len().saturating_sub(9)) else {
                    continue;
                };
                if !head.meta.delete_marker {
                    let stripes = all_stripes(&st, object, &head)?;
                    let (bucket, key) = match object.iter().position(|b| *b == 0) {
                        Some(p) => (
                            String::from_utf8_lossy(&object[..p]).into_owned(),
                            String::from_utf8_lossy(&object[p + 1..]).into_owned(),
                        ),
                        None => (String::from_utf8_lossy(object).into_owned(), String::new()),
                    };
                    let m = &head.manifest;
                    push(
                        &mut page,
                        &bucket,
                        &key,
                        None,
                        OwnerRow::Object(object.to_vec()),
                        m.version,
                        m.ec,
                        &stripes,
                    )?;
                }
                if page.stripes >= limit {
                    page.next = Some(format!("v{}", hex(raw)));
                    return Ok(Ok(QueryResult::Audit(page)));
                }
            }
        }
    }
    // Parts: the upload row gives the bucket, the key and the EC.
    let mut uploads: HashMap<StripeId, UploadInfo> = HashMap::new();
    if let Some(t) = open_ro(txn, UPLOADS)? {
        for r in t.iter()? {
            let (_, v) = r?;
            let u: UploadInfo = dec(v.value())?;
            uploads.insert(u.id, u);
        }
    }
    let lower = match (phase, &after) {
        (2, Some(a)) => Bound::Excluded(a.as_slice()),
        _ => Bound::Unbounded,
    };
    if let Some(t) = open_ro(txn, UPLOAD_PARTS)? {
        for r in t.range::<&[u8]>((lower, Bound::Unbounded))? {
            let (k, v) = r?;
            let p: UploadPart = dec(v.value())?;
            let raw = k.value();
            let mut id = [0u8; 16];
            if let Some(b) = raw.get(..16) {
                id.copy_from_slice(b);
            }
            let id = StripeId(id);
            let Some(u) = uploads.get(&id) else { continue };
            push(
                &mut page,
                &u.bucket,
                &u.key,
                Some((id, p.info.number)),
                OwnerRow::Part(raw.to_vec()),
                id,
                u.ec,
                &p.stripes,
            )?;
            if page.stripes >= limit {
                page.next = Some(format!("p{}", hex(raw)));
                return Ok(Ok(QueryResult::Audit(page)));
            }
        }
    }
    // Then the reverse index itself, from its start, with what is left of
    // the page.
    let rest = limit.saturating_sub(page.stripes);
    if rest == 0 {
        page.next = Some("i".to_string());
        return Ok(Ok(QueryResult::Audit(page)));
    }
    if let Ok(QueryResult::Audit(tail)) = audit_index_page(txn, None, rest)? {
        page.violations.extend(tail.violations);
        page.next = tail.next;
    }
    Ok(Ok(QueryResult::Audit(page)))
}

/// The last phase of the audit: every reverse-index row after `after` must
/// be placed, by the row it names, at its stripe and index. Rows count
/// towards `limit` like stripes.
pub(super) fn audit_index_page(
    txn: &redb::ReadTransaction,
    after: Option<Vec<u8>>,
    limit: u64,
) -> StoreResult<Result<QueryResult, MetaError>> {
    let mut page = AuditPage::default();
    let Some(t) = open_ro(txn, shard_index::SHARD_OWNERS)? else {
        return Ok(Ok(QueryResult::Audit(page)));
    };
    let stripe_rows = open_ro(txn, OBJECT_STRIPES)?;
    let parts = open_ro(txn, UPLOAD_PARTS)?;
    let lower = match &after {
        Some(a) if !a.is_empty() => Bound::Excluded(a.as_slice()),
        _ => Bound::Unbounded,
    };
    // Decoded part rows, so a part's many shards decode it once per page.
    let mut cache: HashMap<Vec<u8>, Option<Vec<StripeManifest>>> = HashMap::new();
    let mut rows = 0u64;
    for r in t.range::<&[u8]>((lower, Bound::Unbounded))? {
        let (k, v) = r?;
        let raw = k.value();
        let Some((cs, shard)) = split_cs_shard(raw) else {
            return Err(redb::Error::Corrupted(
                "shard index key of bad length".into(),
            ));
        };
        let owner = shard_index::decode(v.value())?;
        let (row_key, is_part) = match &owner.row {
            shard_index::OwnerRow::Object(k) => (k, false),
            shard_index::OwnerRow::Part(k) => (k, true),
        };
        // An object's shard is checked against its one stripe row (stripe
        // rows exist for every stored version); a part's row holds all of
        // the part's stripes (at most 5 GiB of them), decoded once per page.
        let stripe = if is_part {
            if cache.len() > 4096 {
                cache.clear();
            }
            if !cache.contains_key(row_key) {
                let stripes = match &parts {
                    Some(t) => match t.get(row_key.as_slice())? {
                        Some(v) => Some(dec::<UploadPart>(v.value())?.stripes),
                        None => None,
                    },
                    None => None,
                };
                cache.insert(row_key.clone(), stripes);
            }
            cache
                .get(row_key)
                .and_then(|s| s.as_ref())
                .and_then(|s| usize::try_from(owner.stripe).ok().and_then(|i| s.get(i)))
                .cloned()
        } else {
            match &stripe_rows {
                Some(t) => get_stripe(t, row_key, &owner.version, owner.stripe)?,
                None => None,
            }
        };
        let placed = stripe
            .as_ref()
            .and_then(|s| s.shards.get(usize::from(owner.index)))
            .is_some_and(|l| l.shard == shard && l.chunkserver == Some(cs));
        if !placed {
            let (bucket, key) = if is_part {
                (String::new(), String::new())
            } else {
                match row_key.iter().position(|b| *b == 0) {
                    Some(p) => (
                        String::from_utf8_lossy(&row_key[..p]).into_owned(),
                        String::from_utf8_lossy(&row_key[p + 1..]).into_owned(),
                    ),
                    None => (String::from_utf8_lossy(row_key).into_owned(), String::new()),
                }
            };
            page.violations.push(PlacementViolation {
                bucket,
                key,
                upload: is_part.then_some(owner.version),
                part: None,
                stripe: owner.stripe,
                kind: ViolationKind::Index,
                chunkserver: Some(cs),
                zone: None,
                indexes: vec![owner.index],
                detail: format!(
                    "the reverse shard index places shard {} on chunkserver {cs}, but its row does not",
                    shard.to_hex()
                ),
            });
        }
        rows += 1;
        if rows >= limit {
            page.next = Some(format!("i{}", hex(raw)));
            return Ok(Ok(QueryResult::Audit(page)));
        }
    }
    Ok(Ok(QueryResult::Audit(page)))
}
