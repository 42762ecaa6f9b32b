//! The snapshot stream reader (`metadata/src/raft/snapshot.rs`,
//! `stage_stream`): what a follower loads from a snapshot a peer sent.
//! Input: a whole stream. Property: never panics nor allocates past the
//! input (lengths are checked against the bytes left); an accepted stream
//! re-encodes to a stream that is accepted and re-encodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(out) = cairn_metadata::raft::snapshot::fuzz_stage(data) {
        let again = cairn_metadata::raft::snapshot::fuzz_stage(&out).expect("re-encoded stream loads");
        assert_eq!(again, out);
    }
});
