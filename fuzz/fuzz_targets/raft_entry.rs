//! The metadata service's binary decoders of what peers and its own disk
//! hand it: a Raft log entry as stored in redb (`raft::codec::decode_entry`:
//! format byte, then postcard; old v1 entries and JSON too) and a Raft
//! append RPC body (`decode_wire`: wire version byte, then postcard).
//! Property: never panics; an accepted entry re-encodes (v2) to bytes that
//! decode to an entry re-encoding to the same bytes; an accepted append
//! re-encodes to a body that is accepted.
#![no_main]

use cairn_metadata::raft::codec::{decode_entry, decode_wire, encode_entry, encode_wire};
use cairn_metadata::raft::TypeConfig;
use libfuzzer_sys::fuzz_target;
use openraft::raft::AppendEntriesRequest;

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = decode_entry(data) {
        let mut once = Vec::new();
        if encode_entry(&entry, &mut once).is_ok() {
            let again = match decode_entry(&once) {
                Ok(e) => e,
                Err(e) => panic!("re-decoding an encoded entry failed: {e}"),
            };
            let mut twice = Vec::new();
            assert!(encode_entry(&again, &mut twice).is_ok());
            assert_eq!(once, twice);
        }
    }
    if let Ok(req) = decode_wire::<AppendEntriesRequest<TypeConfig>>(data) {
        if let Ok(body) = encode_wire(&req) {
            if let Err(e) = decode_wire::<AppendEntriesRequest<TypeConfig>>(&body) {
                panic!("re-decoding an encoded append failed: {e}");
            }
        }
    }
});
