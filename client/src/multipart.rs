//! Multipart uploads and server-side copies.
//!
//! A part is written exactly like an object body (stripes of the bucket's
//! layout, the last one short) and recorded in the metadata service with
//! `Command::PutPart`; completing an upload commits a manifest that
//! concatenates the chosen parts' stripes, so no data is rewritten. The read
//! path walks such manifests stripe by stripe (`read::walk_spans`).
//!
//! A copy streams the source through the write path: shards are never
//! shared between manifests, so deleting one object can never free
//! another's data.

use std::collections::BTreeMap;
use std::ops::Range;

use cairn_metadata::client::Consistency;
use cairn_metadata::types::*;
use tokio::io::AsyncRead;

use crate::read::StreamReader;
use crate::{expect_result, now_ms, Client, ClientError, PutOptions, Result};

/// S3's minimum size of every part but the last.
pub const MIN_PART_SIZE: u64 = 5 << 20;

/// S3's maximum part size.
pub const MAX_PART_SIZE: u64 = crate::MAX_WRITE_SIZE;

/// One page of an upload's parts.
#[derive(Debug, Clone)]
pub struct PartsPage {
    /// Parts with their upload time (ms), by number.
    pub parts: Vec<(PartInfo, u64)>,
    /// More parts follow.
    pub truncated: bool,
}

impl Client {
    /// Starts a multipart upload of `bucket/key` whose object will carry
    /// the headers and metadata of `opts`.
    pub async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        opts: &PutOptions,
        checksum_algorithm: Option<String>,
        checksum_type: Option<String>,
        owner: &str,
    ) -> Result<UploadInfo> {
        validate_key(key).map_err(|e| ClientError::Invalid(e.0))?;
        let b = self.bucket_for_write(bucket).await?;
        let upload = UploadInfo {
            id: StripeId::random(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            initiated_ms: now_ms(),
            owner: owner.to_string(),
            content_type: opts.content_type.clone(),
            headers: opts.headers.clone(),
            user_meta: opts.user_meta.clone(),
            checksum_algorithm,
            checksum_type,
            ec: b.ec,
            shard_size: b.shard_size,
            tags: opts.tags.clone(),
        };
        self.inner
            .write(Command::CreateUpload {
                upload: upload.clone(),
            })
            .await?;
        Ok(upload)
    }

    /// An upload in progress.
    pub async fn upload(&self, bucket: &str, key: &str, upload: StripeId) -> Result<UploadInfo> {
        let r = self
            .inner
            .meta
            .query(
                &Query::GetUpload {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    upload,
                },
                Consistency::Linearizable,
            )
            .await?;
        expect_result!(r, QueryResult::Upload(u) => u)
    }

    /// Stores the bytes of `reader` as part `number` of an upload, returning
    /// the part's info (ETag = MD5 of the part).
    pub async fn upload_part<R: AsyncRead + Unpin + Send>(
        &self,
        bucket: &str,
        key: &str,
        upload: StripeId,
        number: u32,
        reader: R,
        checksums: BTreeMap<String, String>,
    ) -> Result<PartInfo> {
        self.upload_part_verified(bucket, key, upload, number, reader, move || checksums)
            .await
    }

    /// [`Client::upload_part`] whose checksums are computed while the body
    /// streams: `checksums` is called once the part is durable, before it
    /// is recorded.
    pub async fn upload_part_verified<R, F>(
        &self,
        bucket: &str,
        key: &str,
        upload: StripeId,
        number: u32,
        reader: R,
        checksums: F,
    ) -> Result<PartInfo>
    where
        R: AsyncRead + Unpin + Send,
        F: FnOnce() -> BTreeMap<String, String> + Send,
    {
        if number == 0 || number > 10_000 {
            return Err(ClientError::Invalid(format!(
                "part number {number} is outside 1..=10000"
            )));
        }
        let u = self.upload(bucket, key, upload).await?;
        let b = BucketInfo {
            name: bucket.to_string(),
            ec: u.ec,
            shard_size: u.shard_size,
            created_ms: 0,
            owner: String::new(),
        };
        let w = self.write_stripes(&b, reader, true, None).await?;
        if w.size > MAX_PART_SIZE {
            self.inner.discard(&w.written).await;
            return Err(ClientError::Invalid(format!(
                "part of {} bytes exceeds the {MAX_PART_SIZE}-byte limit",
                w.size
            )));
        }
        let info = PartInfo {
            number,
            size: w.size,
            etag: w.etag.clone(),
            checksums: checksums(),
            stripes: w.stripes.len() as u32,
        };
        let res = self
            .inner
            .write(w.commit(Command::PutPart {
                bucket: bucket.to_string(),
                key: key.to_string(),
                upload,
                part: UploadPart {
                    info: info.clone(),
                    stripes: w.stripes.clone(),
                    created_ms: now_ms(),
                },
            }))
            .await;
        if let Err(e) = res {
            if !matches!(e, ClientError::Unavailable(_)) {
                self.inner.discard(&w.written).await;
            }
            return Err(e);
        }
        Ok(info)
    }

    /// Completes an upload with `parts` (number, ETag) in order. The ETag is
    /// S3's: hex MD5 of the concatenated binary part MD5s, `-N`.
    pub async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload: StripeId,
        parts: Vec<CompletePart>,
        checksums: BTreeMap<String, String>,
        condition: PutCondition,
    ) -> Result<ObjectManifest> {
        self.complete_upload_versioned(bucket, key, upload, parts, checksums, condition)
            .await
            .map(|(m, _)| m)
    }

    /// [`Client::complete_upload`] that also returns the version it made
    /// when the bucket has versioning configured.
    pub async fn complete_upload_versioned(
        &self,
        bucket: &str,
        key: &str,
        upload: StripeId,
        parts: Vec<CompletePart>,
        checksums: BTreeMap<String, String>,
        condition: PutCondition,
    ) -> Result<(ObjectManifest, Option<VersionStamp>)> {
        use md5::Digest;
        let mut h = md5::Md5::new();
        for p in &parts {
            let raw = hex::decode(p.etag.trim_matches('"')).map_err(|_| {
                ClientError::InvalidPart(format!("part {} ETag {:?} is not hex", p.number, p.etag))
            })?;
            h.update(&raw);
        }
        let etag = format!("{}-{}", hex::encode(h.finalize()), parts.len());
        let version = StripeId::random();
        let stamp = self
            .inner
            .write_versioned(Command::CompleteUpload {
                bucket: bucket.to_string(),
                key: key.to_string(),
                upload,
                parts,
                min_part_size: MIN_PART_SIZE,
                etag,
                version,
                checksums,
                now_ms: now_ms(),
                condition,
            })
            .await?;
        // The version just made (it stays readable by id even once a
        // newer write replaced it as current).
        let by_id = match stamp {
            Some(VersionStamp {
                version: v @ VersionRef::Id(_),
                ..
            }) => Some(v),
            _ => None,
        };
        let m = match by_id {
            Some(v) => self.head_version(bucket, key, Some(v)).await?.manifest,
            None => self.inner.manifest(bucket, key).await?,
        };
        Ok((m, stamp))
    }

    /// Aborts an upload; its parts' shards are queued for deletion.
    pub async fn abort_upload(&self, bucket: &str, key: &str, upload: StripeId) -> Result<()> {
        self.inner
            .write(Command::AbortUpload {
                bucket: bucket.to_string(),
                key: key.to_string(),
                upload,
            })
            .await
    }

    /// One page of an upload's parts, numbered above `after`.
    pub async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload: StripeId,
        after: u32,
        max: u32,
    ) -> Result<PartsPage> {
        let r = self
            .inner
            .meta
            .query(
                &Query::ListParts {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    upload,
                    after,
                    max,
                },
                Consistency::Linearizable,
            )
            .await?;
        expect_result!(r, QueryResult::Parts { parts, truncated } => PartsPage { parts, truncated })
    }

    /// One page of the uploads in progress in `bucket`.
    pub async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(String, Option<StripeId>)>,
        max: u32,
    ) -> Result<(Vec<UploadInfo>, bool)> {
        let r = self
            .inner
            .meta
            .query(
                &Query::ListUploads {
                    bucket: bucket.to_string(),
                    prefix: prefix.to_string(),
                    after,
                    max,
                },
                Consistency::Linearizable,
            )
            .await?;
        expect_result!(r, QueryResult::Uploads { uploads, truncated } => (uploads, truncated))
    }

    /// Copies the source object `src` (an already fetched manifest of
    /// `src_bucket/src_key`) to `bucket/key` with `opts`, streaming it
    /// through the write path.
    pub async fn copy(
        &self,
        src_bucket: &str,
        src_key: &str,
        src: &ObjectManifest,
        bucket: &str,
        key: &str,
        opts: PutOptions,
    ) -> Result<ObjectManifest> {
        self.copy_versioned(src_bucket, src_key, src, bucket, key, opts)
            .await
            .map(|(m, _)| m)
    }

    /// [`Client::copy`] that also returns the version it made when the
    /// target bucket has versioning configured. `src` may be any version
    /// of the source key: its stripes are read by its version.
    pub async fn copy_versioned(
        &self,
        src_bucket: &str,
        src_key: &str,
        src: &ObjectManifest,
        bucket: &str,
        key: &str,
        opts: PutOptions,
    ) -> Result<(ObjectManifest, Option<VersionStamp>)> {
        let stream = self.stream_manifest(src_bucket, src_key, src, None)?;
        let mut reader = StreamReader::new(stream);
        self.put_impl(bucket, key, &mut reader, opts, None, None)
            .await
    }

    /// Copies bytes `range` of the source object into part `number` of an
    /// upload.
    #[allow(clippy::too_many_arguments)]
    pub async fn upload_part_copy(
        &self,
        src_bucket: &str,
        src_key: &str,
        src: &ObjectManifest,
        range: Option<Range<u64>>,
        bucket: &str,
        key: &str,
        upload: StripeId,
        number: u32,
    ) -> Result<PartInfo> {
        let stream = self.stream_manifest(src_bucket, src_key, src, range)?;
        self.upload_part(
            bucket,
            key,
            upload,
            number,
            StreamReader::new(stream),
            BTreeMap::new(),
        )
        .await
    }
}
