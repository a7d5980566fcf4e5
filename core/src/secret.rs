//! A credential value that never prints, and where such values come from.
//!
//! Upstream credentials and sink tokens pass through configuration, logs and
//! error paths; a type whose `Debug` and `Display` print `<redacted>` keeps a
//! stray `{:?}` from leaking one. The bytes are reachable only through
//! [`Secret::expose`], and are overwritten with zeros when the value is
//! dropped, so a replaced credential does not linger in freed memory.
//! [`SecretSource`] is the one reader of secrets from an environment
//! variable, a file or a command, shared by upstream credentials and audit
//! sinks so both trim and check values the same way.

use std::path::PathBuf;

/// Secret bytes: printed as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<[u8]>);

impl Secret {
    /// Wraps `bytes`.
    pub fn new(bytes: impl Into<Box<[u8]>>) -> Self {
        Self(bytes.into())
    }

    /// The secret bytes, for the one place that sends them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut *self.0);
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where a secret is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable.
    Env(String),
    /// A file (already resolved against the config file's directory).
    File(PathBuf),
    /// A command printing the secret on stdout.
    Command(Vec<String>),
}

/// A secret that cannot be read. Names the source, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is unset or not UTF-8.
    #[error("environment variable `{0}` is not set")]
    EnvUnset(String),
    /// The file cannot be read.
    #[error("file `{file}` cannot be read: {why}")]
    File {
        /// File path.
        file: String,
        /// The I/O error.
        why: std::io::Error,
    },
    /// The command could not run or failed.
    #[error("command `{program}` failed: {why}")]
    Command {
        /// The program run.
        program: String,
        /// What went wrong (exit status or spawn error, never its output).
        why: String,
    },
    /// The secret is empty or holds control characters (it would break a
    /// header line).
    #[error("secret from {0} is empty or holds control characters")]
    Unusable(String),
}

impl SecretSource {
    /// Where the secret comes from, for messages, e.g. ``env `CRM_TOKEN` ``.
    pub fn describe(&self) -> String {
        match self {
            Self::Env(v) => format!("env `{v}`"),
            Self::File(f) => format!("file `{}`", f.display()),
            Self::Command(cmd) => format!(
                "command `{}`",
                cmd.first().map(String::as_str).unwrap_or("")
            ),
        }
    }

    /// Reads the secret: surrounding whitespace removed, refused when empty
    /// or holding control characters.
    pub fn read(&self) -> Result<Secret, SecretError> {
        let mut raw: Vec<u8> = match self {
            Self::Env(var) => std::env::var(var)
                .map_err(|_| SecretError::EnvUnset(var.clone()))?
                .into_bytes(),
            Self::File(f) => std::fs::read(f).map_err(|why| SecretError::File {
                file: f.display().to_string(),
                why,
            })?,
            Self::Command(cmd) => run(cmd)?,
        };
        let value = raw.trim_ascii();
        let usable = !value.is_empty() && !value.iter().any(|b| b.is_ascii_control());
        let secret = usable.then(|| Secret::new(value.to_vec()));
        zeroize::Zeroize::zeroize(&mut raw);
        secret.ok_or_else(|| SecretError::Unusable(self.describe()))
    }
}

/// Runs a secret command; its stdout is the secret. stderr is not captured
/// into messages: it might echo the secret.
fn run(cmd: &[String]) -> Result<Vec<u8>, SecretError> {
    let program = cmd.first().cloned().unwrap_or_default();
    let fail = |why: String| SecretError::Command {
        program: program.clone(),
        why,
    };
    let out = std::process::Command::new(&program)
        .args(&cmd[1.min(cmd.len())..])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(out.status.to_string()));
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new(b"hunter2".to_vec());
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), b"hunter2");
    }

    #[test]
    fn sources_trim_and_refuse_unusable_values() {
        let s = SecretSource::Command(vec!["echo".into(), " tok ".into()]).read();
        assert_eq!(s.ok().map(|s| s.expose().to_vec()), Some(b"tok".to_vec()));
        let s = SecretSource::Command(vec!["printf".into(), "a\\nb".into()]).read();
        assert!(matches!(s, Err(SecretError::Unusable(_))));
        let s = SecretSource::Env("TOOLGATE_TEST_SURELY_UNSET".into()).read();
        assert_eq!(
            s.err().map(|e| e.to_string()).unwrap_or_default(),
            "environment variable `TOOLGATE_TEST_SURELY_UNSET` is not set"
        );
    }
}
