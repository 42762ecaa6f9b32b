//! Multipart uploads: create, parts (uploaded and copied), complete,
//! abort, list parts and uploads.

use super::*;

impl CairnS3 {
    pub(super) async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let owner = req
            .credentials
            .as_ref()
            .map(|c| c.access_key.clone())
            .unwrap_or_default();
        let i = req.input;
        check_key(&i.key)?;
        write_headers!(i);
        let opts = PutOptions {
            content_type: i.content_type,
            headers: std_headers(
                i.cache_control,
                i.content_disposition,
                i.content_encoding,
                i.content_language,
                i.expires,
            ),
            user_meta: user_meta(i.metadata),
            tags: tagging::header_tags(i.tagging.as_deref())?,
            ..Default::default()
        };
        let algo = announced(i.checksum_algorithm.as_ref());
        let ty = mpu_checksum::effective_type(
            algo.as_deref(),
            i.checksum_type.as_ref().map(|t| t.as_str()),
        )
        .map_err(|e| s3_error!(InvalidRequest, "{e}"))?;
        let u = self
            .client
            .create_upload(&i.bucket, &i.key, &opts, algo, ty, &owner)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(u.id.to_hex()),
            checksum_algorithm: i.checksum_algorithm,
            checksum_type: u.checksum_type.map(ChecksumType::from),
            ..Default::default()
        }))
    }

    pub(super) async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let trailer = req.trailing_headers.clone();
        let i = req.input;
        check_key(&i.key)?;
        let id = upload_id(&i.upload_id)?;
        if !(1..=10_000).contains(&i.part_number) {
            return Err(s3_error!(InvalidArgument, "part number must be 1 to 10000"));
        }
        if i.content_length
            .is_some_and(|l| l < 0 || l as u64 > MAX_PART_SIZE)
        {
            return Err(s3_error!(EntityTooLarge, "a part holds at most 5 GiB"));
        }
        let expected = header_checksums(
            i.checksum_crc32,
            i.checksum_crc32c,
            i.checksum_crc64nvme,
            i.checksum_sha1,
            i.checksum_sha256,
        );
        let body = i.body.unwrap_or_else(|| {
            StreamingBlob::wrap(futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>())
        });
        let (reader, verdict) = VerifyingReader::new(
            body,
            expected,
            announced(i.checksum_algorithm.as_ref()),
            i.content_md5,
            trailer,
        );
        let p = self
            .client
            .upload_part_verified(&i.bucket, &i.key, id, i.part_number as u32, reader, {
                let verdict = verdict.clone();
                move || {
                    verdict
                        .lock()
                        .map(|v| v.checksums.clone())
                        .unwrap_or_default()
                }
            })
            .await
            .map_err(|e| body_err(e, &verdict, &PutCondition::None))?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(etag(&p.etag)),
            checksum_crc32: p.checksums.get("crc32").cloned(),
            checksum_crc32c: p.checksums.get("crc32c").cloned(),
            checksum_crc64nvme: p.checksums.get("crc64nvme").cloned(),
            checksum_sha1: p.checksums.get("sha1").cloned(),
            checksum_sha256: p.checksums.get("sha256").cloned(),
            ..Default::default()
        }))
    }

    pub(super) async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let (sb, sk, sv) = parse_copy_source(&req.input.copy_source)?;
        self.check_source(&req, &sb).await?;
        let i = req.input;
        check_key(&i.key)?;
        let id = upload_id(&i.upload_id)?;
        if !(1..=10_000).contains(&i.part_number) {
            return Err(s3_error!(InvalidArgument, "part number must be 1 to 10000"));
        }
        let view = self.readable_version(&sb, &sk, sv.as_deref()).await?;
        let source_version = versions::version_header(&view);
        let src = view.manifest;
        check_source_conds(
            &src,
            SourceConds {
                if_match: i.copy_source_if_match.as_ref(),
                if_none_match: i.copy_source_if_none_match.as_ref(),
                if_modified_since: i.copy_source_if_modified_since.as_ref(),
                if_unmodified_since: i.copy_source_if_unmodified_since.as_ref(),
            },
        )?;
        let range = match &i.copy_source_range {
            Some(r) => Some(parse_copy_range(r, src.size)?),
            None => None,
        };
        let len = range.as_ref().map_or(src.size, |r| r.end - r.start);
        if len > MAX_PART_SIZE {
            return Err(s3_error!(EntityTooLarge, "a part holds at most 5 GiB"));
        }
        let p = self
            .client
            .upload_part_copy(
                &sb,
                &sk,
                &src,
                range,
                &i.bucket,
                &i.key,
                id,
                i.part_number as u32,
            )
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(etag(&p.etag)),
                last_modified: Some(ts(cairn_now_ms())),
                ..Default::default()
            }),
            copy_source_version_id: source_version,
            ..Default::default()
        }))
    }

    pub(super) async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let i = req.input;
        check_key(&i.key)?;
        let id = upload_id(&i.upload_id)?;
        let cond = condition(i.if_match.as_ref(), i.if_none_match.as_ref())?;
        let listed = i.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
        // Checksum values the client gives per part, to compare with the
        // stored ones.
        let given: Vec<BTreeMap<String, String>> = listed
            .iter()
            .map(|p| {
                header_checksums(
                    p.checksum_crc32.clone(),
                    p.checksum_crc32c.clone(),
                    p.checksum_crc64nvme.clone(),
                    p.checksum_sha1.clone(),
                    p.checksum_sha256.clone(),
                )
            })
            .collect();
        let parts: Vec<CompletePart> = listed
            .into_iter()
            .map(|p| {
                Ok(CompletePart {
                    number: p
                        .part_number
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| s3_error!(InvalidPart, "a part lacks its number"))?,
                    etag: p
                        .e_tag
                        .map(|e| e.value().to_string())
                        .ok_or_else(|| s3_error!(InvalidPart, "a part lacks its ETag"))?,
                })
            })
            .collect::<S3Result<_>>()?;
        if parts.is_empty() {
            return Err(s3_error!(MalformedXML, "no parts given"));
        }
        if parts.len() > 10_000 {
            return Err(s3_error!(InvalidArgument, "at most 10000 parts"));
        }
        let expected = header_checksums(
            i.checksum_crc32,
            i.checksum_crc32c,
            i.checksum_crc64nvme,
            i.checksum_sha1,
            i.checksum_sha256,
        );
        let checksums = self
            .whole_object_checksum(&i.bucket, &i.key, id, &parts, &given, &expected)
            .await?;
        let (m, stamp) = self
            .client
            .complete_upload_versioned(&i.bucket, &i.key, id, parts, checksums, cond.clone())
            .await
            .map_err(|e| write_err(e, &cond))?;
        let ck = |a: &str| checksum_of(&m, a);
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(i.bucket.clone()),
            key: Some(i.key.clone()),
            e_tag: Some(etag(&m.etag)),
            location: Some(format!("/{}/{}", i.bucket, i.key)),
            checksum_crc32: ck("crc32"),
            checksum_crc32c: ck("crc32c"),
            checksum_crc64nvme: ck("crc64nvme"),
            checksum_sha1: ck("sha1"),
            checksum_sha256: ck("sha256"),
            checksum_type: checksum_type_of(&m),
            version_id: versions::written_version(stamp),
            ..Default::default()
        }))
    }

    pub(super) async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let i = &req.input;
        let id = upload_id(&i.upload_id)?;
        self.client
            .abort_upload(&i.bucket, &i.key, id)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    pub(super) async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let i = req.input;
        let id = upload_id(&i.upload_id)?;
        let max = i.max_parts.unwrap_or(1000).clamp(1, 1000);
        let after = i.part_number_marker.unwrap_or(0).max(0) as u32;
        let page = self
            .client
            .list_parts(&i.bucket, &i.key, id, after, max as u32)
            .await
            .map_err(to_s3)?;
        let next = page.parts.last().map(|(p, _)| p.number as i32);
        let parts: Vec<Part> = page
            .parts
            .into_iter()
            .map(|(p, t)| Part {
                part_number: Some(p.number as i32),
                size: Some(p.size as i64),
                e_tag: Some(etag(&p.etag)),
                last_modified: Some(ts_ms(t)),
                checksum_crc32: p.checksums.get("crc32").cloned(),
                checksum_crc32c: p.checksums.get("crc32c").cloned(),
                checksum_crc64nvme: p.checksums.get("crc64nvme").cloned(),
                checksum_sha1: p.checksums.get("sha1").cloned(),
                checksum_sha256: p.checksums.get("sha256").cloned(),
            })
            .collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(i.upload_id),
            max_parts: Some(max),
            part_number_marker: i.part_number_marker,
            next_part_number_marker: next,
            is_truncated: Some(page.truncated),
            parts: Some(parts),
            ..Default::default()
        }))
    }

    pub(super) async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let i = req.input;
        let max = i.max_uploads.unwrap_or(1000).clamp(1, 1000);
        let after = match (&i.key_marker, &i.upload_id_marker) {
            (Some(k), Some(u)) if !k.is_empty() => Some((k.clone(), StripeId::from_str(u).ok())),
            (Some(k), None) if !k.is_empty() => Some((k.clone(), None)),
            _ => None,
        };
        let prefix = i.prefix.clone().unwrap_or_default();
        let (uploads, truncated) = self
            .client
            .list_uploads(&i.bucket, &prefix, after, max as u32)
            .await
            .map_err(to_s3)?;
        let next_key = uploads.last().map(|u| u.key.clone());
        let next_id = uploads.last().map(|u| u.id.to_hex());
        let list: Vec<MultipartUpload> = uploads
            .into_iter()
            .map(|u| MultipartUpload {
                key: Some(u.key),
                upload_id: Some(u.id.to_hex()),
                initiated: Some(ts_ms(u.initiated_ms)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(i.bucket),
            prefix: i.prefix,
            key_marker: i.key_marker,
            upload_id_marker: i.upload_id_marker,
            max_uploads: Some(max),
            is_truncated: Some(truncated),
            next_key_marker: if truncated { next_key } else { None },
            next_upload_id_marker: if truncated { next_id } else { None },
            uploads: Some(list),
            ..Default::default()
        }))
    }
}

/// Parses `bytes=a-b` (x-amz-copy-source-range) into a half-open range.
pub(super) fn parse_copy_range(s: &str, size: u64) -> S3Result<std::ops::Range<u64>> {
    let bad = || s3_error!(InvalidArgument, "invalid copy source range {s:?}");
    let r = s.strip_prefix("bytes=").ok_or_else(bad)?;
    let (a, b) = r.split_once('-').ok_or_else(bad)?;
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    if a > b || b >= size {
        return Err(s3_error!(
            InvalidRange,
            "copy source range {s} outside {size} bytes"
        ));
    }
    Ok(a..b + 1)
}
