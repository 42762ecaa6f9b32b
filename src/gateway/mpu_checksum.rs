//! Whole-object checksums of multipart uploads, as S3 defines them.
//!
//! - `COMPOSITE` (the default for CRC32, CRC32C, SHA-1 and SHA-256): the
//!   checksum of the concatenated raw part checksums, then `-N` for N parts.
//! - `FULL_OBJECT` (the only type for CRC64NVME, allowed for CRC32 and
//!   CRC32C): the CRC of the whole object, obtained by combining the parts'
//!   CRCs with their lengths (no data is re-read: parts are never rewritten).

use base64::Engine;
use s3s::crypto::Checksum;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// `COMPOSITE`.
pub const COMPOSITE: &str = "COMPOSITE";
/// `FULL_OBJECT`.
pub const FULL_OBJECT: &str = "FULL_OBJECT";

/// The key under which a manifest's checksum map records the type.
pub const TYPE_KEY: &str = "type";

/// Checks the algorithm/type pair of a CreateMultipartUpload and returns the
/// effective type.
pub fn effective_type(algo: Option<&str>, ty: Option<&str>) -> Result<Option<String>, String> {
    let Some(algo) = algo else {
        return match ty {
            None => Ok(None),
            Some(_) => Err("x-amz-checksum-type requires x-amz-checksum-algorithm".into()),
        };
    };
    let ty = match ty {
        Some(t) => t.to_ascii_uppercase(),
        None if algo == "crc64nvme" => FULL_OBJECT.into(),
        None => COMPOSITE.into(),
    };
    match (algo, ty.as_str()) {
        ("crc64nvme", COMPOSITE) => Err("CRC64NVME supports only FULL_OBJECT checksums".into()),
        ("sha1" | "sha256", FULL_OBJECT) => Err(format!(
            "{} supports only COMPOSITE checksums",
            algo.to_ascii_uppercase()
        )),
        (_, COMPOSITE | FULL_OBJECT) => Ok(Some(ty)),
        (_, other) => Err(format!("unknown checksum type {other:?}")),
    }
}

/// The whole-object checksum of parts given as (base64 checksum, length),
/// in object order.
pub fn combine(algo: &str, ty: &str, parts: &[(String, u64)]) -> Result<String, String> {
    let mut raws = Vec::with_capacity(parts.len());
    for (b64, _) in parts {
        let raw = B64
            .decode(b64)
            .map_err(|_| format!("part checksum {b64:?} is not base64"))?;
        raws.push(raw);
    }
    match ty {
        COMPOSITE => {
            let concat: Vec<u8> = raws.concat();
            let digest = match algo {
                "crc32" => digest::<s3s::crypto::Crc32>(&concat),
                "crc32c" => digest::<s3s::crypto::Crc32c>(&concat),
                "sha1" => digest::<s3s::crypto::Sha1>(&concat),
                "sha256" => digest::<s3s::crypto::Sha256>(&concat),
                other => return Err(format!("{other} has no COMPOSITE checksum")),
            };
            Ok(format!("{}-{}", B64.encode(digest), parts.len()))
        }
        FULL_OBJECT => {
            let (alg, width) = match algo {
                "crc32" => (crc_fast::CrcAlgorithm::Crc32IsoHdlc, 4),
                "crc32c" => (crc_fast::CrcAlgorithm::Crc32Iscsi, 4),
                "crc64nvme" => (crc_fast::CrcAlgorithm::Crc64Nvme, 8),
                other => return Err(format!("{other} has no FULL_OBJECT checksum")),
            };
            let mut acc: Option<u64> = None;
            for (raw, (_, len)) in raws.iter().zip(parts) {
                if raw.len() != width {
                    return Err(format!("a {algo} checksum has {} bytes", raw.len()));
                }
                let v = raw.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b));
                acc = Some(match acc {
                    None => v,
                    Some(a) => crc_fast::checksum_combine(alg, a, v, *len),
                });
            }
            let v = acc.unwrap_or(0);
            let bytes = v.to_be_bytes();
            Ok(B64.encode(&bytes[8 - width..]))
        }
        other => Err(format!("unknown checksum type {other:?}")),
    }
}

fn digest<C: Checksum>(data: &[u8]) -> Vec<u8>
where
    C::Output: AsRef<[u8]>,
{
    let mut c = C::new();
    c.update(data);
    c.finalize().as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64_of<C: Checksum>(data: &[u8]) -> String
    where
        C::Output: AsRef<[u8]>,
    {
        B64.encode(digest::<C>(data))
    }

    #[test]
    fn full_object_crc_equals_the_crc_of_the_whole_body() {
        let body: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let cuts = [0usize, 40_000, 40_001, 100_000];
        let parts = |f: fn(&[u8]) -> String| -> Vec<(String, u64)> {
            cuts.windows(2)
                .map(|w| (f(&body[w[0]..w[1]]), (w[1] - w[0]) as u64))
                .collect()
        };
        assert_eq!(
            combine("crc32", FULL_OBJECT, &parts(b64_of::<s3s::crypto::Crc32>)).unwrap(),
            b64_of::<s3s::crypto::Crc32>(&body)
        );
        assert_eq!(
            combine("crc32c", FULL_OBJECT, &parts(b64_of::<s3s::crypto::Crc32c>)).unwrap(),
            b64_of::<s3s::crypto::Crc32c>(&body)
        );
        assert_eq!(
            combine(
                "crc64nvme",
                FULL_OBJECT,
                &parts(b64_of::<s3s::crypto::Crc64Nvme>)
            )
            .unwrap(),
            b64_of::<s3s::crypto::Crc64Nvme>(&body)
        );
    }

    #[test]
    fn composite_is_the_checksum_of_the_part_checksums() {
        let a = b64_of::<s3s::crypto::Sha256>(b"hello ");
        let b = b64_of::<s3s::crypto::Sha256>(b"world");
        let mut raw = B64.decode(&a).unwrap();
        raw.extend(B64.decode(&b).unwrap());
        let want = format!("{}-2", b64_of::<s3s::crypto::Sha256>(&raw));
        assert_eq!(
            combine("sha256", COMPOSITE, &[(a, 6), (b, 5)]).unwrap(),
            want
        );
    }

    #[test]
    fn types_are_checked() {
        assert_eq!(effective_type(None, None), Ok(None));
        assert!(effective_type(None, Some("COMPOSITE")).is_err());
        assert_eq!(
            effective_type(Some("crc32"), None),
            Ok(Some(COMPOSITE.into()))
        );
        assert_eq!(
            effective_type(Some("crc64nvme"), None),
            Ok(Some(FULL_OBJECT.into()))
        );
        assert!(effective_type(Some("crc64nvme"), Some("COMPOSITE")).is_err());
        assert!(effective_type(Some("sha256"), Some("FULL_OBJECT")).is_err());
        assert!(effective_type(Some("crc32"), Some("BOGUS")).is_err());
        assert!(combine("crc32", FULL_OBJECT, &[("!!".into(), 1)]).is_err());
    }
}
