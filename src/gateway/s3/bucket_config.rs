//! Bucket configuration: Put/Get/DeleteBucketCors and
//! Put/Get/DeleteBucketTagging, stored by the metadata service
//! (`Command::PutBucketCors`, ...). The CORS rules are applied to
//! requests by `gateway::cors`, before s3s.

use cairn_metadata::client::Consistency;
use cairn_metadata::types::{
    bucket_tags_from_pairs, validate_cors, CorsError, CorsRule, MAX_CORS_BYTES,
};

use super::tagging::tag_err;
use super::*;

/// A refused CORS configuration as S3 answers it.
fn cors_err(e: CorsError) -> S3Error {
    match e {
        CorsError::Malformed(m) => s3_error!(MalformedXML, "{m}"),
        CorsError::Invalid(m) => s3_error!(InvalidRequest, "{m}"),
    }
}

fn from_dto(r: CORSRule) -> CorsRule {
    CorsRule {
        id: r.id,
        allowed_methods: r.allowed_methods,
        allowed_origins: r.allowed_origins,
        allowed_headers: r.allowed_headers.unwrap_or_default(),
        expose_headers: r.expose_headers.unwrap_or_default(),
        max_age_seconds: r.max_age_seconds,
    }
}

fn to_dto(r: CorsRule) -> CORSRule {
    let some = |v: Vec<String>| (!v.is_empty()).then_some(v);
    CORSRule {
        id: r.id,
        allowed_methods: r.allowed_methods,
        allowed_origins: r.allowed_origins,
        allowed_headers: some(r.allowed_headers),
        expose_headers: some(r.expose_headers),
        max_age_seconds: r.max_age_seconds,
    }
}

impl CairnS3 {
    pub(super) async fn put_bucket_cors(
        &self,
        req: S3Request<PutBucketCorsInput>,
    ) -> S3Result<S3Response<PutBucketCorsOutput>> {
        let len = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if len.is_some_and(|l| l > MAX_CORS_BYTES) {
            return Err(s3_error!(
                InvalidRequest,
                "The CORS configuration exceeds the maximum size of {MAX_CORS_BYTES} bytes"
            ));
        }
        let i = req.input;
        let rules: Vec<CorsRule> = i
            .cors_configuration
            .cors_rules
            .into_iter()
            .map(from_dto)
            .collect();
        validate_cors(&rules).map_err(cors_err)?;
        self.client
            .put_bucket_cors(&i.bucket, rules)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(PutBucketCorsOutput::default()))
    }

    pub(super) async fn get_bucket_cors(
        &self,
        req: S3Request<GetBucketCorsInput>,
    ) -> S3Result<S3Response<GetBucketCorsOutput>> {
        let rules = self
            .client
            .bucket_cors(&req.input.bucket, Consistency::Linearizable)
            .await
            .map_err(to_s3)?;
        if rules.is_empty() {
            return Err(s3_error!(
                NoSuchCORSConfiguration,
                "The CORS configuration does not exist"
            ));
        }
        Ok(S3Response::new(GetBucketCorsOutput {
            cors_rules: Some(rules.into_iter().map(to_dto).collect()),
        }))
    }

    pub(super) async fn delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
        self.client
            .delete_bucket_cors(&req.input.bucket)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(DeleteBucketCorsOutput::default()))
    }

    pub(super) async fn put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        let i = req.input;
        let pairs = i
            .tagging
            .tag_set
            .into_iter()
            .map(|t| match t.key {
                Some(k) => Ok((k, t.value.unwrap_or_default())),
                None => Err(s3_error!(MalformedXML, "a Tag has no Key")),
            })
            .collect::<S3Result<Vec<_>>>()?;
        let tags = bucket_tags_from_pairs(pairs).map_err(tag_err)?;
        self.client
            .put_bucket_tags(&i.bucket, tags)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(PutBucketTaggingOutput::default()))
    }

    pub(super) async fn get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        let tags = self
            .client
            .bucket_tags(&req.input.bucket)
            .await
            .map_err(to_s3)?;
        if tags.is_empty() {
            return Err(s3_error!(NoSuchTagSet, "The TagSet does not exist"));
        }
        Ok(S3Response::new(GetBucketTaggingOutput {
            tag_set: tags
                .into_iter()
                .map(|(k, v)| Tag {
                    key: Some(k),
                    value: Some(v),
                })
                .collect(),
        }))
    }

    pub(super) async fn delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        self.client
            .delete_bucket_tags(&req.input.bucket)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(DeleteBucketTaggingOutput::default()))
    }
}
