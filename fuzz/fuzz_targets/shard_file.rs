//! The shard file reader: header decode, then payload verification, on
//! arbitrary file contents. Property: never panics; whatever decodes
//! re-encodes to the same header bytes; a verified payload hashes to the
//! header's BLAKE3.
#![no_main]

use cairn_chunkserver::format::{decode_header, encode_header, verify_payload, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(meta) = decode_header(data) else {
        return;
    };
    assert_eq!(&encode_header(&meta)[..], &data[..HEADER_LEN]);
    let payload = &data[HEADER_LEN..];
    if verify_payload(&meta, payload).is_ok() {
        assert_eq!(payload.len() as u64, meta.len);
        assert_eq!(blake3::hash(payload), meta.blake3);
    }
});
