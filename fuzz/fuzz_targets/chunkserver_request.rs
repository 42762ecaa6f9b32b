//! What a chunkserver parses from a request before touching a disk: the
//! shard id in the path, the `Range` header and the shard metadata headers.
//! Input: `len` (8 bytes), then lines `name: value`; line 1 is the id, a
//! `range:` line is parsed as a Range header against `len`. Property: never
//! panics; an accepted range lies inside the payload; accepted metadata
//! round-trips through `meta_headers`.
#![no_main]

use cairn_chunkserver::api::{meta_from_headers, meta_headers, parse_range};
use cairn_chunkserver::ids::ShardId;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let len = u64::from_be_bytes(data[..8].try_into().unwrap_or([0; 8]));
    let Ok(text) = std::str::from_utf8(&data[8..]) else {
        return;
    };
    let mut lines = text.lines();
    let id = lines.next().and_then(|l| l.parse::<ShardId>().ok());
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("range") {
            if let Ok(Some(r)) = parse_range(value, len) {
                assert!(r.start < r.end && r.end <= len, "{value:?} -> {r:?} of {len}");
            }
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) {
            headers.append(n, v);
        }
    }
    if let Some(id) = id {
        assert_eq!(id.to_hex().parse::<ShardId>().ok(), Some(id));
        if let Ok(meta) = meta_from_headers(id, len, &headers) {
            let mut again = HeaderMap::new();
            for (n, v) in meta_headers(&meta) {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    again.insert(n, v);
                }
            }
            assert_eq!(meta_from_headers(id, len, &again).ok(), Some(meta));
        }
    }
});
