//! Object operations: put, get, head, delete (one and many), copy.

use super::*;

impl CairnS3 {
    pub(super) async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let trailer = req.trailing_headers.clone();
        let i = req.input;
        check_key(&i.key)?;
        write_headers!(i);
        if i.content_length
            .is_some_and(|l| l < 0 || l as u64 > MAX_PUT_SIZE)
        {
            return Err(s3_error!(
                EntityTooLarge,
                "a single PUT holds at most 5 GiB; use a multipart upload"
            ));
        }
        let cond = condition(i.if_match.as_ref(), i.if_none_match.as_ref())?;
        let tags = tagging::header_tags(i.tagging.as_deref())?;
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
            checksums: BTreeMap::new(),
            condition: cond.clone(),
            tags,
            md5: true,
        };
        // The checksums are only known at the end of the body: the reader
        // computes them; they are stored through the verdict below.
        let (m, stamp) = self
            .client
            .put_verified_versioned(&i.bucket, &i.key, reader, opts, {
                let verdict = verdict.clone();
                move || {
                    verdict
                        .lock()
                        .map(|v| v.checksums.clone())
                        .unwrap_or_default()
                }
            })
            .await
            .map_err(|e| body_err(e, &verdict, &cond))?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&m.etag)),
            checksum_crc32: checksum_of(&m, "crc32"),
            checksum_crc32c: checksum_of(&m, "crc32c"),
            checksum_crc64nvme: checksum_of(&m, "crc64nvme"),
            checksum_sha1: checksum_of(&m, "sha1"),
            checksum_sha256: checksum_of(&m, "sha256"),
            size: Some(m.size as i64),
            version_id: versions::written_version(stamp),
            ..Default::default()
        }))
    }

    pub(super) async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let i = &req.input;
        check_key(&i.key)?;
        let view = self
            .readable_version(&i.bucket, &i.key, i.version_id.as_deref())
            .await?;
        let version_id = versions::version_header(&view);
        let (lock_mode, lock_until, lock_hold) = object_lock::lock_headers(&view);
        let m = view.manifest;
        let lm = ts(m.created_ms);
        if let Some(c) = &i.if_match {
            if !etag_matches(c, &m.etag) {
                return Err(s3_error!(PreconditionFailed, "ETag is {}", m.etag));
            }
        } else if let Some(t) = &i.if_unmodified_since {
            if lm > *t {
                return Err(s3_error!(PreconditionFailed, "modified since {t:?}"));
            }
        }
        if let Some(c) = &i.if_none_match {
            if etag_matches(c, &m.etag) {
                return Err(s3_error!(NotModified));
            }
        } else if let Some(t) = &i.if_modified_since {
            if lm <= *t {
                return Err(s3_error!(NotModified));
            }
        }
        let range = requested_range(i.range.as_ref(), i.part_number, &m)?;
        // The first stripe the range needs is read and verified before the
        // status line goes out: an object that cannot be read is answered
        // 503 ServiceUnavailable (S3 SDKs retry it), never 200 and a cut
        // body. A later stripe failing mid-body can only abort the
        // connection (the body stream's error makes hyper close it without
        // completing the announced Content-Length), as S3 does.
        let stream = self
            .client
            .open_manifest(&i.bucket, &i.key, &m, range.clone())
            .await
            .map_err(to_s3)?;
        let (len, content_range) = match &range {
            Some(r) => (
                r.end - r.start,
                Some(format!(
                    "bytes {}-{}/{}",
                    r.start,
                    r.end.saturating_sub(1),
                    m.size
                )),
            ),
            None => (m.size, None),
        };
        let with_checksums = i
            .checksum_mode
            .as_ref()
            .is_some_and(|c| c.as_str() == ChecksumMode::ENABLED)
            && range.is_none();
        let ck = |a: &str| {
            if with_checksums {
                checksum_of(&m, a)
            } else {
                None
            }
        };
        let out = GetObjectOutput {
            checksum_type: with_checksums.then(|| checksum_type_of(&m)).flatten(),
            body: Some(StreamingBlob::wrap(SyncStream::new(stream))),
            accept_ranges: Some("bytes".into()),
            content_length: Some(len as i64),
            content_range,
            content_type: m.content_type.clone(),
            cache_control: m.headers.get("cache-control").cloned(),
            content_disposition: m.headers.get("content-disposition").cloned(),
            content_encoding: m.headers.get("content-encoding").cloned(),
            content_language: m.headers.get("content-language").cloned(),
            expires: expires_of(&m),
            e_tag: Some(etag(&m.etag)),
            last_modified: Some(lm),
            metadata: metadata_of(&m),
            parts_count: (!m.parts.is_empty()).then_some(m.parts.len() as i32),
            tag_count: (!m.tags.is_empty()).then_some(m.tags.len() as i32),
            checksum_crc32: ck("crc32"),
            checksum_crc32c: ck("crc32c"),
            checksum_crc64nvme: ck("crc64nvme"),
            checksum_sha1: ck("sha1"),
            checksum_sha256: ck("sha256"),
            version_id,
            object_lock_mode: lock_mode,
            object_lock_retain_until_date: lock_until,
            object_lock_legal_hold_status: lock_hold,
            ..Default::default()
        };
        Ok(S3Response::new(out))
    }

    pub(super) async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let i = &req.input;
        check_key(&i.key)?;
        let view = self
            .readable_version(&i.bucket, &i.key, i.version_id.as_deref())
            .await?;
        let version_id = versions::version_header(&view);
        let (lock_mode, lock_until, lock_hold) = object_lock::lock_headers(&view);
        let m = view.manifest;
        let lm = ts(m.created_ms);
        if let Some(c) = &i.if_match {
            if !etag_matches(c, &m.etag) {
                return Err(s3_error!(PreconditionFailed));
            }
        } else if let Some(t) = &i.if_unmodified_since {
            if lm > *t {
                return Err(s3_error!(PreconditionFailed));
            }
        }
        if let Some(c) = &i.if_none_match {
            if etag_matches(c, &m.etag) {
                return Err(s3_error!(NotModified));
            }
        } else if let Some(t) = &i.if_modified_since {
            if lm <= *t {
                return Err(s3_error!(NotModified));
            }
        }
        let range = requested_range(i.range.as_ref(), i.part_number, &m)?;
        let (len, content_range) = match range {
            Some(r) => (
                r.end - r.start,
                Some(format!(
                    "bytes {}-{}/{}",
                    r.start,
                    r.end.saturating_sub(1),
                    m.size
                )),
            ),
            None => (m.size, None),
        };
        let with_checksums = i
            .checksum_mode
            .as_ref()
            .is_some_and(|c| c.as_str() == ChecksumMode::ENABLED);
        let ck = |a: &str| {
            if with_checksums {
                checksum_of(&m, a)
            } else {
                None
            }
        };
        Ok(S3Response::new(HeadObjectOutput {
            checksum_type: with_checksums.then(|| checksum_type_of(&m)).flatten(),
            accept_ranges: Some("bytes".into()),
            content_length: Some(len as i64),
            content_range,
            content_type: m.content_type.clone(),
            cache_control: m.headers.get("cache-control").cloned(),
            content_disposition: m.headers.get("content-disposition").cloned(),
            content_encoding: m.headers.get("content-encoding").cloned(),
            content_language: m.headers.get("content-language").cloned(),
            expires: expires_of(&m),
            e_tag: Some(etag(&m.etag)),
            last_modified: Some(lm),
            metadata: metadata_of(&m),
            parts_count: (!m.parts.is_empty()).then_some(m.parts.len() as i32),
            checksum_crc32: ck("crc32"),
            checksum_crc32c: ck("crc32c"),
            checksum_crc64nvme: ck("crc64nvme"),
            checksum_sha1: ck("sha1"),
            checksum_sha256: ck("sha256"),
            version_id,
            object_lock_mode: lock_mode,
            object_lock_retain_until_date: lock_until,
            object_lock_legal_hold_status: lock_hold,
            ..Default::default()
        }))
    }

    pub(super) async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let i = &req.input;
        check_key(&i.key)?;
        let version = versions::parse_version(i.version_id.as_deref())?;
        let bypass = i.bypass_governance_retention.unwrap_or(false)
            && self.may_bypass(&req, &i.bucket).await?;
        let stamp = self
            .client
            .delete_version(&i.bucket, &i.key, version, bypass)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(match stamp {
            Some(s) => DeleteObjectOutput {
                delete_marker: s.delete_marker.then_some(true),
                version_id: Some(s.version.to_string()),
                ..Default::default()
            },
            None => DeleteObjectOutput::default(),
        }))
    }

    pub(super) async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let bypass = req.input.bypass_governance_retention.unwrap_or(false)
            && self.may_bypass(&req, &req.input.bucket).await?;
        let i = req.input;
        if i.delete.objects.len() > 1000 {
            return Err(s3_error!(MalformedXML, "at most 1000 keys per request"));
        }
        let quiet = i.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for o in i.delete.objects {
            let r = match check_key(&o.key)
                .and_then(|_| versions::parse_version(o.version_id.as_deref()))
            {
                Ok(v) => self
                    .client
                    .delete_version(&i.bucket, &o.key, v, bypass)
                    .await
                    .map_err(to_s3),
                Err(e) => Err(e),
            };
            match r {
                Ok(stamp) => {
                    if !quiet {
                        let mut d = DeletedObject {
                            key: Some(o.key),
                            ..Default::default()
                        };
                        if let Some(s) = stamp {
                            let id = Some(s.version.to_string());
                            if o.version_id.is_some() {
                                d.version_id = id.clone();
                            }
                            if s.delete_marker {
                                d.delete_marker = Some(true);
                                d.delete_marker_version_id = id;
                            }
                        }
                        deleted.push(d);
                    }
                }
                Err(e) => errors.push(Error {
                    code: Some(e.code().as_str().to_string()),
                    key: Some(o.key),
                    message: e.message().map(str::to_string),
                    version_id: o.version_id,
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    pub(super) async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let (sb, sk, sv) = parse_copy_source(&req.input.copy_source)?;
        self.check_source(&req, &sb).await?;
        let i = req.input;
        check_key(&i.key)?;
        check_key(&sk)?;
        write_headers!(i);
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
        let replace = i
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if sb == i.bucket && sk == i.key && !replace && sv.is_none() {
            return Err(s3_error!(
                InvalidRequest,
                "copying an object onto itself needs the REPLACE metadata directive"
            ));
        }
        let replace_tags = match i.tagging_directive.as_ref().map(|d| d.as_str()) {
            None | Some(TaggingDirective::COPY) => false,
            Some(TaggingDirective::REPLACE) => true,
            Some(d) => {
                return Err(s3_error!(
                    InvalidArgument,
                    "Unknown tagging directive {d:?}: COPY or REPLACE"
                ))
            }
        };
        let tags = if replace_tags {
            tagging::header_tags(i.tagging.as_deref())?
        } else {
            src.tags.clone()
        };
        let opts = if replace {
            PutOptions {
                content_type: i.content_type,
                headers: std_headers(
                    i.cache_control,
                    i.content_disposition,
                    i.content_encoding,
                    i.content_language,
                    i.expires,
                ),
                user_meta: user_meta(i.metadata),
                checksums: src.checksums.clone(),
                condition: PutCondition::None,
                tags: tags.clone(),
                md5: true,
            }
        } else {
            PutOptions {
                content_type: src.content_type.clone(),
                headers: src.headers.clone(),
                user_meta: src.user_meta.clone(),
                checksums: src.checksums.clone(),
                condition: PutCondition::None,
                tags: tags.clone(),
                md5: true,
            }
        };
        let (m, stamp) = self
            .client
            .copy_versioned(&sb, &sk, &src, &i.bucket, &i.key, opts)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&m.etag)),
                last_modified: Some(ts(m.created_ms)),
                ..Default::default()
            }),
            copy_source_version_id: source_version,
            version_id: versions::written_version(stamp),
            ..Default::default()
        }))
    }
}

/// The bytes a GetObject/HeadObject asks for: a Range, a part, or all.
fn requested_range(
    range: Option<&Range>,
    part_number: Option<i32>,
    m: &ObjectManifest,
) -> S3Result<Option<std::ops::Range<u64>>> {
    match (range, part_number) {
        (Some(_), Some(_)) => Err(s3_error!(
            InvalidRequest,
            "cannot specify both Range and partNumber"
        )),
        (Some(r), None) => Ok(Some(r.check(m.size)?)),
        (None, Some(n)) => Ok(Some(part_range(m, n)?)),
        (None, None) => Ok(None),
    }
}

/// The byte range of part `n` (GetObject/HeadObject `partNumber`): a
/// multipart object's part, or the whole of a single-part object as its
/// part 1.
fn part_range(m: &ObjectManifest, n: i32) -> S3Result<std::ops::Range<u64>> {
    if !(1..=10_000).contains(&n) {
        return Err(s3_error!(
            InvalidArgument,
            "part number must be an integer between 1 and 10000"
        ));
    }
    let bad = || {
        let mut e = S3Error::with_message(
            s3s::S3ErrorCode::Custom("InvalidPartNumber".into()),
            "the requested partnumber is not satisfiable",
        );
        e.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
        e
    };
    if m.parts.is_empty() {
        return if n == 1 { Ok(0..m.size) } else { Err(bad()) };
    }
    let idx = (n - 1) as usize;
    let Some(p) = m.parts.get(idx) else {
        return Err(bad());
    };
    let start: u64 = m.parts[..idx].iter().map(|p| p.size).sum();
    Ok(start..start + p.size)
}

fn expires_of(m: &ObjectManifest) -> Option<Timestamp> {
    m.headers
        .get("expires")
        .and_then(|s| Timestamp::parse(TimestampFormat::HttpDate, s).ok())
}

fn metadata_of(m: &ObjectManifest) -> Option<Metadata> {
    if m.user_meta.is_empty() {
        None
    } else {
        Some(m.user_meta.clone().into_iter().collect())
    }
}
