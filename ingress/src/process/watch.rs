//! Reloads and what triggers them besides SIGHUP: a watcher of the control
//! files (always on) and a watcher of the configuration and policy files
//! (with `[policies] watch`). Both poll with `stat`: cheap, and it works on
//! every filesystem.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::LOG_TARGET;
use crate::shared::{ReloadError, Shared};

/// Rebuilds the snapshot from the configuration and policy files and
/// publishes it; on error the running snapshot stays. `why` names the
/// trigger in the log.
pub(super) fn reload(shared: &Shared, why: &str) {
    match shared.reload() {
        Ok(generation) => tracing::info!(
            target: LOG_TARGET,
            generation,
            trigger = why,
            "configuration and policies reloaded"
        ),
        Err(e) => tracing::error!(
            target: LOG_TARGET,
            trigger = why,
            "reload refused, the running snapshot stays:\n{e}"
        ),
    }
}

/// Control files whose change is published at once, polled every 200 ms
/// (size, mtime and inode: one `stat` each), always on, independent of
/// `[policies] watch` and of configuration edits: the sub-token revocation
/// list and the tool pins file. A revocation or an approval must not wait on
/// (or be blocked by) an unrelated edit.
pub(super) fn watch_control_files(shared: Arc<Shared>) {
    type Publish = fn(&Shared) -> Result<u64, ReloadError>;
    let mut files: Vec<(PathBuf, Publish, &'static str)> = Vec::new();
    if let Some(f) = shared.revocation_file() {
        files.push((f, Shared::reload_revocations, "sub-token revocations"));
    }
    if let Some(f) = shared.config.pins_file.clone() {
        files.push((f, Shared::reload_pins, "tool pins"));
    }
    if files.is_empty() {
        return;
    }
    let stamp = |f: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(f)
            .ok()
            .map(|m| (m.len(), m.modified().ok(), m.ino()))
    };
    let spawned = std::thread::Builder::new()
        .name("toolgate-control".into())
        .spawn(move || {
            let mut last: Vec<_> = files.iter().map(|(f, _, _)| stamp(f)).collect();
            loop {
                std::thread::sleep(Duration::from_millis(200));
                for (i, (file, publish, what)) in files.iter().enumerate() {
                    let now = stamp(file);
                    if now == last[i] {
                        continue;
                    }
                    match publish(&shared) {
                        Ok(generation) => {
                            last[i] = now;
                            tracing::info!(target: LOG_TARGET, generation, "{what} published");
                        }
                        Err(e) => {
                            tracing::error!(target: LOG_TARGET, "cannot read the {what} (the previous ones stay): {e}")
                        }
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(target: LOG_TARGET, error = %e, "cannot watch control files; reload with SIGHUP");
    }
}

/// Reloads when the configuration or a policy file changes (polled every
/// second).
pub(super) fn watch_files(shared: Arc<Shared>) {
    let stamp = |files: &[PathBuf]| -> Vec<Option<std::time::SystemTime>> {
        files
            .iter()
            .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
            .collect()
    };
    let spawned = std::thread::Builder::new()
        .name("toolgate-watch".into())
        .spawn(move || {
            let mut files = shared.watched_files();
            let mut last = stamp(&files);
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let now = stamp(&files);
                if now != last {
                    reload(&shared, "file change");
                    let watched = shared.watched_files();
                    // The stamps the reload started from: a file replaced
                    // while it ran (a certificate after its key, say, which
                    // the reload may have refused as a mismatch) is seen
                    // at the next poll, not taken as already read.
                    last = if watched == files {
                        now
                    } else {
                        stamp(&watched)
                    };
                    files = watched;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(target: LOG_TARGET, error = %e, "cannot watch policy files; reload with SIGHUP");
    }
}
