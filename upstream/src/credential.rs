//! Upstream credentials: read from the environment, a file or a command, and
//! injected into every request toolgate sends that upstream.
//!
//! The agent never holds these secrets, and its own `Authorization` header is
//! never forwarded. Each credential is published per upstream as the complete
//! header line, so the request path copies bytes and takes no lock; a file
//! credential is re-read by a watcher thread when the file changes (see
//! [`watch`] for what a bad change does). Secret
//! values are wrapped in [`Secret`], whose `Debug` and `Display` print
//! `<redacted>`: errors name the upstream and the source, never the value.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use toolgate_core::config::{CredentialConfig, ValidConfig};
use toolgate_core::secret::{Secret, SecretError, SecretSource};
use toolgate_decision::Published;

/// By upstream name, the published credential header line of each
/// upstream that has one.
pub type Credentials = HashMap<String, Arc<Published<Secret>>>;

/// A credential that cannot be read. Names the source, never the value.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The environment variable is unset or not UTF-8.
    #[error("upstream `{upstream}`: credential environment variable `{var}` is not set")]
    EnvUnset {
        /// Upstream name.
        upstream: String,
        /// Variable name.
        var: String,
    },
    /// The file cannot be read.
    #[error("upstream `{upstream}`: credential file `{file}` cannot be read: {why}")]
    File {
        /// Upstream name.
        upstream: String,
        /// File path.
        file: String,
        /// The I/O error.
        why: std::io::Error,
    },
    /// The command could not run or failed.
    #[error("upstream `{upstream}`: credential command `{program}` failed: {why}")]
    Command {
        /// Upstream name.
        upstream: String,
        /// The program run.
        program: String,
        /// What went wrong (exit status or spawn error, never its output).
        why: String,
    },
    /// The secret is empty or would break the header.
    #[error(
        "upstream `{upstream}`: credential from {source_name} is empty or holds control characters"
    )]
    Unusable {
        /// Upstream name.
        upstream: String,
        /// Where it came from, e.g. ``env `CRM_TOKEN` ``.
        source_name: String,
    },
}

/// Where a credential is read from.
fn secret_source(c: &CredentialConfig, file: Option<&Path>) -> SecretSource {
    match (&c.env, file, &c.command) {
        (Some(v), _, _) => SecretSource::Env(v.get_ref().clone()),
        (None, Some(f), _) => SecretSource::File(f.to_path_buf()),
        (None, None, Some(cmd)) => SecretSource::Command(cmd.get_ref().clone()),
        // Validation requires exactly one source; a command naming no
        // program fails to run.
        (None, None, None) => SecretSource::Command(Vec::new()),
    }
}

/// Reads one credential and renders its header line (`Name: prefixvalue\r\n`).
pub fn read(
    upstream: &str,
    c: &CredentialConfig,
    file: Option<&Path>,
) -> Result<Secret, CredentialError> {
    let upstream = upstream.to_owned();
    let source = secret_source(c, file);
    let value = source.read().map_err(|e| match e {
        SecretError::EnvUnset(var) => CredentialError::EnvUnset { upstream, var },
        SecretError::File { file, why } => CredentialError::File {
            upstream,
            file,
            why,
        },
        SecretError::Command { program, why } => CredentialError::Command {
            upstream,
            program,
            why,
        },
        SecretError::Unusable(source_name) => CredentialError::Unusable {
            upstream,
            source_name,
        },
    })?;
    let value = value.expose();
    let header = c.header.get_ref();
    let mut line = Vec::with_capacity(header.len() + c.value_prefix.len() + value.len() + 4);
    line.extend_from_slice(header.as_bytes());
    line.extend_from_slice(b": ");
    line.extend_from_slice(c.value_prefix.as_bytes());
    line.extend_from_slice(value);
    line.extend_from_slice(b"\r\n");
    Ok(Secret::new(line))
}

/// Reads every upstream's credential; the first that cannot be read stops
/// the start.
pub fn load(cfg: &ValidConfig) -> Result<Credentials, CredentialError> {
    let mut out = Credentials::new();
    for u in &cfg.upstreams {
        let Some(c) = &u.entry.credential else {
            continue;
        };
        let secret = if c.oauth.is_some() {
            // No token yet: the grant's task publishes one (crate::oauth).
            Secret::new(Vec::new())
        } else {
            read(u.name(), c, u.credential_file.as_deref())?
        };
        out.insert(u.name().to_owned(), Published::new(secret));
    }
    Ok(out)
}

/// What a change of a credential file does to the published credential.
#[derive(Debug)]
enum Refresh {
    /// A usable value: in use from now on.
    Replace(Secret),
    /// The file cannot be read (deleted, mid-swap, permissions): the last
    /// good value stays, so a secret tool replacing the file does not cause
    /// an outage.
    Keep(CredentialError),
    /// The file is readable but holds no usable value (empty, whitespace,
    /// control characters): whoever wrote it meant "no credential" or wrote
    /// garbage, and neither the old value nor the new one is sent. Calls to
    /// the upstream are refused until the file holds a usable value.
    Withdraw(CredentialError),
}

/// Decides what the new read of a changed credential file does.
fn refresh(read: Result<Secret, CredentialError>) -> Refresh {
    match read {
        Ok(secret) => Refresh::Replace(secret),
        Err(e @ CredentialError::Unusable { .. }) => Refresh::Withdraw(e),
        Err(e) => Refresh::Keep(e),
    }
}

/// Re-reads file credentials when their file changes (polled every second).
/// A file that cannot be read keeps the last good value; a readable file
/// without a usable value withdraws the credential, so calls to that
/// upstream are refused (`upstream_credential_unavailable`) while other
/// upstreams are unaffected. Both are logged as errors naming the upstream
/// and the file, never the value.
pub fn watch(cfg: &ValidConfig, creds: &Credentials) {
    let watched: Vec<(String, CredentialConfig, PathBuf, Arc<Published<Secret>>)> = cfg
        .upstreams
        .iter()
        .filter_map(|u| {
            Some((
                u.name().to_owned(),
                u.entry.credential.clone()?,
                u.credential_file.clone()?,
                Arc::clone(creds.get(u.name())?),
            ))
        })
        .collect();
    if watched.is_empty() {
        return;
    }
    let stamp = |f: &Path| -> Option<(SystemTime, u64)> {
        let m = std::fs::metadata(f).ok()?;
        Some((m.modified().ok()?, m.len()))
    };
    let spawned = std::thread::Builder::new()
        .name("toolgate-credentials".into())
        .spawn(move || {
            let mut last: Vec<_> = watched.iter().map(|w| stamp(&w.2)).collect();
            loop {
                std::thread::sleep(Duration::from_secs(1));
                for (i, (name, c, file, published)) in watched.iter().enumerate() {
                    let now = stamp(file);
                    if now == last[i] {
                        continue;
                    }
                    last[i] = now;
                    match refresh(read(name, c, Some(file))) {
                        Refresh::Replace(secret) => {
                            published.publish(secret);
                            tracing::info!(upstream = %name, "credential file changed; new credential in use");
                        }
                        Refresh::Keep(error) => {
                            tracing::error!(upstream = %name, %error, "keeping the previous credential until the file can be read");
                        }
                        Refresh::Withdraw(error) => {
                            published.publish(Secret::new(Vec::new()));
                            tracing::error!(upstream = %name, %error, "credential withdrawn: calls to this upstream are refused until the file holds a usable credential");
                        }
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch credential files; restart to pick up changes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> ValidConfig {
        let text = format!(
            "[[upstreams]]\nname = \"crm\"\nurl = \"http://127.0.0.1:9/mcp\"\n[upstreams.credential]\nvalue_prefix = \"Bearer \"\n{extra}\n"
        );
        toolgate_core::config::parse(&text, "t", Path::new(".")).unwrap()
    }

    #[test]
    fn missing_env_names_upstream_and_variable() {
        let c = cfg("env = \"TOOLGATE_TEST_SURELY_UNSET\"");
        let e = load(&c).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            e,
            "upstream `crm`: credential environment variable `TOOLGATE_TEST_SURELY_UNSET` is not set"
        );
    }

    #[test]
    fn command_output_becomes_the_header_line_and_never_prints() {
        let c = cfg("command = [\"echo\", \" s3cret \"]");
        let creds = load(&c).unwrap();
        let s = creds.get("crm").map(|p| p.load()).unwrap();
        assert_eq!(s.expose(), b"Authorization: Bearer s3cret\r\n");
        assert_eq!(format!("{s:?}"), "<redacted>");
    }

    #[test]
    fn unreadable_file_keeps_and_unusable_file_withdraws() {
        let dir = std::env::temp_dir().join(format!("toolgate-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("crm.token");
        let c = cfg("file = \"crm.token\"");
        let cred = c.upstreams[0].entry.credential.clone().unwrap();
        let outcome = |text: Option<&str>| {
            match text {
                Some(t) => std::fs::write(&file, t).unwrap(),
                None => {
                    let _ = std::fs::remove_file(&file);
                }
            }
            refresh(read("crm", &cred, Some(&file)))
        };
        assert!(matches!(
            outcome(Some("next\n")),
            Refresh::Replace(s) if s.expose() == b"Authorization: Bearer next\r\n"
        ));
        assert!(matches!(
            outcome(None),
            Refresh::Keep(CredentialError::File { .. })
        ));
        for garbage in ["", " \n\t\n", "a\u{1}b"] {
            assert!(matches!(outcome(Some(garbage)), Refresh::Withdraw(_)));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn failing_command_and_control_characters_are_refused() {
        let c = cfg("command = [\"false\"]");
        assert!(matches!(load(&c), Err(CredentialError::Command { .. })));
        let c = cfg("command = [\"printf\", \"a\\nb\"]");
        assert!(matches!(load(&c), Err(CredentialError::Unusable { .. })));
    }
}
