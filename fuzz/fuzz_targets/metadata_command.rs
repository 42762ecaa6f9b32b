//! The metadata service's write-command decoder (the body of `/v1/write`
//! and of every Raft entry). Property: never panics; a decoded command
//! re-encodes to a stable form (encode . decode . encode = encode).
#![no_main]

use cairn_metadata::types::Command;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(cmd) = serde_json::from_slice::<Command>(data) else {
        return;
    };
    let Ok(once) = serde_json::to_vec(&cmd) else {
        return;
    };
    let again: Command = match serde_json::from_slice(&once) {
        Ok(c) => c,
        Err(e) => panic!("re-decoding an encoded command failed: {e}"),
    };
    assert_eq!(serde_json::to_vec(&again).ok(), Some(once));
});
