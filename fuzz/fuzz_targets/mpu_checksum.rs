//! The gateway's multipart whole-object checksum code (algorithm/type
//! negotiation and combination of part checksums sent by clients).
//! Input: lines; line 1 algorithm, line 2 type, then `base64 length` part
//! lines. Property: never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/gateway/mpu_checksum.rs"]
mod mpu_checksum;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.lines();
    let algo = lines.next().filter(|s| !s.is_empty());
    let ty = lines.next().filter(|s| !s.is_empty());
    let Ok(eff) = mpu_checksum::effective_type(algo, ty) else {
        return;
    };
    let parts: Vec<(String, u64)> = lines
        .take(10_000)
        .filter_map(|l| {
            let (c, n) = l.split_once(' ')?;
            Some((c.to_string(), n.parse().ok()?))
        })
        .collect();
    if let (Some(algo), Some(ty)) = (algo, eff) {
        let _ = mpu_checksum::combine(algo, &ty, &parts);
    }
});
