//! GetObjectAttributes: ETag, Checksum, ObjectParts (paginated),
//! StorageClass and ObjectSize of an object, from its manifest alone.

use cairn_metadata::types::PartInfo;

use super::*;

/// S3's default and largest `max-parts`.
const MAX_PARTS: i32 = 1000;

/// The `ObjectParts` element of a multipart object, or `None` for a
/// single-part one (S3 omits it). The part list itself is returned only
/// when the object has an additional checksum, as S3 does for general
/// purpose buckets; `PartsCount` always.
pub(super) fn object_parts(
    m: &ObjectManifest,
    marker: Option<i32>,
    max: Option<i32>,
) -> S3Result<Option<GetObjectAttributesParts>> {
    if m.parts.is_empty() {
        return Ok(None);
    }
    let total = m.parts.len() as i32;
    if checksum_type_of(m).is_none() {
        return Ok(Some(GetObjectAttributesParts {
            total_parts_count: Some(total),
            ..Default::default()
        }));
    }
    let max = max.unwrap_or(MAX_PARTS);
    if max < 0 {
        return Err(s3_error!(
            InvalidArgument,
            "max-parts must be a non-negative integer"
        ));
    }
    let max = max.min(MAX_PARTS);
    let after = marker.unwrap_or(0);
    if after < 0 {
        return Err(s3_error!(
            InvalidArgument,
            "part-number-marker must be a non-negative integer"
        ));
    }
    let mut rest = m.parts.iter().filter(|p| p.number as i32 > after);
    let page: Vec<&PartInfo> = rest.by_ref().take(max as usize).collect();
    let truncated = rest.next().is_some();
    let parts = page
        .iter()
        .map(|p| ObjectPart {
            part_number: Some(p.number as i32),
            size: Some(p.size as i64),
            checksum_crc32: p.checksums.get("crc32").cloned(),
            checksum_crc32c: p.checksums.get("crc32c").cloned(),
            checksum_crc64nvme: p.checksums.get("crc64nvme").cloned(),
            checksum_sha1: p.checksums.get("sha1").cloned(),
            checksum_sha256: p.checksums.get("sha256").cloned(),
        })
        .collect();
    Ok(Some(GetObjectAttributesParts {
        total_parts_count: Some(total),
        part_number_marker: Some(after),
        next_part_number_marker: page.last().map(|p| p.number as i32),
        max_parts: Some(max),
        is_truncated: Some(truncated),
        parts: Some(parts),
    }))
}

impl CairnS3 {
    pub(super) async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        let i = req.input;
        check_key(&i.key)?;
        let mut want = std::collections::BTreeSet::new();
        // s3s hands over the header's value whole: it is comma-separated.
        let names = i
            .object_attributes
            .iter()
            .flat_map(|a| a.as_str().split(','))
            .map(str::trim)
            .filter(|a| !a.is_empty());
        for a in names {
            match a {
                ObjectAttributes::CHECKSUM
                | ObjectAttributes::ETAG
                | ObjectAttributes::OBJECT_PARTS
                | ObjectAttributes::OBJECT_SIZE
                | ObjectAttributes::STORAGE_CLASS => {
                    want.insert(a.to_string());
                }
                other => {
                    return Err(s3_error!(
                        InvalidArgument,
                        "Invalid attribute name specified: {other}"
                    ))
                }
            }
        }
        if want.is_empty() {
            return Err(s3_error!(
                InvalidArgument,
                "x-amz-object-attributes names no attribute"
            ));
        }
        let view = self
            .readable_version(&i.bucket, &i.key, i.version_id.as_deref())
            .await?;
        let version_id = versions::version_header(&view);
        let m = view.manifest;
        let has = |a: &str| want.contains(a);
        let checksum = match checksum_type_of(&m) {
            Some(ty) if has(ObjectAttributes::CHECKSUM) => Some(Checksum {
                checksum_crc32: checksum_of(&m, "crc32"),
                checksum_crc32c: checksum_of(&m, "crc32c"),
                checksum_crc64nvme: checksum_of(&m, "crc64nvme"),
                checksum_sha1: checksum_of(&m, "sha1"),
                checksum_sha256: checksum_of(&m, "sha256"),
                checksum_type: Some(ty),
            }),
            _ => None,
        };
        let object_parts = if has(ObjectAttributes::OBJECT_PARTS) {
            object_parts(&m, i.part_number_marker, i.max_parts)?
        } else {
            None
        };
        Ok(S3Response::new(GetObjectAttributesOutput {
            checksum,
            e_tag: has(ObjectAttributes::ETAG).then(|| etag(&m.etag)),
            last_modified: Some(ts(m.created_ms)),
            object_parts,
            object_size: has(ObjectAttributes::OBJECT_SIZE).then_some(m.size as i64),
            storage_class: has(ObjectAttributes::STORAGE_CLASS)
                .then(|| StorageClass::from_static(StorageClass::STANDARD)),
            version_id,
            ..Default::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_metadata::types::{EcParams, StripeId};

    fn multipart(parts: u32, checksum: bool) -> ObjectManifest {
        let ck = |v: &str| {
            if checksum {
                BTreeMap::from([("crc32".to_string(), v.to_string())])
            } else {
                BTreeMap::new()
            }
        };
        let mut checksums = ck("AAAA-3");
        if checksum {
            checksums.insert(mpu_checksum::TYPE_KEY.into(), "COMPOSITE".into());
        }
        ObjectManifest {
            version: StripeId([1; 16]),
            size: 30,
            etag: "e-3".into(),
            content_type: None,
            headers: BTreeMap::new(),
            user_meta: BTreeMap::new(),
            checksums,
            created_ms: 0,
            ec: EcParams { k: 1, m: 1 },
            shard_size: 4,
            stripes: Vec::new(),
            parts: (1..=parts)
                .map(|n| PartInfo {
                    number: n,
                    size: 10,
                    etag: format!("p{n}"),
                    checksums: ck(&format!("C{n}==")),
                    stripes: 1,
                })
                .collect(),
            inline: None,
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn object_parts_paginate_and_need_a_checksum_for_the_list() {
        let m = multipart(3, true);
        let p = object_parts(&m, None, Some(2)).ok().flatten();
        let p = p.as_ref();
        assert_eq!(p.and_then(|p| p.total_parts_count), Some(3));
        assert_eq!(p.and_then(|p| p.is_truncated), Some(true));
        assert_eq!(p.and_then(|p| p.next_part_number_marker), Some(2));
        assert_eq!(p.and_then(|p| p.max_parts), Some(2));
        let nums: Vec<_> = p
            .and_then(|p| p.parts.as_ref())
            .map(|l| l.iter().filter_map(|x| x.part_number).collect())
            .unwrap_or_default();
        assert_eq!(nums, vec![1, 2]);
        let p = object_parts(&m, Some(2), None).ok().flatten();
        assert_eq!(p.as_ref().and_then(|p| p.is_truncated), Some(false));
        let part3 = p.and_then(|p| p.parts).and_then(|l| l.into_iter().next());
        assert_eq!(part3.as_ref().and_then(|x| x.part_number), Some(3));
        assert_eq!(part3.and_then(|x| x.checksum_crc32), Some("C3==".into()));
        // Without an additional checksum only PartsCount.
        let p = object_parts(&multipart(3, false), None, None)
            .ok()
            .flatten();
        assert_eq!(p.as_ref().and_then(|p| p.total_parts_count), Some(3));
        assert!(p.is_some_and(|p| p.parts.is_none() && p.is_truncated.is_none()));
        // A single-part object has no ObjectParts.
        assert!(matches!(
            object_parts(&multipart(0, true), None, None),
            Ok(None)
        ));
        assert!(object_parts(&m, Some(-1), None).is_err());
    }
}
