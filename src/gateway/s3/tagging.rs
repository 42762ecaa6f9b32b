//! Object tagging: Put/Get/DeleteObjectTagging, and the `x-amz-tagging`
//! header of PutObject, CreateMultipartUpload and CopyObject. Tags live in
//! the object's manifest; a change is committed conditional on the
//! object's version (`Command::PutObjectTags`), so tagging never lands on
//! a write that replaced the object meanwhile.

use cairn_metadata::types::{tags_from_pairs, TagError};

use super::*;

/// Attempts of a tagging whose object was overwritten between our read of
/// its version and the commit: each retry tags the newer version, as S3
/// tags whatever is current. Past this many the client gets a retryable
/// 409 OperationAborted.
const TAG_ATTEMPTS: usize = 3;

/// A refused tag set as S3 answers it.
pub(super) fn tag_err(e: TagError) -> S3Error {
    match e {
        TagError::TooMany(_) => {
            let mut err =
                S3Error::with_message(s3s::S3ErrorCode::Custom("BadRequest".into()), e.to_string());
            err.set_status_code(http::StatusCode::BAD_REQUEST);
            err
        }
        TagError::TooManyBucket(_) => s3_error!(InvalidTag, "{e}"),
        TagError::Invalid(m) => s3_error!(InvalidTag, "{m}"),
    }
}

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a
/// space, `%XX` a byte); `None` when it is not valid UTF-8 or a `%` is
/// not followed by two hex digits.
pub(super) fn form_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Parses an `x-amz-tagging` header (`k1=v1&k2=v2`, form-encoded).
pub(super) fn parse_tagging_header(h: &str) -> S3Result<BTreeMap<String, String>> {
    let bad = || {
        s3_error!(
            InvalidArgument,
            "the x-amz-tagging header is not form-encoded"
        )
    };
    let pairs = h
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((
                form_decode(k).ok_or_else(bad)?,
                form_decode(v).ok_or_else(bad)?,
            ))
        })
        .collect::<S3Result<Vec<_>>>()?;
    tags_from_pairs(pairs).map_err(tag_err)
}

/// The tags of an optional `x-amz-tagging` header.
pub(super) fn header_tags(h: Option<&str>) -> S3Result<BTreeMap<String, String>> {
    h.map(parse_tagging_header)
        .transpose()
        .map(Option::unwrap_or_default)
}

fn tag_set(tags: &BTreeMap<String, String>) -> TagSet {
    tags.iter()
        .map(|(k, v)| Tag {
            key: Some(k.clone()),
            value: Some(v.clone()),
        })
        .collect()
}

impl CairnS3 {
    /// Sets the tags of the current version of `bucket/key`.
    async fn set_tags(
        &self,
        bucket: &str,
        key: &str,
        tags: BTreeMap<String, String>,
    ) -> S3Result<()> {
        let mut last = None;
        for _ in 0..TAG_ATTEMPTS {
            let m = self.client.head(bucket, key).await.map_err(to_s3)?;
            match self
                .client
                .put_tags(bucket, key, m.version, tags.clone())
                .await
            {
                Ok(()) => return Ok(()),
                Err(e @ ClientError::Stale(_)) => last = Some(e),
                Err(e) => return Err(to_s3(e)),
            }
        }
        Err(to_s3(
            last.unwrap_or_else(|| ClientError::Stale(key.to_string())),
        ))
    }

    pub(super) async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        let i = req.input;
        check_key(&i.key)?;
        self.current_version_only(&i.bucket, &i.key, i.version_id.as_deref())
            .await?;
        let pairs = i
            .tagging
            .tag_set
            .into_iter()
            .map(|t| match t.key {
                Some(k) => Ok((k, t.value.unwrap_or_default())),
                None => Err(s3_error!(MalformedXML, "a Tag has no Key")),
            })
            .collect::<S3Result<Vec<_>>>()?;
        let tags = tags_from_pairs(pairs).map_err(tag_err)?;
        self.set_tags(&i.bucket, &i.key, tags).await?;
        Ok(S3Response::new(PutObjectTaggingOutput::default()))
    }

    pub(super) async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let i = req.input;
        check_key(&i.key)?;
        let view = self
            .readable_version(&i.bucket, &i.key, i.version_id.as_deref())
            .await?;
        Ok(S3Response::new(GetObjectTaggingOutput {
            tag_set: tag_set(&view.manifest.tags),
            version_id: versions::version_header(&view),
        }))
    }

    pub(super) async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        let i = req.input;
        check_key(&i.key)?;
        self.current_version_only(&i.bucket, &i.key, i.version_id.as_deref())
            .await?;
        self.set_tags(&i.bucket, &i.key, BTreeMap::new()).await?;
        Ok(S3Response::new(DeleteObjectTaggingOutput::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagging_header_is_form_encoded() {
        let t = parse_tagging_header("a=1&b%20c=d+e&empty=&k%3D=%26").ok();
        let want = BTreeMap::from([
            ("a".to_string(), "1".to_string()),
            ("b c".into(), "d e".into()),
            ("empty".into(), "".into()),
            ("k=".into(), "&".into()),
        ]);
        assert_eq!(t, Some(want));
        assert!(parse_tagging_header("a=%zz").is_err());
        assert!(parse_tagging_header("a=1&a=2").is_err());
        let eleven: Vec<String> = (0..11).map(|i| format!("k{i}=v")).collect();
        let e = parse_tagging_header(&eleven.join("&")).err();
        assert_eq!(
            e.map(|e| e.status_code()),
            Some(Some(http::StatusCode::BAD_REQUEST))
        );
        assert_eq!(header_tags(None).ok(), Some(BTreeMap::new()));
    }
}
