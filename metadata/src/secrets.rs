//! S3 secrets at rest: sealed under a key-encryption key (KEK) that lives
//! in a file on each metadata node (`--secrets-key-file`), never in the
//! Raft log, the state machine or snapshots.
//!
//! # Sealed form
//! ```text
//! cairn-sealed-v1:<kek id, 16 hex>:<hex of nonce (24 bytes) ++ ciphertext ++ tag (16 bytes)>
//! ```
//! XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`), a random 192-bit
//! nonce per seal (random nonces are safe at that size), associated data
//! `"cairn access key v1\0" ++ access key id`, so a sealed secret copied
//! onto another key id does not open. The KEK id is
//! `derive_key("cairn secrets key id v1", kek)[..8]`: it names the KEK a
//! secret was sealed under (a node with another KEK answers "wrong key",
//! not "corrupt") and reveals nothing of it.
//!
//! A secret without the [`SEALED_PREFIX`] is a row written before secrets
//! were sealed (an older data dir): it is read as it is
//! ([`Stored::Legacy`]) and sealed by the leader's key sealer (see
//! `node::workers`), so plaintext does not outlive an upgrade in the state.
//!
//! The proposer seals (the metadata node that receives the `PutAccessKey`
//! or `RotateAccessKey` from the API, before it is proposed); the node
//! answering `GetAccessKey` opens. `apply` never sees a KEK.

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// First bytes of every sealed secret: the format marker.
pub const SEALED_PREFIX: &str = "cairn-sealed-v1:";

/// Bytes of a KEK.
pub const KEK_LEN: usize = 32;

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const AAD_CONTEXT: &[u8] = b"cairn access key v1\0";
const ID_CONTEXT: &str = "cairn secrets key id v1";

/// Why a secret could not be sealed or opened. Never carries secret
/// bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    /// This node has no KEK.
    #[error(
        "this metadata node has no secrets key: start it with --secrets-key-file PATH \
         (the same file on every metadata node); S3 secrets are stored only encrypted"
    )]
    NoKey,
    /// The secret was sealed under another KEK.
    #[error(
        "the secret of access key {id} was sealed under secrets key {sealed_with}, but this \
         node's --secrets-key-file is key {ours}: every metadata node needs the same file"
    )]
    WrongKey {
        /// The access key id.
        id: String,
        /// KEK id in the sealed secret.
        sealed_with: String,
        /// This node's KEK id.
        ours: String,
    },
    /// Malformed, truncated or tampered with (or moved to another key id).
    #[error("the stored secret of access key {0} is corrupt (it does not open)")]
    Corrupt(String),
    /// A KEK file's content is not 64 hex digits.
    #[error("a secrets key is {KEK_LEN} bytes as 64 hex digits: {0}")]
    BadKey(String),
    /// A plaintext that looks sealed, or an empty one.
    #[error("refused secret for access key {0}: empty or already in the sealed format")]
    BadPlaintext(String),
}

/// A key-encryption key. Its `Debug` shows only its id; the bytes are
/// zeroed on drop.
pub struct SecretsKey {
    cipher: XChaCha20Poly1305,
    key: [u8; KEK_LEN],
    id: String,
}

impl Clone for SecretsKey {
    fn clone(&self) -> Self {
        SecretsKey::from_bytes(self.key)
    }
}

impl Drop for SecretsKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretsKey(id {}, <redacted>)", self.id)
    }
}

/// What a stored secret is.
#[derive(PartialEq, Eq)]
pub enum Stored<'a> {
    /// Sealed: the KEK id and the hex payload.
    Sealed {
        /// KEK id.
        kek: &'a str,
        /// nonce ++ ciphertext ++ tag, hex.
        payload: &'a str,
    },
    /// Plaintext of an older data dir.
    Legacy,
}

impl fmt::Debug for Stored<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stored::Sealed { kek, .. } => write!(f, "Sealed(kek {kek})"),
            Stored::Legacy => f.write_str("Legacy(<redacted>)"),
        }
    }
}

/// Whether `stored` is in the sealed format (by its marker; it may still
/// fail to open).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(SEALED_PREFIX)
}

/// Parses a stored secret's form. A marker with a malformed rest is
/// [`SecretsError::Corrupt`], never taken for plaintext.
pub fn classify<'a>(id: &str, stored: &'a str) -> Result<Stored<'a>, SecretsError> {
    let Some(rest) = stored.strip_prefix(SEALED_PREFIX) else {
        return Ok(Stored::Legacy);
    };
    let (kek, payload) = rest
        .split_once(':')
        .ok_or_else(|| SecretsError::Corrupt(id.to_string()))?;
    if kek.len() != 16 || !kek.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SecretsError::Corrupt(id.to_string()));
    }
    Ok(Stored::Sealed { kek, payload })
}

fn aad(id: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(AAD_CONTEXT.len() + id.len());
    a.extend_from_slice(AAD_CONTEXT);
    a.extend_from_slice(id.as_bytes());
    a
}

impl SecretsKey {
    /// A KEK from its bytes.
    pub fn from_bytes(key: [u8; KEK_LEN]) -> SecretsKey {
        let id = hex::encode(&blake3::derive_key(ID_CONTEXT, &key)[..8]);
        SecretsKey {
            cipher: XChaCha20Poly1305::new(&key.into()),
            key,
            id,
        }
    }

    /// A KEK from a key file's content: 64 hex digits (surrounding
    /// whitespace ignored).
    pub fn from_hex(text: &str) -> Result<SecretsKey, SecretsError> {
        let t = text.trim();
        let mut key = [0u8; KEK_LEN];
        if t.len() != 2 * KEK_LEN {
            return Err(SecretsError::BadKey(format!(
                "got {} characters, want {}",
                t.len(),
                2 * KEK_LEN
            )));
        }
        hex::decode_to_slice(t, &mut key)
            .map_err(|_| SecretsError::BadKey("not hex digits".into()))?;
        if key.iter().all(|b| *b == 0) {
            return Err(SecretsError::BadKey("all zero".into()));
        }
        let k = SecretsKey::from_bytes(key);
        zeroize::Zeroize::zeroize(&mut key);
        Ok(k)
    }

    /// A fresh random KEK as a key file's content (64 hex digits and a
    /// newline).
    pub fn generate_hex() -> String {
        let mut key: [u8; KEK_LEN] = rand::random();
        let s = format!("{}\n", hex::encode(key));
        zeroize::Zeroize::zeroize(&mut key);
        s
    }

    /// This KEK's public id (16 hex digits).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plaintext`, the secret of access key `id`.
    pub fn seal(&self, id: &str, plaintext: &str) -> Result<String, SecretsError> {
        if plaintext.is_empty() || is_sealed(plaintext) {
            return Err(SecretsError::BadPlaintext(id.to_string()));
        }
        let nonce: [u8; NONCE_LEN] = rand::random();
        let a = aad(id);
        let ct = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &a,
                },
            )
            .map_err(|_| SecretsError::Corrupt(id.to_string()))?;
        let mut raw = Vec::with_capacity(NONCE_LEN + ct.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&ct);
        Ok(format!("{SEALED_PREFIX}{}:{}", self.id, hex::encode(raw)))
    }

    /// Opens a sealed secret of access key `id`. Legacy plaintext is not
    /// handled here (see [`open_stored`]).
    fn open_sealed(&self, id: &str, kek: &str, payload: &str) -> Result<String, SecretsError> {
        if kek != self.id {
            return Err(SecretsError::WrongKey {
                id: id.to_string(),
                sealed_with: kek.to_string(),
                ours: self.id.clone(),
            });
        }
        let corrupt = || SecretsError::Corrupt(id.to_string());
        let raw = hex::decode(payload).map_err(|_| corrupt())?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(corrupt());
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let a = aad(id);
        let pt = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &a })
            .map_err(|_| corrupt())?;
        String::from_utf8(pt).map_err(|_| corrupt())
    }
}

/// The plaintext of a stored secret of access key `id`: opened with `kek`
/// when sealed (no KEK, another KEK or a corrupt value is an error, never
/// the stored bytes), as it is when it is legacy plaintext.
pub fn open_stored(
    kek: Option<&SecretsKey>,
    id: &str,
    stored: &str,
) -> Result<String, SecretsError> {
    match classify(id, stored)? {
        Stored::Legacy => Ok(stored.to_string()),
        Stored::Sealed { kek: k, payload } => match kek {
            None => Err(SecretsError::NoKey),
            Some(key) => key.open_sealed(id, k, payload),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek() -> SecretsKey {
        SecretsKey::from_hex(&SecretsKey::generate_hex()).unwrap()
    }

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_id() {
        let k = kek();
        let s = k.seal("CK1", "the-plaintext-secret").unwrap();
        assert!(is_sealed(&s));
        assert!(!s.contains("the-plaintext-secret"));
        assert!(!s.contains(&hex::encode("the-plaintext-secret")));
        assert_eq!(
            open_stored(Some(&k), "CK1", &s).unwrap(),
            "the-plaintext-secret"
        );
        // Random nonces: sealing twice differs.
        assert_ne!(k.seal("CK1", "the-plaintext-secret").unwrap(), s);
        // Another key id (a row copied under another id) does not open.
        assert_eq!(
            open_stored(Some(&k), "CK2", &s),
            Err(SecretsError::Corrupt("CK2".into()))
        );
        // Another KEK: a clear error naming both.
        let other = kek();
        match open_stored(Some(&other), "CK1", &s) {
            Err(SecretsError::WrongKey {
                sealed_with, ours, ..
            }) => {
                assert_eq!(sealed_with, k.id());
                assert_eq!(ours, other.id());
            }
            r => panic!("{r:?}"),
        }
        // No KEK.
        assert_eq!(open_stored(None, "CK1", &s), Err(SecretsError::NoKey));
        // Tampered: every byte flip of the payload fails.
        let cut = s.len() - 2;
        let mut bad = s.clone();
        bad.replace_range(cut.., if s.ends_with("00") { "11" } else { "00" });
        assert!(matches!(
            open_stored(Some(&k), "CK1", &bad),
            Err(SecretsError::Corrupt(_))
        ));
        let truncated = &s[..SEALED_PREFIX.len() + 17 + 10];
        assert!(matches!(
            open_stored(Some(&k), "CK1", truncated),
            Err(SecretsError::Corrupt(_))
        ));
        assert!(matches!(
            open_stored(Some(&k), "CK1", "cairn-sealed-v1:nonsense"),
            Err(SecretsError::Corrupt(_))
        ));
    }

    #[test]
    fn legacy_plaintext_reads_as_it_is_and_sealing_refuses_bad_input() {
        let k = kek();
        assert_eq!(open_stored(Some(&k), "CK1", "abc").unwrap(), "abc");
        assert_eq!(open_stored(None, "CK1", "abc").unwrap(), "abc");
        assert!(k.seal("CK1", "").is_err());
        let s = k.seal("CK1", "x").unwrap();
        assert!(k.seal("CK1", &s).is_err());
    }

    #[test]
    fn key_files_must_be_64_hex_digits_and_debug_shows_none_of_it() {
        let hexkey = SecretsKey::generate_hex();
        assert_eq!(hexkey.len(), 65);
        let k = SecretsKey::from_hex(&hexkey).unwrap();
        let d = format!("{k:?}");
        assert!(!d.contains(hexkey.trim()), "{d}");
        assert!(d.contains(k.id()));
        assert!(SecretsKey::from_hex("").is_err());
        assert!(SecretsKey::from_hex("abcd").is_err());
        assert!(SecretsKey::from_hex(&"zz".repeat(32)).is_err());
        assert!(SecretsKey::from_hex(&"00".repeat(32)).is_err());
        assert_eq!(
            SecretsKey::from_hex(&"ab".repeat(32)).unwrap().id().len(),
            16
        );
        let s = k.clone().seal("CK1", "p").unwrap();
        assert_eq!(open_stored(Some(&k), "CK1", &s).unwrap(), "p");
    }
}
