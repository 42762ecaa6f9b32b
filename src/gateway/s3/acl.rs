//! ACLs at the level Cairn keeps them: every bucket and object belongs to
//! the bucket's owner with FULL_CONTROL, and access is by key grants (see
//! `auth.rs`). `x-amz-acl: private` and `bucket-owner-full-control` say
//! exactly that and are accepted; any other canned ACL, any
//! `x-amz-grant-*` header and any policy granting someone else is refused
//! with 501, never silently ignored (a `public-read` that quietly stayed
//! private, or the reverse, would be a lie).

use super::*;

/// The canned ACLs that match what Cairn does anyway.
fn canned_ok(acl: &str) -> bool {
    acl == ObjectCannedACL::PRIVATE || acl == ObjectCannedACL::BUCKET_OWNER_FULL_CONTROL
}

/// Checks a write's ACL headers: `acl` is `x-amz-acl`, `grants` tells
/// whether any `x-amz-grant-*` header was sent.
pub(super) fn check_acl_headers(acl: Option<&str>, grants: bool) -> S3Result<()> {
    if grants {
        return Err(s3_error!(
            NotImplemented,
            "x-amz-grant-* headers are not supported: access is granted per access key (cairn admin key grant)"
        ));
    }
    match acl {
        None => Ok(()),
        Some(a) if canned_ok(a) => Ok(()),
        Some(a) => Err(s3_error!(
            NotImplemented,
            "the canned ACL {a:?} is not supported: objects and buckets are private to the bucket's owner and the keys granted access"
        )),
    }
}

fn owner_grants(owner: &str) -> (Owner, Grants) {
    let o = Owner {
        display_name: Some(owner.to_string()),
        id: Some(owner.to_string()),
    };
    let g = Grant {
        grantee: Some(Grantee {
            display_name: Some(owner.to_string()),
            email_address: None,
            id: Some(owner.to_string()),
            type_: Type::from_static(Type::CANONICAL_USER),
            uri: None,
        }),
        permission: Some(Permission::from_static(Permission::FULL_CONTROL)),
    };
    (o, vec![g])
}

/// A PutBucketAcl / PutObjectAcl body is accepted only when it grants
/// nothing but the owner's FULL_CONTROL.
fn check_policy(p: &AccessControlPolicy, owner: &str) -> S3Result<()> {
    for g in p.grants.iter().flatten() {
        let to_owner = g.grantee.as_ref().is_some_and(|ge| {
            ge.type_.as_str() == Type::CANONICAL_USER && ge.id.as_deref() == Some(owner)
        });
        let full = g
            .permission
            .as_ref()
            .is_some_and(|p| p.as_str() == Permission::FULL_CONTROL);
        if !(to_owner && full) {
            return Err(s3_error!(
                NotImplemented,
                "ACL grants other than the owner's FULL_CONTROL are not supported"
            ));
        }
    }
    Ok(())
}

impl CairnS3 {
    pub(super) async fn get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        let b = self.client.bucket(&req.input.bucket).await.map_err(to_s3)?;
        let (owner, grants) = owner_grants(&b.owner);
        Ok(S3Response::new(GetBucketAclOutput {
            grants: Some(grants),
            owner: Some(owner),
        }))
    }

    pub(super) async fn put_bucket_acl(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> S3Result<S3Response<PutBucketAclOutput>> {
        let i = req.input;
        let b = self.client.bucket(&i.bucket).await.map_err(to_s3)?;
        let grants = i.grant_full_control.is_some()
            || i.grant_read.is_some()
            || i.grant_read_acp.is_some()
            || i.grant_write.is_some()
            || i.grant_write_acp.is_some();
        check_acl_headers(i.acl.as_ref().map(|a| a.as_str()), grants)?;
        if let Some(p) = &i.access_control_policy {
            check_policy(p, &b.owner)?;
        }
        Ok(S3Response::new(PutBucketAclOutput::default()))
    }

    pub(super) async fn get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        let i = req.input;
        check_key(&i.key)?;
        self.readable_version(&i.bucket, &i.key, i.version_id.as_deref())
            .await?;
        let b = self.client.bucket(&i.bucket).await.map_err(to_s3)?;
        let (owner, grants) = owner_grants(&b.owner);
        Ok(S3Response::new(GetObjectAclOutput {
            grants: Some(grants),
            owner: Some(owner),
            ..Default::default()
        }))
    }

    pub(super) async fn put_object_acl(
        &self,
        req: S3Request<PutObjectAclInput>,
    ) -> S3Result<S3Response<PutObjectAclOutput>> {
        let i = req.input;
        check_key(&i.key)?;
        self.readable_version(&i.bucket, &i.key, i.version_id.as_deref())
            .await?;
        let b = self.client.bucket(&i.bucket).await.map_err(to_s3)?;
        let grants = i.grant_full_control.is_some()
            || i.grant_read.is_some()
            || i.grant_read_acp.is_some()
            || i.grant_write.is_some()
            || i.grant_write_acp.is_some();
        check_acl_headers(i.acl.as_ref().map(|a| a.as_str()), grants)?;
        if let Some(p) = &i.access_control_policy {
            check_policy(p, &b.owner)?;
        }
        Ok(S3Response::new(PutObjectAclOutput::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_acls_that_say_what_cairn_does_pass() {
        assert!(check_acl_headers(None, false).is_ok());
        assert!(check_acl_headers(Some("private"), false).is_ok());
        assert!(check_acl_headers(Some("bucket-owner-full-control"), false).is_ok());
        for bad in [
            "public-read",
            "public-read-write",
            "authenticated-read",
            "x",
        ] {
            let e = check_acl_headers(Some(bad), false).err();
            assert_eq!(
                e.map(|e| e.code().as_str().to_string()),
                Some("NotImplemented".to_string()),
                "{bad}"
            );
        }
        assert!(check_acl_headers(None, true).is_err());
        let (_, grants) = owner_grants("GKowner");
        let mine = AccessControlPolicy {
            grants: Some(grants.clone()),
            owner: None,
        };
        assert!(check_policy(&mine, "GKowner").is_ok());
        assert!(check_policy(&mine, "GKother").is_err());
    }
}
