//! Sources of caller identity the snapshot carries beyond the
//! configuration: keys fetched from `auth.jwt.jwks_url`, and the sub-token
//! verifier with its revocations (the file's and the admin API's).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use toolgate_control::State;
use toolgate_core::subtoken::Verifier;

use super::{ReloadError, Shared};

/// Why a fetched JWKS was not installed.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// `[auth.jwt]` was removed from the configuration since the fetch began.
    #[error("`[auth.jwt]` is no longer configured")]
    NotConfigured,
    /// The key set does not parse.
    #[error("{0}")]
    Invalid(String),
}

/// The sub-token verifier with the control state's revocations (made
/// through the admin API) added to the revocation file's.
pub(super) fn with_control_revocations(
    verifier: Option<Arc<Verifier>>,
    control: &State,
) -> Option<Arc<Verifier>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let revoked = control.revoked_subtokens(now);
    match verifier {
        Some(v) if !revoked.is_empty() => Some(Arc::new(v.with_revoked(revoked))),
        other => other,
    }
}

impl Shared {
    /// Asks the JWKS task for a fetch (a token named an unknown key).
    pub fn want_jwks(&self) {
        if self.config.jwks_url.is_some() {
            self.jwks_wanted.store(true, Ordering::Release);
        }
    }

    /// Installs a JWKS fetched from `auth.jwt.jwks_url` and publishes it;
    /// returns whether it differed from the previous one. A JWKS that does
    /// not parse is refused and the previous keys stay.
    pub fn set_jwks(&self, text: String) -> Result<bool, JwksError> {
        let rules = {
            let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
            cur.file.jwt.as_ref().map(|v| v.rules().clone())
        };
        let Some(rules) = rules else {
            return Err(JwksError::NotConfigured);
        };
        toolgate_core::jwt::Verifier::from_jwks(&text, rules)
            .map_err(|e| JwksError::Invalid(e.to_string()))?;
        {
            let mut cur = self.jwks.lock().unwrap_or_else(|p| p.into_inner());
            if cur.as_deref() == Some(text.as_str()) {
                return Ok(false);
            }
            *cur = Some(text);
        }
        let mut cats = self.catalogs.lock().unwrap_or_else(|p| p.into_inner());
        self.publish(&mut cats);
        Ok(true)
    }

    /// The sub-token verifier of `[auth.subtokens]` (its key and the
    /// revocation file's ids), for the admin API to mint with.
    pub fn subtoken_verifier(&self) -> Option<Arc<Verifier>> {
        self.subtokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the sub-token revocation list alone and publishes it: a
    /// revocation must not wait on (or be blocked by) a configuration edit.
    /// Returns the new generation, or why the list could not be read (the
    /// previous list stays in force).
    pub fn reload_revocations(&self) -> Result<u64, ReloadError> {
        let dir = {
            let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
            cur.file.subtoken_dir.clone()
        };
        let Some(dir) = dir else {
            return Ok(self.snapshot.generation());
        };
        let verifier = crate::subtokens::verifier(&dir)
            .map_err(|e| ReloadError::Revocations(e.to_string()))?;
        *self.subtokens.lock().unwrap_or_else(|p| p.into_inner()) = Some(verifier);
        let mut cats = self.catalogs.lock().unwrap_or_else(|p| p.into_inner());
        self.publish(&mut cats);
        Ok(self.snapshot.generation())
    }

    /// The sub-token revocation list, when sub-tokens are configured.
    pub fn revocation_file(&self) -> Option<std::path::PathBuf> {
        let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        cur.file
            .subtoken_dir
            .as_deref()
            .map(crate::subtokens::revoked_path)
    }
}
