//! Shard and stripe ids: random 128-bit values, written as exactly 32
//! lowercase hex characters.
//!
//! They are defined once, in `cairn_metadata::types` (the lowest crate, so
//! manifests and chunkservers share them) and re-exported here. A
//! [`ShardId`] is the only piece of user input the chunkserver ever turns
//! into a file path; its parser accepts exactly 32 characters of `0-9a-f`
//! (no uppercase, separators, dots or other lengths), which is what makes
//! that safe. The tests below pin that guarantee.

pub use cairn_metadata::types::{ShardId, StripeId};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_strictness() {
        let id = ShardId::random();
        let s = id.to_string();
        assert_eq!(s.len(), 32);
        assert_eq!(s.parse::<ShardId>().unwrap(), id);
        for bad in [
            "",
            "00",
            "0123456789abcdef0123456789abcdeF",
            "0123456789abcdef0123456789abcdef0",
            "../../../../etc/passwd/aaaaaaaaa",
            "..%2f..%2f..%2f..%2f..%2f..%2f..",
            "0123456789abcdef0123456789abcde\u{e9}",
            "+123456789abcdef0123456789abcdef",
        ] {
            assert!(bad.parse::<ShardId>().is_err(), "{bad:?} accepted");
        }
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<ShardId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<StripeId>("\"zz\"").is_err());
    }
}
