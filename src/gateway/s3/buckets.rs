//! Bucket operations: create, delete, head, location, list.

use super::*;

impl CairnS3 {
    pub(super) async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let name = req.input.bucket.clone();
        let ec = match req.headers.get(EC_HEADER) {
            Some(v) => {
                let s = v
                    .to_str()
                    .map_err(|_| s3_error!(InvalidArgument, "bad {EC_HEADER} header"))?;
                EcParams::from_str(s).map_err(|e| s3_error!(InvalidArgument, "{}", e.0))?
            }
            None => EcParams::default(),
        };
        cairn_metadata::types::validate_bucket_name(&name)
            .map_err(|e| s3_error!(InvalidBucketName, "{}", e.0))?;
        {
            let i = &req.input;
            super::acl::check_acl_headers(
                i.acl.as_ref().map(|a| a.as_str()),
                i.grant_full_control.is_some()
                    || i.grant_read.is_some()
                    || i.grant_read_acp.is_some()
                    || i.grant_write.is_some()
                    || i.grant_write_acp.is_some(),
            )?;
        }
        let owner = req
            .credentials
            .as_ref()
            .map(|c| c.access_key.clone())
            .unwrap_or_default();
        match self
            .client
            .create_bucket_owned(&name, ec, self.shard_size, &owner)
            .await
        {
            Ok(()) => {}
            Err(ClientError::BucketExists(b)) => {
                let mine = matches!(self.client.bucket(&b).await, Ok(info) if info.owner == owner);
                return Err(if mine {
                    s3_error!(BucketAlreadyOwnedByYou, "you already own {b}")
                } else {
                    s3_error!(BucketAlreadyExists, "{b} exists")
                });
            }
            Err(e) => return Err(to_s3(e)),
        }
        if req.input.object_lock_enabled_for_bucket == Some(true) {
            // Object Lock needs versioning; both are set before the bucket
            // is announced. If either fails, the new (empty) bucket goes
            // again rather than stay without the lock that was asked for.
            let locked = async {
                self.client
                    .set_versioning(&name, cairn_metadata::types::Versioning::Enabled)
                    .await?;
                self.client
                    .put_object_lock(&name, cairn_metadata::types::ObjectLockConfig::default())
                    .await
            }
            .await;
            if let Err(e) = locked {
                let _ = self.client.delete_bucket(&name).await;
                return Err(to_s3(e));
            }
        }
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{name}")),
        }))
    }

    pub(super) async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.client
            .delete_bucket(&req.input.bucket)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    pub(super) async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.client.bucket(&req.input.bucket).await.map_err(to_s3)?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    pub(super) async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.client.bucket(&req.input.bucket).await.map_err(to_s3)?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    pub(super) async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let Some(cred) = &req.credentials else {
            return Err(s3_error!(AccessDenied));
        };
        let Some(key) = self.keys.key(&cred.access_key).await.map_err(to_s3)? else {
            return Err(s3_error!(InvalidAccessKeyId));
        };
        let all = self.client.list_buckets().await.map_err(to_s3)?;
        let buckets = all
            .into_iter()
            .filter(|b| {
                key.admin
                    || b.owner == key.id
                    || key
                        .buckets
                        .get(&b.name)
                        .is_some_and(|g| g.read || g.write || g.owner)
            })
            .map(|b| Bucket {
                name: Some(b.name),
                creation_date: Some(ts_ms(b.created_ms)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner {
                display_name: Some(key.name.clone()),
                id: Some(key.id.clone()),
            }),
            ..Default::default()
        }))
    }
}
