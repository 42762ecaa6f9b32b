//! The gateway's upload body streaming (`src/gateway/body.rs`,
//! `VerifyingReader`, included as it is) over a fake s3s body stream.
//!
//! Input: byte 0 selects the checksum algorithms the request names (one
//! bit each, `ALGORITHMS` order; bit 5 adds a Content-MD5), byte 1 whether
//! the stream ends in an error, then `len:u8` + bytes chunks until the input
//! ends (the fuzzer picks the chunk boundaries, empty chunks included).
//!
//! Properties: never panics; the bytes read are the chunks' bytes in order;
//! with no expectation there is no mismatch; the checksums computed do not
//! depend on the chunk boundaries (a second pass with one chunk and the first
//! pass's values as the expected headers matches); a wrong expected value is
//! always a mismatch and fails the read.
#![no_main]

use std::collections::BTreeMap;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use s3s::dto::StreamingBlob;
use tokio::io::AsyncReadExt;

#[allow(dead_code)]
#[path = "../../src/gateway/body.rs"]
mod body;

#[derive(Debug)]
struct Cut;

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection cut")
    }
}

impl std::error::Error for Cut {}

fn blob(chunks: Vec<Bytes>, fail: bool) -> StreamingBlob {
    let mut items: Vec<Result<Bytes, Cut>> = chunks.into_iter().map(Ok).collect();
    if fail {
        items.push(Err(Cut));
    }
    StreamingBlob::wrap(futures::stream::iter(items))
}

/// Reads `b` to its end: the bytes and whether the read failed.
fn drain(
    b: StreamingBlob,
    expected: BTreeMap<String, String>,
    md5: Option<String>,
) -> (Vec<u8>, bool, body::Verdict) {
    let (mut r, verdict) = body::VerifyingReader::new(b, expected, None, md5, None);
    let mut out = Vec::new();
    let failed = futures::executor::block_on(r.read_to_end(&mut out)).is_err();
    drop(r);
    let v = std::mem::take(&mut *verdict.lock().unwrap_or_else(|e| e.into_inner()));
    (out, failed, v)
}

fn md5_b64(data: &[u8]) -> String {
    use base64::Engine;
    use s3s::crypto::Checksum as _;
    let mut h = s3s::crypto::Md5::new();
    h.update(data);
    base64::engine::general_purpose::STANDARD.encode(h.finalize().as_ref())
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (flags, fail) = (data[0], data[1] & 1 == 1);
    let mut chunks = Vec::new();
    let mut rest = &data[2..];
    while let Some((&n, tail)) = rest.split_first() {
        let n = (n as usize).min(tail.len());
        chunks.push(Bytes::copy_from_slice(&tail[..n]));
        rest = &tail[n..];
    }
    let whole: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();

    // Pass 1: expectations that cannot match (empty values are never a
    // checksum), so every named algorithm is computed and compared.
    let mut wrong = BTreeMap::new();
    for (i, algo) in body::ALGORITHMS.iter().enumerate() {
        if flags & (1 << i) != 0 {
            wrong.insert(algo.to_string(), String::new());
        }
    }
    let want_md5 = flags & (1 << 5) != 0;
    let (out, failed, v) = drain(
        blob(chunks.clone(), fail),
        wrong.clone(),
        want_md5.then(String::new),
    );
    if fail {
        assert!(failed, "a stream error must fail the read");
        return;
    }
    assert_eq!(out, whole, "bytes read differ from bytes sent");
    let named = !wrong.is_empty() || want_md5;
    assert_eq!(failed, named, "a wrong expected value must fail the read");
    assert_eq!(v.mismatch.is_some(), named);
    assert_eq!(
        v.checksums.keys().collect::<Vec<_>>(),
        wrong.keys().collect::<Vec<_>>(),
        "only the named algorithms are kept"
    );

    // Pass 2: the values computed over the chunks, expected over one chunk.
    let (out2, failed2, v2) = drain(
        blob(vec![Bytes::from(whole.clone())], false),
        v.checksums.clone(),
        want_md5.then(|| md5_b64(&whole)),
    );
    assert_eq!(out2, whole);
    assert!(!failed2, "chunk boundaries changed a checksum: {:?}", v2.mismatch);
    assert_eq!(v2.checksums, v.checksums);

    // No expectation: never a mismatch.
    let (_, failed3, v3) = drain(blob(chunks, false), BTreeMap::new(), None);
    assert!(!failed3 && v3.mismatch.is_none() && v3.checksums.is_empty());
});
