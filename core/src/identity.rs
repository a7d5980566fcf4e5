//! Agent identity by API key.
//!
//! Keys are never stored: the configuration holds their SHA-256, and a
//! presented key is hashed and looked up. A lookup by digest reveals nothing
//! about other keys, so no constant-time comparison is needed.

use sha2::{Digest, Sha256};

/// SHA-256 of an API key.
pub type KeyHash = [u8; 32];

/// Prefix of keys minted by `toolgate key new`, so leaked keys are recognisable.
pub const KEY_PREFIX: &str = "tg_";

/// Hashes a presented API key.
pub fn key_hash(key: &[u8]) -> KeyHash {
    Sha256::digest(key).into()
}

/// Parses a 64-digit hex SHA-256.
pub fn parse_key_hash(hex_digest: &str) -> Option<KeyHash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut out).ok()?;
    Some(out)
}

/// Formats fresh random bytes as a key, and returns it with its hex hash.
pub fn format_key(random: &[u8; 32]) -> (String, String) {
    let key = format!("{KEY_PREFIX}{}", hex::encode(random));
    let hash = hex::encode(key_hash(key.as_bytes()));
    (key, hash)
}

/// Why a request carries no usable credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    /// No `Authorization` header.
    Missing,
    /// Present but not `Bearer <token>`.
    Malformed,
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(value: Option<&[u8]>) -> Result<&[u8], BearerError> {
    let v = value.ok_or(BearerError::Missing)?;
    if v.len() < 7 || !v[..7].eq_ignore_ascii_case(b"bearer ") {
        return Err(BearerError::Malformed);
    }
    let token = v[7..].trim_ascii();
    if token.is_empty() || token.iter().any(|b| !b.is_ascii_graphic()) {
        return Err(BearerError::Malformed);
    }
    Ok(token)
}

/// Checks a customer (tenant) id as configured, minted or claimed: 1 to
/// 256 printable characters, no spaces (it names a counter and a metric
/// label, and goes into syslog structured data).
pub fn check_customer(id: &str) -> Result<(), &'static str> {
    if id.is_empty() || id.len() > 256 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a customer id is 1 to 256 printable characters without spaces");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatted_key_hashes_to_its_printed_hash() {
        let (key, hash) = format_key(&[7u8; 32]);
        assert!(key.starts_with(KEY_PREFIX));
        assert_eq!(parse_key_hash(&hash), Some(key_hash(key.as_bytes())));
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(Some(b"Bearer abc")), Ok(&b"abc"[..]));
        assert_eq!(bearer(Some(b"bearer  abc ")), Ok(&b"abc"[..]));
        assert_eq!(bearer(None), Err(BearerError::Missing));
        assert_eq!(bearer(Some(b"Basic abc")), Err(BearerError::Malformed));
        assert_eq!(bearer(Some(b"Bearer ")), Err(BearerError::Malformed));
        assert_eq!(bearer(Some(b"Bearer a b")), Err(BearerError::Malformed));
    }

    #[test]
    fn hash_hex_must_be_64_digits() {
        assert!(parse_key_hash("ab").is_none());
        assert!(parse_key_hash(&"g".repeat(64)).is_none());
        assert!(parse_key_hash(&"0".repeat(64)).is_some());
    }

    #[test]
    fn customer_ids_are_printable_labels() {
        assert!(check_customer("acme-42").is_ok());
        for bad in ["", "a b", "tab\t", &"x".repeat(257)] {
            assert!(check_customer(bad).is_err(), "{bad:?}");
        }
    }
}
