//! Sub-token files: the signing key, the ledger of minted tokens and the
//! revocation list, all under `[auth.subtokens] dir`.
//!
//! `toolgate token mint/revoke/list` write here; the running gateway reads
//! the key at start and the revocation list at start and whenever it
//! changes, publishing a new snapshot so every shard refuses a revoked token
//! from its next request. The ledger holds claims only, never tokens.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toolgate_core::secret::Secret;
use toolgate_core::subtoken::{self, Claims, Verifier};
use toolgate_sinks::key::{load_key, KeySource};

/// Why the sub-token files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SubtokenError {
    /// The signing key could not be read or created.
    #[error("sub-token key: {0}")]
    Key(#[from] toolgate_sinks::key::KeyError),
    /// A file could not be read or written.
    #[error("`{path}`: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

fn file_err(path: &Path) -> impl FnOnce(std::io::Error) -> SubtokenError + '_ {
    move |source| SubtokenError::File {
        path: path.to_path_buf(),
        source,
    }
}

/// The revocation list's path.
pub fn revoked_path(dir: &Path) -> PathBuf {
    dir.join("revoked")
}

fn ledger_path(dir: &Path) -> PathBuf {
    dir.join("minted.jsonl")
}

/// The signing key, generated (32 random bytes, mode 0600) at first use.
pub fn key(dir: &Path) -> Result<Secret, SubtokenError> {
    let k = load_key(&KeySource::GeneratedFile(dir.join("signing.key")))?;
    if let Some(path) = &k.generated {
        tracing::info!(key = %path.display(), "generated the sub-token signing key");
    }
    Ok(Secret::new(k.bytes))
}

/// Revoked token ids (none while the list does not exist).
pub fn revoked(dir: &Path) -> Result<HashSet<String>, SubtokenError> {
    let path = revoked_path(dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(subtoken::parse_revoked(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
        Err(e) => Err(file_err(&path)(e)),
    }
}

/// The verifier for the gateway: key and current revocations.
pub fn verifier(dir: &Path) -> Result<Arc<Verifier>, SubtokenError> {
    Ok(Arc::new(Verifier::new(key(dir)?, revoked(dir)?)))
}

fn append(path: &Path, line: &str) -> Result<(), SubtokenError> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(file_err(path))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(file_err(path))?;
    f.write_all(line.as_bytes())
        .and_then(|()| f.sync_data())
        .map_err(file_err(path))
}

/// Mints a token for `claims`, recording the claims (not the token) in
/// the ledger first, so every token in circulation is listed.
pub fn mint(dir: &Path, claims: &Claims) -> Result<String, SubtokenError> {
    let key = key(dir)?;
    let mut line = serde_json::to_string(claims).unwrap_or_default();
    line.push('\n');
    append(&ledger_path(dir), &line)?;
    Ok(subtoken::mint(&key, claims))
}

/// Adds `jti` to the revocation list.
pub fn revoke(dir: &Path, jti: &str, now: u64) -> Result<(), SubtokenError> {
    append(&revoked_path(dir), &format!("{jti}  # revoked at {now}\n"))
}

/// Every minted token's claims, in minting order.
pub fn minted(dir: &Path) -> Result<Vec<Claims>, SubtokenError> {
    let path = ledger_path(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(file_err(&path)(e)),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_list_revoke_round_trip() {
        let dir = std::env::temp_dir().join(format!("toolgate-subtokens-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let claims = Claims {
            jti: "ab12".into(),
            agent: "a".into(),
            user: None,
            tools: None,
            customer: None,
            iat: 1,
            exp: 100,
        };
        let token = mint(&dir, &claims).unwrap();
        let v = verifier(&dir).unwrap();
        assert_eq!(v.verify(token.as_bytes(), 50).ok(), Some(claims.clone()));
        let listed = minted(&dir).unwrap();
        assert_eq!(listed, vec![claims]);
        let ledger = std::fs::read_to_string(ledger_path(&dir)).unwrap_or_default();
        assert!(!ledger.contains(&token), "the ledger never holds tokens");
        revoke(&dir, "ab12", 60).unwrap();
        let v = verifier(&dir).unwrap();
        assert!(v.verify(token.as_bytes(), 50).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
