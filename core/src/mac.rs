//! HMAC-SHA256 (RFC 2104), the one keyed MAC toolgate uses: session ids,
//! sub-tokens and audit segment checkpoints all go through [`hmac_sha256`],
//! which is `ring`'s HMAC (the same `ring` rustls and jsonwebtoken use).

use ring::hmac::{Context, Key, HMAC_SHA256};
use subtle::ConstantTimeEq;

/// HMAC-SHA256 under `key` of whatever `feed` writes into the MAC context
/// (with [`Context::update`]).
///
/// Taking a closure rather than a byte slice lets callers MAC framed or
/// multi-part messages without first copying them into one buffer.
pub fn hmac_sha256(key: &[u8], feed: impl FnOnce(&mut Context)) -> [u8; 32] {
    let mut ctx = Context::with_key(&Key::new(HMAC_SHA256, key));
    feed(&mut ctx);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// Compares two byte strings in time independent of where they differ
/// (`subtle`, the comparison rustls uses; `ring` 0.17 keeps its own only as a
/// deprecated internal with no side-channel promise).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hmac_hex(key: &[u8], msg: &[u8]) -> String {
        hex::encode(hmac_sha256(key, |h| h.update(msg)))
    }

    #[test]
    fn rfc4231_test_case_2() {
        assert_eq!(
            hmac_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn rfc4231_test_case_6_long_key_is_hashed() {
        assert_eq!(
            hmac_hex(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn constant_time_eq_compares_length_and_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
