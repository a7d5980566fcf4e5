//! Reloading: the configuration file, its policies and the files they
//! name, checked whole before anything is published.

use futures_rustls::TlsAcceptor;
use toolgate_decision::pins::Pins;

use super::{Shared, Sources};

/// Why a reload was refused; the running snapshot stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The gateway was not started from a file.
    #[error("no configuration file to reload")]
    NoFile,
    /// The file does not parse or check.
    #[error("{0}")]
    Config(String),
    /// The upstreams changed (those need a restart).
    #[error("upstreams changed: restart toolgate to apply upstream changes")]
    UpstreamsChanged,
    /// A policy file cannot be read or parsed.
    #[error("{0}")]
    Policies(String),
    /// A listener's TLS files do not load.
    #[error("[{section}]: {why}")]
    Tls {
        /// `server.tls` or `admin.tls`.
        section: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A listener's TLS, or the assertion key, was switched on or off
    /// (that needs a restart).
    #[error("`[{0}]` added or removed: restart toolgate to apply")]
    TlsAddedOrRemoved(&'static str),
    /// The sub-token key or revocation list cannot be read.
    #[error("[auth.subtokens]: {0}")]
    Subtokens(String),
    /// The revocation list alone cannot be read.
    #[error("{0}")]
    Revocations(String),
    /// The end-user assertion keys cannot be read.
    #[error("{0}")]
    Assertions(String),
    /// The tool pins file cannot be read.
    #[error("{0}")]
    Pins(String),
    /// The new files do not compile into a snapshot.
    #[error("{0}")]
    Compile(String),
    /// They compile, but not with the admin API's control state.
    #[error("the configuration does not compile with the control state")]
    ControlConflict,
}

impl Shared {
    /// Re-reads the configuration file and policy files (and the TLS
    /// files, the sub-token key and revocations, the tool pins) and
    /// publishes a new snapshot. On any error the running snapshot stays and
    /// the errors are returned. Listener, shard and upstream settings need a
    /// restart.
    pub fn reload(&self) -> Result<u64, ReloadError> {
        let path = self.config.path.clone().ok_or(ReloadError::NoFile)?;
        let cfg =
            toolgate_core::config::load(&path).map_err(|e| ReloadError::Config(e.to_string()))?;
        let same_upstreams = cfg
            .upstreams
            .iter()
            .map(|u| (u.name(), &u.url, &u.stdio))
            .eq(self
                .config
                .upstreams
                .iter()
                .map(|u| (u.name(), &u.url, &u.stdio)));
        if !same_upstreams {
            return Err(ReloadError::UpstreamsChanged);
        }
        let (policies, errs) = toolgate_decision::policy::read_sources(&cfg.policy_files);
        let errs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        if !errs.is_empty() {
            return Err(ReloadError::Policies(errs.join("\n")));
        }
        let tls = match (&self.tls, &cfg.tls) {
            (Some(_), Some(files)) => {
                Some(toolgate_net::tls::load_server_config(files).map_err(|e| {
                    ReloadError::Tls {
                        section: "server.tls",
                        why: e.to_string(),
                    }
                })?)
            }
            (None, None) => None,
            _ => return Err(ReloadError::TlsAddedOrRemoved("server.tls")),
        };
        let admin_tls = match (&self.admin_tls, &cfg.admin_tls) {
            (Some(_), Some(files)) => {
                Some(toolgate_net::tls::load_server_config(files).map_err(|e| {
                    ReloadError::Tls {
                        section: "admin.tls",
                        why: e.to_string(),
                    }
                })?)
            }
            (None, None) => None,
            _ => return Err(ReloadError::TlsAddedOrRemoved("admin.tls")),
        };
        let subtokens = cfg
            .subtoken_dir
            .as_deref()
            .map(crate::subtokens::verifier)
            .transpose()
            .map_err(|e| ReloadError::Subtokens(e.to_string()))?;
        let assertions = match (&self.assertions, &cfg.assertion_keys) {
            (Some(_), Some(keys)) => Some(
                toolgate_upstream::assertion::Signer::load(keys)
                    .map_err(|e| ReloadError::Assertions(e.to_string()))?,
            ),
            (None, None) => None,
            _ => return Err(ReloadError::TlsAddedOrRemoved("identity_assertions")),
        };
        let pins = self
            .config
            .pins_file
            .as_deref()
            .map(Pins::load)
            .transpose()
            .map_err(|e| ReloadError::Pins(e.to_string()))?;
        let candidate = Sources {
            file: cfg,
            policies,
            control: self.sources().control,
        };
        let mut cats = self.catalogs.lock().unwrap_or_else(|p| p.into_inner());
        let eff = candidate.effective();
        candidate
            .compile(&eff, &cats.aligned(&eff))
            .map_err(|e| ReloadError::Compile(e.join("\n")))?;
        if let (Some(published), Some(tls)) = (&self.tls, tls) {
            published.publish(TlsAcceptor::from(tls));
        }
        if let (Some(published), Some(tls)) = (&self.admin_tls, admin_tls) {
            published.publish(TlsAcceptor::from(tls));
        }
        if let (Some(published), Some(signer)) = (&self.assertions, assertions) {
            published.publish(signer);
        }
        *self.subtokens.lock().unwrap_or_else(|p| p.into_inner()) = subtokens;
        if let Some(p) = pins {
            *self.pins.lock().unwrap_or_else(|p| p.into_inner()) = Some(p);
        }
        {
            let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
            cur.file = candidate.file;
            cur.policies = candidate.policies;
        }
        self.publish(&mut cats).ok_or(ReloadError::ControlConflict)
    }

    /// Files whose change triggers a reload: the configuration, its
    /// policies, the JWKS (so rotated IdP keys take effect) and the
    /// listeners' TLS files (so renewed certificates do).
    pub fn watched_files(&self) -> Vec<std::path::PathBuf> {
        let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        cur.file
            .path
            .iter()
            .cloned()
            .chain(cur.file.policy_files.iter().cloned())
            .chain(cur.file.jwks_file.iter().cloned())
            .chain(
                cur.file
                    .tls
                    .iter()
                    .chain(&cur.file.admin_tls)
                    .flat_map(|t| {
                        [
                            Some(t.cert.clone()),
                            Some(t.key.clone()),
                            t.client_ca.clone(),
                        ]
                        .into_iter()
                        .flatten()
                    }),
            )
            .collect()
    }
}
