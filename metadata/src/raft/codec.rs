//! Binary encodings of the Raft layer: log entries and RPC bodies in
//! postcard, each behind a leading format byte.
//!
//! # Log entry values (table `raft_log`)
//! - `0x02` ([`ENTRY_POSTCARD_V2`]) then postcard `openraft::Entry<TypeConfig>`:
//!   what this build writes. Version 2 added `tags` to `ObjectManifest`
//!   and `UploadInfo`.
//! - `0x01` ([`ENTRY_POSTCARD_V1`]): the same without those fields; still
//!   read: fields added in version 2 are decoded as empty without reading
//!   a byte ([`added_in_entry_v2`]).
//! - `{` (0x7B): a JSON entry written by log format 1 (before postcard);
//!   still read, never written, so an existing data dir keeps working.
//!
//! Any other first byte is refused as corrupt. A new encoding takes a new
//! first byte and keeps reading the older ones.
//!
//! # RPC bodies (requests and 200 replies of `/raft/*`)
//! One byte [`WIRE_VERSION`], then postcard. A peer that sends another first
//! byte (an older build's JSON starts with `{`) is refused with a 400 that
//! names both versions; a reply with another first byte is a transport
//! error, never decoded.
//!
//! # `Option` fields skipped in JSON
//! postcard has no field names, so a field skipped by
//! `#[serde(skip_serializing_if = ..)]` would shift every field after it.
//! Such fields reachable from [`crate::types::Command`] use
//! [`skip_none_in_json`] instead of `Option::is_none`: it skips a `None` in
//! JSON (the HTTP API keeps its shape) and never while this module encodes
//! postcard.

use std::cell::Cell;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Entry, StoreError};

/// First byte of a log entry encoded as postcard, version 1.
pub const ENTRY_POSTCARD_V1: u8 = 0x01;

/// First byte of a log entry encoded as postcard, version 2 (object tags).
pub const ENTRY_POSTCARD_V2: u8 = 0x02;

/// First byte of every Raft RPC body (request and reply): postcard, wire
/// version 3 (version 1 was the JSON of older builds, which starts with
/// `{` and carries no version byte; version 2 lacked object tags, so its
/// entries would not decode the same).
pub const WIRE_VERSION: u8 = 3;

/// The previous wire version, still accepted on requests so a node of
/// this build serves peers of the previous one during a rolling upgrade:
/// its entries are decoded as log format 1 (no object tags) and the reply
/// goes back as version 2 (replies carry no commands, so their encoding
/// is the same in both versions).
pub const WIRE_VERSION_V2: u8 = 2;

thread_local! {
    /// Set while this thread encodes postcard (see the module docs).
    static BINARY: Cell<bool> = const { Cell::new(false) };
    /// Set while this thread decodes a log entry of format 1.
    static ENTRY_V1: Cell<bool> = const { Cell::new(false) };
}

/// `skip_serializing_if` predicate for map fields reachable from a Raft
/// entry: skips an empty map in JSON, never in postcard.
pub fn skip_empty_in_json<K, V>(m: &std::collections::BTreeMap<K, V>) -> bool {
    m.is_empty() && !BINARY.with(Cell::get)
}

/// `deserialize_with` of fields added in log entry format 2: while a
/// format-1 entry is decoded the field was never written, so it is the
/// default and no byte is read; otherwise it decodes as usual.
pub fn added_in_entry_v2<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de> + Default,
{
    if ENTRY_V1.with(Cell::get) {
        Ok(T::default())
    } else {
        T::deserialize(d)
    }
}

/// Restores the previous format-1 flag on drop.
struct EntryV1Guard(bool);

impl Drop for EntryV1Guard {
    fn drop(&mut self) {
        ENTRY_V1.with(|b| b.set(self.0));
    }
}

/// `skip_serializing_if` predicate for `Option` fields reachable from a
/// Raft entry: skips `None` in JSON, never in postcard (see the module
/// docs).
pub fn skip_none_in_json<T>(v: &Option<T>) -> bool {
    v.is_none() && !BINARY.with(Cell::get)
}

/// Restores the previous flag on drop (also when serialization panics).
struct BinaryGuard(bool);

impl Drop for BinaryGuard {
    fn drop(&mut self) {
        BINARY.with(|b| b.set(self.0));
    }
}

/// Appends `value` as postcard to `out`, with every field present.
pub fn postcard_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), postcard::Error> {
    let _guard = BinaryGuard(BINARY.with(|b| b.replace(true)));
    postcard::to_io(value, out).map(|_| ())
}

/// Decodes postcard that must span all of `bytes`.
pub fn postcard_exact<T: DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, StoreError> {
    let (v, rest) = postcard::take_from_bytes::<T>(bytes)
        .map_err(|e| StoreError::corrupt(what, e.to_string()))?;
    if !rest.is_empty() {
        return Err(StoreError::corrupt(
            what,
            format!("{} unexpected bytes after the value", rest.len()),
        ));
    }
    Ok(v)
}

/// Encodes a log entry (format byte, then postcard) into `out`, clearing it
/// first.
pub fn encode_entry(entry: &Entry, out: &mut Vec<u8>) -> Result<(), StoreError> {
    out.clear();
    out.push(ENTRY_POSTCARD_V2);
    postcard_into(entry, out).map_err(|e| StoreError::corrupt("log entry", e.to_string()))
}

/// Decodes a log entry in any format this build reads.
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, StoreError> {
    match bytes.first() {
        Some(&ENTRY_POSTCARD_V2) => postcard_exact(&bytes[1..], "log entry"),
        Some(&ENTRY_POSTCARD_V1) => {
            let _guard = EntryV1Guard(ENTRY_V1.with(|b| b.replace(true)));
            postcard_exact(&bytes[1..], "log entry")
        }
        Some(b'{') => Ok(serde_json::from_slice(bytes)?),
        Some(b) => Err(StoreError::corrupt(
            "log entry",
            format!("unknown format byte {b:#04x}"),
        )),
        None => Err(StoreError::corrupt("log entry", "empty value")),
    }
}

/// Encodes an RPC body: [`WIRE_VERSION`], then postcard.
pub fn encode_wire<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    encode_wire_as(WIRE_VERSION, value)
}

/// Encodes an RPC body behind `version` (a reply to a peer that spoke
/// [`WIRE_VERSION_V2`]).
pub fn encode_wire_as<T: Serialize>(version: u8, value: &T) -> Result<Vec<u8>, postcard::Error> {
    let mut out = vec![version];
    postcard_into(value, &mut out)?;
    Ok(out)
}

/// Why an RPC body could not be decoded.
#[derive(Debug)]
pub enum WireError {
    /// The peer speaks another wire version (1 for JSON bodies).
    Version {
        /// The peer's version.
        found: u8,
    },
    /// The body is empty.
    Empty,
    /// The body does not decode.
    Decode(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Version { found } => write!(
                f,
                "Raft wire version mismatch: the peer sent version {found}{}, this node speaks version {WIRE_VERSION}",
                if *found == 1 { " (JSON, an older build)" } else { "" }
            ),
            WireError::Empty => f.write_str("empty Raft RPC body"),
            WireError::Decode(why) => write!(f, "cannot decode Raft RPC body: {why}"),
        }
    }
}

impl std::error::Error for WireError {}

/// Decodes an RPC body written by [`encode_wire`], refusing other versions.
pub fn decode_wire<T: DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    match body.first() {
        None => Err(WireError::Empty),
        Some(&version @ (WIRE_VERSION | WIRE_VERSION_V2)) => {
            let _guard = (version == WIRE_VERSION_V2)
                .then(|| EntryV1Guard(ENTRY_V1.with(|b| b.replace(true))));
            let (v, rest) = postcard::take_from_bytes::<T>(&body[1..])
                .map_err(|e| WireError::Decode(e.to_string()))?;
            if !rest.is_empty() {
                return Err(WireError::Decode(format!(
                    "{} unexpected bytes after the value",
                    rest.len()
                )));
            }
            Ok(v)
        }
        Some(b'{') => Err(WireError::Version { found: 1 }),
        Some(&found) => Err(WireError::Version { found }),
    }
}
