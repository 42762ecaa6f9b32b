//! S3 versioning: Put/GetBucketVersioning, ListObjectVersions, and the
//! version lookups GET, HEAD, copy and tagging share.

use cairn_metadata::types::{
    ListVersionsRequest, VersionRef, VersionStamp, VersionView, Versioning,
};

use super::listing::url_encode;
use super::*;

/// Parses a request's `versionId` (S3: 400 InvalidArgument "Invalid version
/// id specified" for anything that is not one of ours or `null`).
pub(super) fn parse_version(v: Option<&str>) -> S3Result<Option<VersionRef>> {
    v.map(|s| VersionRef::parse(s).map_err(|e| s3_error!(InvalidArgument, "{}", e.0)))
        .transpose()
}

/// The `x-amz-version-id` a response carries for `view`: only in a bucket
/// that has versioning configured (`null` for its null version).
pub(super) fn version_header(view: &VersionView) -> Option<String> {
    view.versioning
        .configured()
        .then(|| view.version.to_string())
}

/// The `x-amz-version-id` of a write: the id it made, when it made one
/// (a write to a suspended bucket makes the `null` version, which S3 does
/// not announce).
pub(super) fn written_version(stamp: Option<VersionStamp>) -> Option<String> {
    match stamp {
        Some(VersionStamp {
            version: v @ VersionRef::Id(_),
            ..
        }) => Some(v.to_string()),
        _ => None,
    }
}

/// The error S3 answers for a delete marker: 404 NoSuchKey when it is the
/// newest version and no version was named, 405 MethodNotAllowed when it
/// was named; both with `x-amz-delete-marker: true` and its version id.
fn delete_marker_error(view: &VersionView, named: bool) -> S3Error {
    let mut e = if named {
        s3_error!(
            MethodNotAllowed,
            "The specified method is not allowed against this resource."
        )
    } else {
        s3_error!(NoSuchKey, "The specified key does not exist.")
    };
    let mut h = http::HeaderMap::new();
    h.insert(
        "x-amz-delete-marker",
        http::HeaderValue::from_static("true"),
    );
    if let Some(v) = version_header(view) {
        if let Ok(v) = http::HeaderValue::from_str(&v) {
            h.insert("x-amz-version-id", v);
        }
    }
    e.set_headers(h);
    e
}

impl CairnS3 {
    /// The version of `bucket/key` a read names (`versionId`, or the
    /// newest), refusing a delete marker as S3 does.
    pub(super) async fn readable_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> S3Result<VersionView> {
        let want = parse_version(version_id)?;
        let view = self
            .client
            .head_version(bucket, key, want)
            .await
            .map_err(to_s3)?;
        if view.delete_marker {
            return Err(delete_marker_error(&view, want.is_some()));
        }
        Ok(view)
    }

    /// For operations that change only the current version (tagging):
    /// `versionId` may name it; naming an older version is refused with
    /// 501 rather than silently applied to the current one.
    pub(super) async fn current_version_only(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> S3Result<()> {
        if version_id.is_none() {
            return Ok(());
        }
        let view = self.readable_version(bucket, key, version_id).await?;
        if !view.latest {
            return Err(s3_error!(
                NotImplemented,
                "changing a noncurrent version is not supported: omit versionId to use the current version"
            ));
        }
        Ok(())
    }

    pub(super) async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let state = self
            .client
            .versioning(&req.input.bucket)
            .await
            .map_err(to_s3)?;
        let status = match state {
            Versioning::Unversioned => None,
            Versioning::Enabled => Some(BucketVersioningStatus::from_static(
                BucketVersioningStatus::ENABLED,
            )),
            Versioning::Suspended => Some(BucketVersioningStatus::from_static(
                BucketVersioningStatus::SUSPENDED,
            )),
        };
        Ok(S3Response::new(GetBucketVersioningOutput {
            status,
            ..Default::default()
        }))
    }

    /// `Enabled` or `Suspended`. MFA delete is refused (not implemented).
    pub(super) async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        let i = req.input;
        if i.mfa.is_some()
            || i.versioning_configuration
                .mfa_delete
                .as_ref()
                .is_some_and(|m| m.as_str() == MFADelete::ENABLED)
        {
            return Err(s3_error!(NotImplemented, "MFA delete is not supported"));
        }
        let state = match i
            .versioning_configuration
            .status
            .as_ref()
            .map(|s| s.as_str())
        {
            Some(BucketVersioningStatus::ENABLED) => Versioning::Enabled,
            Some(BucketVersioningStatus::SUSPENDED) => Versioning::Suspended,
            _ => {
                return Err(s3_error!(
                    MalformedXML,
                    "VersioningConfiguration Status must be Enabled or Suspended"
                ))
            }
        };
        self.client
            .set_versioning(&i.bucket, state)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(PutBucketVersioningOutput::default()))
    }

    pub(super) async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let i = req.input;
        let max_keys = i.max_keys.unwrap_or(1000).clamp(0, 1000);
        let key_marker = i.key_marker.clone().filter(|k| !k.is_empty());
        let version_marker = match i.version_id_marker.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => {
                if key_marker.is_none() {
                    return Err(s3_error!(
                        InvalidArgument,
                        "A version-id marker cannot be specified without a key marker."
                    ));
                }
                parse_version(Some(v))?
            }
            None => None,
        };
        let page = self
            .client
            .list_versions(ListVersionsRequest {
                bucket: i.bucket.clone(),
                prefix: i.prefix.clone().unwrap_or_default(),
                delimiter: i.delimiter.clone().filter(|d| !d.is_empty()),
                key_marker: key_marker.clone(),
                version_marker,
                max_keys: max_keys as u32,
            })
            .await
            .map_err(to_s3)?;
        let url = i
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL);
        let enc = |s: String| if url { url_encode(&s) } else { s };
        let b = self.client.bucket(&i.bucket).await.map_err(to_s3)?;
        let owner = Owner {
            id: Some(b.owner.clone()),
            display_name: Some(b.owner),
        };
        let mut versions = Vec::new();
        let mut markers = Vec::new();
        for e in page.entries {
            if e.delete_marker {
                markers.push(DeleteMarkerEntry {
                    is_latest: Some(e.latest),
                    key: Some(enc(e.key)),
                    last_modified: Some(ts_ms(e.created_ms)),
                    owner: Some(owner.clone()),
                    version_id: Some(e.version.to_string()),
                });
            } else {
                versions.push(ObjectVersion {
                    e_tag: Some(etag(&e.etag)),
                    is_latest: Some(e.latest),
                    key: Some(enc(e.key)),
                    last_modified: Some(ts_ms(e.created_ms)),
                    owner: Some(owner.clone()),
                    size: Some(e.size as i64),
                    storage_class: Some(ObjectVersionStorageClass::from_static(
                        ObjectVersionStorageClass::STANDARD,
                    )),
                    version_id: Some(e.version.to_string()),
                    ..Default::default()
                });
            }
        }
        let prefixes: Vec<CommonPrefix> = page
            .common_prefixes
            .into_iter()
            .map(|p| CommonPrefix {
                prefix: Some(enc(p)),
            })
            .collect();
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(i.bucket),
            prefix: Some(enc(i.prefix.unwrap_or_default())),
            delimiter: i.delimiter.filter(|d| !d.is_empty()).map(enc),
            key_marker: Some(key_marker.map(enc).unwrap_or_default()),
            version_id_marker: Some(i.version_id_marker.unwrap_or_default()),
            max_keys: Some(max_keys),
            is_truncated: Some(page.truncated),
            next_key_marker: page.next_key_marker.map(enc),
            next_version_id_marker: page.next_version_marker.map(|v| v.to_string()),
            versions: (!versions.is_empty()).then_some(versions),
            delete_markers: (!markers.is_empty()).then_some(markers),
            common_prefixes: (!prefixes.is_empty()).then_some(prefixes),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }
}
