//! S3 Object Lock: Put/GetObjectLockConfiguration, Put/GetObjectRetention,
//! Put/GetObjectLegalHold, the lock headers of GET/HEAD and the
//! governance bypass of deletes. The locks themselves are enforced in
//! `model::apply` (`model/versions.rs`), for every key, admin keys
//! included; the gateway only translates.

use cairn_metadata::types::{
    DefaultRetention, LockMode, ObjectLockConfig, Retention, VersionView, MAX_RETENTION_DAYS,
};

use super::*;

fn mode_of(m: &str) -> S3Result<LockMode> {
    match m {
        ObjectLockRetentionMode::GOVERNANCE => Ok(LockMode::Governance),
        ObjectLockRetentionMode::COMPLIANCE => Ok(LockMode::Compliance),
        other => Err(s3_error!(
            MalformedXML,
            "retention mode {other:?} is neither GOVERNANCE nor COMPLIANCE"
        )),
    }
}

fn mode_name(m: LockMode) -> &'static str {
    match m {
        LockMode::Governance => ObjectLockRetentionMode::GOVERNANCE,
        LockMode::Compliance => ObjectLockRetentionMode::COMPLIANCE,
    }
}

fn ms_of(t: &Timestamp) -> u64 {
    let t: time::OffsetDateTime = t.clone().into();
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Object Lock headers on a write (PutObject, CopyObject,
/// CreateMultipartUpload) are refused: a version's retention is set by the
/// bucket's default retention or by PutObjectRetention after the write,
/// never silently dropped.
pub(super) fn refuse_lock_headers(
    mode: Option<&ObjectLockMode>,
    until: Option<&Timestamp>,
    hold: Option<&ObjectLockLegalHoldStatus>,
) -> S3Result<()> {
    if mode.is_some() || until.is_some() || hold.is_some() {
        return Err(s3_error!(
            NotImplemented,
            "x-amz-object-lock-* headers on writes are not supported: use the bucket's default retention, or PutObjectRetention / PutObjectLegalHold after the write"
        ));
    }
    Ok(())
}

/// The `x-amz-object-lock-*` headers of GET/HEAD for `view`.
pub(super) fn lock_headers(
    view: &VersionView,
) -> (
    Option<ObjectLockMode>,
    Option<Timestamp>,
    Option<ObjectLockLegalHoldStatus>,
) {
    let (mode, until) = match view.retention {
        Some(r) => (
            Some(ObjectLockMode::from(mode_name(r.mode).to_string())),
            Some(ts_ms(r.until_ms)),
        ),
        None => (None, None),
    };
    let hold = view
        .legal_hold
        .then(|| ObjectLockLegalHoldStatus::from_static(ObjectLockLegalHoldStatus::ON));
    (mode, until, hold)
}

impl CairnS3 {
    /// Whether the requester may bypass GOVERNANCE retention on `bucket`
    /// (S3's `s3:BypassGovernanceRetention`): the bucket's owner or an
    /// admin key.
    pub(super) async fn may_bypass<T>(&self, req: &S3Request<T>, bucket: &str) -> S3Result<bool> {
        let Some(cred) = &req.credentials else {
            return Ok(false);
        };
        let Some(key) = self.keys.key(&cred.access_key).await.map_err(to_s3)? else {
            return Ok(false);
        };
        self.keys.allowed(&key, bucket, Need::Owner).await
    }

    async fn require_lock(&self, bucket: &str) -> S3Result<ObjectLockConfig> {
        match self.client.object_lock(bucket).await.map_err(to_s3)? {
            Some(c) => Ok(c),
            None => Err(s3_error!(
                InvalidRequest,
                "Bucket is missing Object Lock Configuration"
            )),
        }
    }

    pub(super) async fn put_object_lock_configuration(
        &self,
        req: S3Request<PutObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<PutObjectLockConfigurationOutput>> {
        let i = req.input;
        if i.token.is_some() {
            return Err(s3_error!(
                NotImplemented,
                "Object Lock tokens are not supported"
            ));
        }
        let Some(c) = i.object_lock_configuration else {
            return Err(s3_error!(MalformedXML, "no ObjectLockConfiguration"));
        };
        if c.object_lock_enabled.as_ref().map(|e| e.as_str()) != Some(ObjectLockEnabled::ENABLED) {
            return Err(s3_error!(MalformedXML, "ObjectLockEnabled must be Enabled"));
        }
        let default = match c.rule.and_then(|r| r.default_retention) {
            None => None,
            Some(d) => {
                let Some(mode) = d.mode.as_ref() else {
                    return Err(s3_error!(MalformedXML, "DefaultRetention needs a Mode"));
                };
                let mode = mode_of(mode.as_str())?;
                let days = match (d.days, d.years) {
                    (Some(n), None) if n > 0 => n as u64,
                    (None, Some(y)) if y > 0 => y as u64 * 365,
                    (Some(_), Some(_)) => {
                        return Err(s3_error!(
                            MalformedXML,
                            "DefaultRetention takes Days or Years, not both"
                        ))
                    }
                    _ => {
                        return Err(s3_error!(
                            InvalidArgument,
                            "Default retention period must be a positive integer value"
                        ))
                    }
                };
                if days > u64::from(MAX_RETENTION_DAYS) {
                    return Err(s3_error!(
                        InvalidArgument,
                        "Default retention period is longer than {MAX_RETENTION_DAYS} days"
                    ));
                }
                Some(DefaultRetention {
                    mode,
                    days: days as u32,
                })
            }
        };
        self.client
            .put_object_lock(&i.bucket, ObjectLockConfig { default })
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(PutObjectLockConfigurationOutput::default()))
    }

    pub(super) async fn get_object_lock_configuration(
        &self,
        req: S3Request<GetObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<GetObjectLockConfigurationOutput>> {
        let Some(c) = self
            .client
            .object_lock(&req.input.bucket)
            .await
            .map_err(to_s3)?
        else {
            return Err(s3_error!(
                ObjectLockConfigurationNotFoundError,
                "Object Lock configuration does not exist for this bucket"
            ));
        };
        let rule = c.default.map(|d| ObjectLockRule {
            default_retention: Some(s3s::dto::DefaultRetention {
                days: Some(d.days as i32),
                mode: Some(ObjectLockRetentionMode::from(mode_name(d.mode).to_string())),
                years: None,
            }),
        });
        Ok(S3Response::new(GetObjectLockConfigurationOutput {
            object_lock_configuration: Some(ObjectLockConfiguration {
                object_lock_enabled: Some(ObjectLockEnabled::from_static(
                    ObjectLockEnabled::ENABLED,
                )),
                rule,
            }),
        }))
    }

    pub(super) async fn put_object_retention(
        &self,
        req: S3Request<PutObjectRetentionInput>,
    ) -> S3Result<S3Response<PutObjectRetentionOutput>> {
        let bypass = req.input.bypass_governance_retention.unwrap_or(false)
            && self.may_bypass(&req, &req.input.bucket).await?;
        let i = req.input;
        check_key(&i.key)?;
        self.require_lock(&i.bucket).await?;
        let version = versions::parse_version(i.version_id.as_deref())?;
        let retention = match i.retention {
            None => None,
            Some(r) => match (r.mode, r.retain_until_date) {
                (None, None) => None,
                (Some(m), Some(until)) => {
                    let until_ms = ms_of(&until);
                    if until_ms <= now_ms() {
                        return Err(s3_error!(
                            InvalidArgument,
                            "The retain until date must be in the future!"
                        ));
                    }
                    Some(Retention {
                        mode: mode_of(m.as_str())?,
                        until_ms,
                    })
                }
                _ => {
                    return Err(s3_error!(
                        MalformedXML,
                        "Retention needs both Mode and RetainUntilDate"
                    ))
                }
            },
        };
        self.client
            .put_retention(&i.bucket, &i.key, version, retention, bypass)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(PutObjectRetentionOutput::default()))
    }

    pub(super) async fn get_object_retention(
        &self,
        req: S3Request<GetObjectRetentionInput>,
    ) -> S3Result<S3Response<GetObjectRetentionOutput>> {
        let i = req.input;
        check_key(&i.key)?;
        self.require_lock(&i.bucket).await?;
        let view = self
            .readable_version(&i.bucket, &i.key, i.version_id.as_deref())
            .await?;
        let Some(r) = view.retention else {
            return Err(s3_error!(
                NoSuchObjectLockConfiguration,
                "The specified object does not have a ObjectLock configuration"
            ));
        };
        Ok(S3Response::new(GetObjectRetentionOutput {
            retention: Some(ObjectLockRetention {
                mode: Some(ObjectLockRetentionMode::from(mode_name(r.mode).to_string())),
                retain_until_date: Some(ts_ms(r.until_ms)),
            }),
        }))
    }

    pub(super) async fn put_object_legal_hold(
        &self,
        req: S3Request<PutObjectLegalHoldInput>,
    ) -> S3Result<S3Response<PutObjectLegalHoldOutput>> {
        let i = req.input;
        check_key(&i.key)?;
        self.require_lock(&i.bucket).await?;
        let version = versions::parse_version(i.version_id.as_deref())?;
        let on = match i
            .legal_hold
            .and_then(|h| h.status)
            .as_ref()
            .map(|s| s.as_str())
        {
            Some(ObjectLockLegalHoldStatus::ON) => true,
            Some(ObjectLockLegalHoldStatus::OFF) => false,
            _ => {
                return Err(s3_error!(
                    MalformedXML,
                    "LegalHold Status must be ON or OFF"
                ))
            }
        };
        self.client
            .put_legal_hold(&i.bucket, &i.key, version, on)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(PutObjectLegalHoldOutput::default()))
    }

    pub(super) async fn get_object_legal_hold(
        &self,
        req: S3Request<GetObjectLegalHoldInput>,
    ) -> S3Result<S3Response<GetObjectLegalHoldOutput>> {
        let i = req.input;
        check_key(&i.key)?;
        self.require_lock(&i.bucket).await?;
        let view = self
            .readable_version(&i.bucket, &i.key, i.version_id.as_deref())
            .await?;
        let status = if view.legal_hold {
            ObjectLockLegalHoldStatus::ON
        } else {
            ObjectLockLegalHoldStatus::OFF
        };
        Ok(S3Response::new(GetObjectLegalHoldOutput {
            legal_hold: Some(ObjectLockLegalHold {
                status: Some(ObjectLockLegalHoldStatus::from_static(status)),
            }),
        }))
    }
}
