//! Tool pinning: approved definition digests, quarantine of tools whose
//! definition changed (or is new), and approval.

use std::sync::Arc;

use toolgate_core::config::{PinAction, ValidConfig};
use toolgate_decision::pins::{PinStatus, Pins};
use toolgate_decision::Catalog;

use super::{ReloadError, Shared};

/// Why a tool could not be approved.
#[derive(Debug, thiserror::Error)]
pub enum ApproveError {
    /// `[tool_pins]` is off.
    #[error("`[tool_pins]` is not configured")]
    NotConfigured,
    /// The pins file cannot be written (the pins stay as they were).
    #[error("{0}")]
    Unwritable(String),
}

impl Shared {
    /// Compares a fetched catalog with the pins: pins tools seen for the
    /// first time (with `pin_new`), and reports changed definitions.
    pub(super) fn check_pins(&self, cat: &Catalog) {
        let pin_new = {
            let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
            cur.file.config.tool_pins.as_ref().map(|t| t.pin_new)
        };
        let Some(pin_new) = pin_new else { return };
        let path = self.config.pins_file.clone();
        let mut guard = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        let Some(pins) = guard.as_mut() else { return };
        let mut added = 0;
        for def in cat.pinned() {
            let (name, sha256) = (def.key.as_str(), def.sha256);
            let what = if def.prompt { "prompt" } else { "tool" };
            match pins.status(name, sha256) {
                PinStatus::Pinned => {}
                PinStatus::New if pin_new => {
                    pins.pin(name, sha256);
                    added += 1;
                }
                PinStatus::New => {
                    tracing::warn!(
                        tool = name,
                        sha256,
                        "new {what} held back until approved (`toolgate tools approve`)"
                    );
                }
                PinStatus::Changed => {
                    tracing::error!(tool = name, pinned = pins.get(name).unwrap_or(""), now = sha256, "{what} definition changed since it was approved; review it and run `toolgate tools approve`");
                }
            }
        }
        if added > 0 {
            if let Some(path) = path {
                match pins.save(&path) {
                    Ok(()) => {
                        tracing::info!(tools = added, file = %path.display(), "pinned tools seen for the first time")
                    }
                    Err(e) => tracing::error!(error = %e, "cannot save tool pins"),
                }
            }
        }
    }

    /// The catalogs as the snapshot sees them: with `[tool_pins]`, changed
    /// (and, without `pin_new`, new) definitions quarantined.
    pub(super) fn pinned(
        &self,
        cfg: &ValidConfig,
        catalogs: &[Option<Arc<Catalog>>],
    ) -> Vec<Option<Arc<Catalog>>> {
        let guard = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        let (Some(pins), Some(t)) = (guard.as_ref(), cfg.config.tool_pins.as_ref()) else {
            return catalogs.to_vec();
        };
        let (pin_new, quarantine) = (t.pin_new, t.on_change == PinAction::Quarantine);
        catalogs
            .iter()
            .map(|c| {
                c.as_ref().map(|c| {
                    Arc::new(
                        c.with_quarantine(|name, digest| match pins.status(name, digest) {
                            PinStatus::Pinned => false,
                            PinStatus::Changed => quarantine,
                            PinStatus::New => !pin_new,
                        }),
                    )
                })
            })
            .collect()
    }

    /// Re-reads the tool pins file alone and publishes the snapshot with
    /// quarantines decided again (an approval takes effect at once).
    pub fn reload_pins(&self) -> Result<u64, ReloadError> {
        let Some(path) = self.config.pins_file.as_deref() else {
            return Ok(self.snapshot.generation());
        };
        let pins = Pins::load(path).map_err(|e| ReloadError::Pins(e.to_string()))?;
        *self.pins.lock().unwrap_or_else(|p| p.into_inner()) = Some(pins);
        let mut cats = self.catalogs.lock().unwrap_or_else(|p| p.into_inner());
        self.publish(&mut cats);
        Ok(self.snapshot.generation())
    }

    /// The pinned digest of tool `exposed` and how `digest` compares with
    /// it; `None` when `[tool_pins]` is off.
    pub fn pin_status(&self, exposed: &str, digest: &str) -> Option<(Option<String>, PinStatus)> {
        let guard = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        let pins = guard.as_ref()?;
        Some((
            pins.get(exposed).map(str::to_owned),
            pins.status(exposed, digest),
        ))
    }

    /// Approves tool `exposed`'s definition `digest`, as `toolgate tools
    /// approve` does: pins it, writes the pins file, and publishes the
    /// snapshot with quarantines decided again. Returns the digest pinned
    /// before and the new generation. Errors: pinning is off, or the file
    /// cannot be written (the pins stay as they were).
    pub fn approve_tool(
        &self,
        exposed: &str,
        digest: &str,
    ) -> Result<(Option<String>, u64), ApproveError> {
        let path = self
            .config
            .pins_file
            .clone()
            .ok_or(ApproveError::NotConfigured)?;
        let mut cats = self.catalogs.lock().unwrap_or_else(|p| p.into_inner());
        let previous = {
            let mut guard = self.pins.lock().unwrap_or_else(|p| p.into_inner());
            let pins = guard.as_mut().ok_or(ApproveError::NotConfigured)?;
            let previous = pins.get(exposed).map(str::to_owned);
            let mut next = pins.clone();
            next.pin(exposed, digest);
            next.save(&path)
                .map_err(|e| ApproveError::Unwritable(e.to_string()))?;
            *pins = next;
            previous
        };
        let generation = self
            .publish(&mut cats)
            .unwrap_or_else(|| self.snapshot.generation());
        Ok((previous, generation))
    }
}
