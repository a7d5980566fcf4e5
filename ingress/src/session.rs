//! Handshake-era session ids, unforgeable and bound to the agent.
//!
//! A session id is `hex(created ‖ nonce ‖ tag)` where the tag is an
//! HMAC-SHA256 (truncated to 128 bits) over the agent id, the creation time
//! and a random nonce, under a key drawn at start-up. Any shard verifies any
//! session with no shared table and no lock; an id presented by another
//! agent fails verification exactly like a forged one. Sessions end at their
//! age limit, on restart (new key), or on DELETE, which records the nonce in
//! a published set of terminated sessions.

use toolgate_core::mac::{constant_time_eq, hmac_sha256};

/// Bytes of the random nonce.
const NONCE: usize = 16;
/// Bytes of the tag kept.
const TAG: usize = 16;
/// Hex length of a session id.
pub const SESSION_ID_LEN: usize = 2 * (8 + NONCE + TAG);

/// A terminated session's nonce.
pub type Nonce = [u8; NONCE];

/// The key sessions are signed with.
#[derive(Clone)]
pub struct SessionKey([u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(…)")
    }
}

/// Why a presented session id is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// Malformed, forged, another agent's, or expired.
    Unknown,
}

fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    // Each part is length-prefixed so that moving bytes between parts changes the tag.
    hmac_sha256(key, |h| {
        for p in parts {
            h.update(&(p.len() as u64).to_be_bytes());
            h.update(p);
        }
    })
}

impl SessionKey {
    /// A key from 32 random bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A new session id for `agent`, created at `now` (Unix seconds).
    pub fn issue(&self, agent: &str, now: u64, nonce: Nonce) -> String {
        let created = now.to_be_bytes();
        let tag = hmac(&self.0, &[agent.as_bytes(), &created, &nonce]);
        let mut raw = Vec::with_capacity(8 + NONCE + TAG);
        raw.extend_from_slice(&created);
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&tag[..TAG]);
        hex::encode(raw)
    }

    /// Checks that `id` was issued to `agent` and is younger than `max_age`
    /// seconds; returns its nonce.
    pub fn verify(
        &self,
        agent: &str,
        id: &[u8],
        now: u64,
        max_age: u64,
    ) -> Result<Nonce, SessionError> {
        if id.len() != SESSION_ID_LEN {
            return Err(SessionError::Unknown);
        }
        let mut raw = [0u8; 8 + NONCE + TAG];
        hex::decode_to_slice(id, &mut raw).map_err(|_| SessionError::Unknown)?;
        let (created, rest) = raw.split_at(8);
        let (nonce, tag) = rest.split_at(NONCE);
        let expected = hmac(&self.0, &[agent.as_bytes(), created, nonce]);
        if !constant_time_eq(&expected[..TAG], tag) {
            return Err(SessionError::Unknown);
        }
        let mut c = [0u8; 8];
        c.copy_from_slice(created);
        let created = u64::from_be_bytes(c);
        if created > now.saturating_add(60) || now.saturating_sub(created) > max_age {
            return Err(SessionError::Unknown);
        }
        let mut n = [0u8; NONCE];
        n.copy_from_slice(nonce);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [9; 32];

    #[test]
    fn issued_session_verifies_for_its_agent_only() {
        let k = SessionKey::new(KEY);
        let id = k.issue("support-bot", 1000, [1; 16]);
        assert_eq!(id.len(), SESSION_ID_LEN);
        assert_eq!(
            k.verify("support-bot", id.as_bytes(), 1001, 3600),
            Ok([1; 16])
        );
        assert_eq!(
            k.verify("billing-bot", id.as_bytes(), 1001, 3600),
            Err(SessionError::Unknown)
        );
    }

    #[test]
    fn forged_expired_and_other_key_sessions_fail() {
        let k = SessionKey::new(KEY);
        let id = k.issue("a", 1000, [1; 16]);
        let mut forged = id.clone().into_bytes();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
        assert!(k.verify("a", &forged, 1001, 3600).is_err());
        assert!(k.verify("a", id.as_bytes(), 1000 + 3601, 3600).is_err());
        assert!(SessionKey::new([8; 32])
            .verify("a", id.as_bytes(), 1001, 3600)
            .is_err());
        assert!(k.verify("a", b"short", 1001, 3600).is_err());
        assert!(k.verify("a", &[b'z'; SESSION_ID_LEN], 1001, 3600).is_err());
    }
}
