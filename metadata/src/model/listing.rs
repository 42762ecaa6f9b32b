//! Object listing with S3 ListObjectsV2 semantics.

use super::*;

/// Continuation tokens say whether the last item of a page was a key or a
/// common prefix, so the next page skips exactly what was already returned.
pub(super) fn encode_token(is_prefix: bool, s: &str) -> String {
    let mut raw = Vec::with_capacity(s.len() + 1);
    raw.push(if is_prefix { b'P' } else { b'K' });
    raw.extend_from_slice(s.as_bytes());
    hex::encode(raw)
}

pub(super) fn decode_token(t: &str) -> Result<(bool, String), MetaError> {
    let bad = || MetaError::Invalid("invalid continuation token".into());
    let raw = hex::decode(t).map_err(|_| bad())?;
    let (first, rest) = raw.split_first().ok_or_else(bad)?;
    let s = String::from_utf8(rest.to_vec()).map_err(|_| bad())?;
    match first {
        b'P' => Ok((true, s)),
        b'K' => Ok((false, s)),
        _ => Err(bad()),
    }
}

/// Lists one page with S3 ListObjectsV2 semantics, by range scans only:
/// keys rolled up into a common prefix are skipped by seeking past the
/// prefix, so a page costs O(page) reads, not O(bucket).
pub fn list_objects(
    txn: &redb::ReadTransaction,
    req: &ListRequest,
) -> StoreResult<Result<ListPage, MetaError>> {
    let max = req.max_keys.min(MAX_LIST_KEYS) as usize;
    let mut page = ListPage::default();
    let Some(t) = open_ro(txn, OBJECTS)? else {
        return Ok(Ok(page));
    };
    let delimiter = req.delimiter.as_deref().filter(|d| !d.is_empty());
    let bucket_prefix = object_key(&req.bucket, "");
    let full = |s: &str| {
        let mut k = bucket_prefix.clone();
        k.extend_from_slice(s.as_bytes());
        k
    };
    // 0xFF never occurs in UTF-8, so prefix ++ 0xFF sorts after every key
    // that starts with prefix.
    let past = |s: &str| {
        let mut k = full(s);
        k.push(0xff);
        k
    };
    let mut start: Bound<Vec<u8>> = Bound::Included(full(&req.prefix));
    let after = match &req.continuation {
        Some(tok) => match decode_token(tok) {
            Ok(v) => Some(v),
            Err(e) => return Ok(Err(e)),
        },
        None => req.start_after.clone().map(|s| (false, s)),
    };
    if let Some((is_prefix, s)) = after {
        let candidate = if is_prefix {
            Bound::Included(past(&s))
        } else {
            Bound::Excluded(full(&s))
        };
        let candidate_key = match &candidate {
            Bound::Included(k) | Bound::Excluded(k) => k.clone(),
            Bound::Unbounded => Vec::new(),
        };
        if candidate_key >= full(&req.prefix) {
            start = candidate;
        }
    }
    if max == 0 {
        return Ok(Ok(page));
    }
    let end: Vec<u8> = past(&req.prefix);
    let mut last: Option<(bool, String)> = None;
    'outer: loop {
        let range = t.range::<&[u8]>((
            match &start {
                Bound::Included(k) => Bound::Included(k.as_slice()),
                Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
                Bound::Unbounded => Bound::Unbounded,
            },
            Bound::Excluded(end.as_slice()),
        ))?;
        for r in range {
            let (k, v) = r?;
            let kb = k.value();
            let Some(key_bytes) = kb.strip_prefix(bucket_prefix.as_slice()) else {
                break 'outer;
            };
            let Ok(key) = std::str::from_utf8(key_bytes) else {
                continue;
            };
            if !key.starts_with(&req.prefix) {
                break 'outer;
            }
            if page.entries.len() + page.common_prefixes.len() >= max {
                page.truncated = true;
                break 'outer;
            }
            if let Some(d) = delimiter {
                if let Some(pos) = key[req.prefix.len()..].find(d) {
                    let cp = key[..req.prefix.len() + pos + d.len()].to_string();
                    start = Bound::Included(past(&cp));
                    page.common_prefixes.push(cp.clone());
                    last = Some((true, cp));
                    continue 'outer;
                }
            }
            let m = decode_head(v.value())?.manifest;
            page.entries.push(ListEntry {
                key: key.to_string(),
                size: m.size,
                etag: m.etag,
                created_ms: m.created_ms,
            });
            last = Some((false, key.to_string()));
        }
        break;
    }
    if page.truncated {
        page.next_continuation = last.map(|(p, s)| encode_token(p, &s));
    }
    Ok(Ok(page))
}
