//! Per-shard cache of verified bearer JWTs.
//!
//! Verifying a JWT's signature costs tens of microseconds (RSA, ECDSA) —
//! more than the rest of a call's work in the gateway — and an agent sends
//! the same token with every call until it expires. A token that verified
//! is remembered with the identity it names and the time window its claims
//! hold in; a later call with the very same bytes is trusted without
//! verifying again, while the window holds and the snapshot (keys, claim
//! rules, agents) is the same generation. Only successes are kept; the cache
//! is bounded and emptied when full or when the generation changes. It is
//! the shard's own: no lock, nothing shared.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

use toolgate_core::jwt::{TokenError, TokenIdentity};

/// Most tokens remembered per shard.
const MAX_ENTRIES: usize = 4096;

/// A verified token's identity, in the shapes the call driver uses.
#[derive(Debug, Clone)]
pub(super) struct Verified {
    /// Agent id.
    pub agent: Arc<str>,
    /// End user.
    pub user: Option<Arc<str>>,
    /// The user's groups from the token.
    pub groups: Option<Arc<[Arc<str>]>>,
    /// The customer from the token's customer claim.
    pub customer: Option<Arc<str>>,
    valid_from: u64,
    valid_until: u64,
}

impl From<TokenIdentity> for Verified {
    fn from(id: TokenIdentity) -> Self {
        Self {
            agent: Arc::from(id.agent),
            user: id.user.map(Arc::from),
            groups: id
                .groups
                .map(|g| g.into_iter().map(Arc::from).collect::<Arc<[Arc<str>]>>()),
            customer: id.customer.map(Arc::from),
            valid_from: id.valid_from,
            valid_until: id.valid_until,
        }
    }
}

/// The cache.
#[derive(Default)]
pub(super) struct TokenCache {
    generation: Cell<u64>,
    map: RefCell<HashMap<Box<[u8]>, Verified>>,
}

impl TokenCache {
    /// The identity `token` names: remembered, or `verify`d now (and
    /// remembered when it verifies).
    pub fn get_or_verify(
        &self,
        generation: u64,
        token: &[u8],
        now: u64,
        verify: impl FnOnce() -> Result<TokenIdentity, TokenError>,
    ) -> Result<Verified, TokenError> {
        {
            let mut map = self.map.borrow_mut();
            if self.generation.replace(generation) != generation {
                map.clear();
            }
            if let Some(v) = map.get(token) {
                if v.valid_from <= now && now < v.valid_until {
                    return Ok(v.clone());
                }
            }
        }
        let v = Verified::from(verify()?);
        let mut map = self.map.borrow_mut();
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(Box::from(token), v.clone());
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(until: u64) -> TokenIdentity {
        TokenIdentity {
            agent: "bot".into(),
            user: Some("alice".into()),
            groups: None,
            customer: None,
            valid_from: 10,
            valid_until: until,
        }
    }

    #[test]
    fn remembered_until_expiry_or_a_new_generation() {
        let c = TokenCache::default();
        let calls = std::cell::Cell::new(0);
        let verify = || {
            calls.set(calls.get() + 1);
            Ok(id(100))
        };
        assert!(c.get_or_verify(1, b"t", 50, verify).is_ok());
        assert!(c.get_or_verify(1, b"t", 60, verify).is_ok());
        assert_eq!(calls.get(), 1, "second call is a hit");
        // Past its window the token is verified again (and refused there).
        let expired = c.get_or_verify(1, b"t", 100, || Err(TokenError::Expired));
        assert_eq!(expired.err(), Some(TokenError::Expired));
        // A new generation (rotated keys, changed rules) forgets everything.
        assert!(c.get_or_verify(2, b"t", 60, verify).is_ok());
        assert_eq!(calls.get(), 2);
        // Failures are never remembered.
        let bad = c.get_or_verify(2, b"u", 60, || Err(TokenError::BadSignature));
        assert!(bad.is_err());
        assert!(c.get_or_verify(2, b"u", 60, verify).is_ok());
        assert_eq!(calls.get(), 3);
    }
}
