//! Where the checkpoint key comes from.
//!
//! The key MACs segment seals ([`crate::segment::Seal`]). It is the content
//! of an environment variable or a file, surrounding whitespace removed, used
//! as HMAC key bytes. With neither configured, toolgate generates 32 random
//! bytes at first start into `<audit dir>/checkpoint.key` (hex, mode 0600):
//! convenient, but a key beside the log only proves integrity against someone
//! who cannot read that file — production setups should keep the key elsewhere.

use std::path::{Path, PathBuf};

/// Name of the generated key file inside the audit directory.
pub const GENERATED_KEY_FILE: &str = "checkpoint.key";

/// Shortest key accepted, bytes.
pub const MIN_KEY_LEN: usize = 16;

/// Where to read the key from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// An environment variable.
    Env(String),
    /// A file.
    File(PathBuf),
    /// `<dir>/checkpoint.key`, created if missing.
    Generated(PathBuf),
    /// This file, created with a random key if missing (other keys toolgate
    /// generates for itself, e.g. the sub-token key).
    GeneratedFile(PathBuf),
}

/// Why the key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The variable is unset or not UTF-8.
    #[error("the checkpoint key variable `{0}` is not set")]
    EnvUnset(String),
    /// The file could not be read or created.
    #[error("cannot read or create the key file `{path}`: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Too short to be a key.
    #[error("the key from {0} is shorter than 16 bytes")]
    TooShort(String),
    /// No randomness for a new key.
    #[error("no randomness from the OS for a new key: {0}")]
    Random(String),
}

/// A loaded key, and whether it was generated just now.
#[derive(Clone)]
pub struct CheckpointKey {
    /// The key bytes.
    pub bytes: Vec<u8>,
    /// Generated at this start (callers announce it).
    pub generated: Option<PathBuf>,
}

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckpointKey(…)")
    }
}

fn trimmed(bytes: &[u8]) -> Vec<u8> {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    bytes[start..end.max(start)].to_vec()
}

fn checked(bytes: Vec<u8>, from: String) -> Result<Vec<u8>, KeyError> {
    if bytes.len() < MIN_KEY_LEN {
        return Err(KeyError::TooShort(from));
    }
    Ok(bytes)
}

/// Loads (or for [`KeySource::Generated`], creates) the key.
pub fn load_key(source: &KeySource) -> Result<CheckpointKey, KeyError> {
    match source {
        KeySource::Env(var) => {
            let v = std::env::var(var).map_err(|_| KeyError::EnvUnset(var.clone()))?;
            Ok(CheckpointKey {
                bytes: checked(trimmed(v.as_bytes()), format!("`{var}`"))?,
                generated: None,
            })
        }
        KeySource::File(path) => read_file(path),
        KeySource::Generated(dir) => {
            load_key(&KeySource::GeneratedFile(dir.join(GENERATED_KEY_FILE)))
        }
        KeySource::GeneratedFile(path) => {
            let path = path.clone();
            match read_file(&path) {
                Err(KeyError::File { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    generate(&path)
                }
                other => other,
            }
        }
    }
}

fn read_file(path: &Path) -> Result<CheckpointKey, KeyError> {
    let bytes = std::fs::read(path).map_err(|source| KeyError::File {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(CheckpointKey {
        bytes: checked(trimmed(&bytes), format!("`{}`", path.display()))?,
        generated: None,
    })
}

fn generate(path: &Path) -> Result<CheckpointKey, KeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| KeyError::Random(e.to_string()))?;
    let text = hex::encode(raw);
    let io = |source| KeyError::File {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // create_new: two starts racing must not overwrite each other's key.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.write_all(b"\n").map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(CheckpointKey {
        bytes: text.into_bytes(),
        generated: Some(path.to_path_buf()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("toolgate-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = load_key(&KeySource::Generated(dir.clone()));
        let first = first.unwrap();
        assert!(first.generated.is_some());
        assert_eq!(first.bytes.len(), 64);
        let mode = std::fs::metadata(dir.join(GENERATED_KEY_FILE))
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600);
        let again = load_key(&KeySource::Generated(dir.clone()));
        let again = again.unwrap();
        assert_eq!(again.bytes, first.bytes);
        assert!(again.generated.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn short_and_missing_keys_are_errors() {
        assert!(matches!(
            load_key(&KeySource::Env("TOOLGATE_TEST_SURELY_UNSET_VAR".into())),
            Err(KeyError::EnvUnset(_))
        ));
        let path = std::env::temp_dir().join(format!("toolgate-shortkey-{}", std::process::id()));
        let _ = std::fs::write(&path, b"  short \n");
        assert!(matches!(
            load_key(&KeySource::File(path.clone())),
            Err(KeyError::TooShort(_))
        ));
        let _ = std::fs::remove_file(&path);
    }
}
