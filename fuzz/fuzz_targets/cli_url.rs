//! The CLI's `cairn://bucket/key` URL parser (`src/cmd/url.rs`, included
//! as it is). Input: one argument as the user typed it. Property: never
//! panics; an accepted URL names a bucket, and printing it back as
//! `cairn://bucket/key` parses to the same URL.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/cmd/url.rs"]
mod url;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = url::is_remote(s);
    let _ = s.parse::<url::LsTarget>();
    if let Ok(u) = s.parse::<url::CairnUrl>() {
        assert!(!u.bucket.is_empty());
        assert!(url::is_remote(s));
        let back: url::CairnUrl = format!("cairn://{}/{}", u.bucket, u.key)
            .parse()
            .expect("a printed URL parses");
        assert_eq!(back, u);
    }
});
