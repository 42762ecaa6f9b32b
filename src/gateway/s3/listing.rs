//! ListObjectsV2 and ListObjects (v1).

use super::*;

impl CairnS3 {
    pub(super) async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let i = req.input;
        let max_keys = i.max_keys.unwrap_or(1000).clamp(0, 1000);
        let page = self
            .client
            .list(ListRequest {
                bucket: i.bucket.clone(),
                prefix: i.prefix.clone().unwrap_or_default(),
                delimiter: i.delimiter.clone(),
                start_after: i.start_after.clone(),
                continuation: i.continuation_token.clone(),
                max_keys: max_keys as u32,
            })
            .await
            .map_err(|e| match e {
                ClientError::Invalid(m) => s3_error!(InvalidArgument, "{m}"),
                e => to_s3(e),
            })?;
        let url = i
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL);
        let enc = |s: String| if url { url_encode(&s) } else { s };
        let owner = if i.fetch_owner.unwrap_or(false) {
            let b = self.client.bucket(&i.bucket).await.map_err(to_s3)?;
            Some(Owner {
                id: Some(b.owner.clone()),
                display_name: Some(b.owner),
            })
        } else {
            None
        };
        let key_count = (page.entries.len() + page.common_prefixes.len()) as i32;
        let contents: Vec<Object> = page
            .entries
            .into_iter()
            .map(|e| Object {
                key: Some(enc(e.key)),
                size: Some(e.size as i64),
                e_tag: Some(etag(&e.etag)),
                last_modified: Some(ts_ms(e.created_ms)),
                owner: owner.clone(),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                ..Default::default()
            })
            .collect();
        let prefixes: Vec<CommonPrefix> = page
            .common_prefixes
            .into_iter()
            .map(|p| CommonPrefix {
                prefix: Some(enc(p)),
            })
            .collect();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket),
            prefix: Some(enc(i.prefix.unwrap_or_default())),
            delimiter: i.delimiter.map(enc),
            start_after: i.start_after.map(enc),
            max_keys: Some(max_keys),
            key_count: Some(key_count),
            continuation_token: i.continuation_token,
            is_truncated: Some(page.truncated),
            next_continuation_token: page.next_continuation,
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    pub(super) async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let i = req.input;
        let max_keys = i.max_keys.unwrap_or(1000).clamp(0, 1000);
        // A marker that is a common prefix must skip every key under it:
        // U+10FFFF sorts after any character that can follow it.
        let start_after = i
            .marker
            .clone()
            .filter(|m| !m.is_empty())
            .map(|m| match &i.delimiter {
                Some(d) if !d.is_empty() && m.ends_with(d.as_str()) => format!("{m}\u{10FFFF}"),
                _ => m,
            });
        let page = self
            .client
            .list(ListRequest {
                bucket: i.bucket.clone(),
                prefix: i.prefix.clone().unwrap_or_default(),
                delimiter: i.delimiter.clone(),
                start_after,
                continuation: None,
                max_keys: max_keys as u32,
            })
            .await
            .map_err(to_s3)?;
        let url = i
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL);
        let enc = |s: String| if url { url_encode(&s) } else { s };
        let last_key = page.entries.last().map(|e| e.key.clone());
        let last_prefix = page.common_prefixes.last().cloned();
        let next_marker = if page.truncated {
            match (last_key, last_prefix) {
                (Some(k), Some(p)) => Some(if k > p { k } else { p }),
                (Some(k), None) => Some(k),
                (None, p) => p,
            }
        } else {
            None
        };
        let contents: Vec<Object> = page
            .entries
            .into_iter()
            .map(|e| Object {
                key: Some(enc(e.key)),
                size: Some(e.size as i64),
                e_tag: Some(etag(&e.etag)),
                last_modified: Some(ts_ms(e.created_ms)),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                ..Default::default()
            })
            .collect();
        let prefixes: Vec<CommonPrefix> = page
            .common_prefixes
            .into_iter()
            .map(|p| CommonPrefix {
                prefix: Some(enc(p)),
            })
            .collect();
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(i.bucket),
            prefix: Some(enc(i.prefix.unwrap_or_default())),
            marker: i.marker.map(enc),
            delimiter: i.delimiter.map(enc),
            max_keys: Some(max_keys),
            is_truncated: Some(page.truncated),
            next_marker: next_marker.map(enc),
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }
}

/// Percent-encodes for `encoding-type=url` listings (S3 encodes everything
/// but unreserved characters and '/').
pub(super) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
