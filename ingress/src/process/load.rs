//! Reading what the configuration names — policy files, certificates and
//! keys, upstream credentials, the sub-token key, OAuth clients, tool pins —
//! before anything is published. `toolgate check` and `toolgate policy`
//! read them the same way.

use toolgate_core::config::ValidConfig;
use toolgate_decision::policy::{PolicyBundle, PolicyError};

use super::StartError;
use crate::shared::Loaded;
use crate::subtokens;
use toolgate_net::tls::TlsSetup;
use toolgate_upstream::{credential, oauth};

/// The configured policy files do not parse: every error, one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid policies\n{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct InvalidPolicies(pub Vec<PolicyError>);

/// A certificate, key or CA bundle the configuration names cannot be used;
/// the message says which section and file.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsLoadError(pub String);

/// Parses the configured policy files.
pub fn load_policies(cfg: &ValidConfig) -> Result<PolicyBundle, InvalidPolicies> {
    toolgate_decision::policy::load(&cfg.policy_files).map_err(InvalidPolicies)
}

/// Every certificate, key and CA bundle the configuration names.
pub fn load_tls(cfg: &ValidConfig) -> Result<TlsSetup, TlsLoadError> {
    TlsSetup::load(cfg).map_err(TlsLoadError)
}

/// The tool surface of every `openapi` upstream, by name, each document
/// read (or fetched) and checked now.
pub fn openapi_surfaces(
    cfg: &ValidConfig,
) -> Result<
    std::collections::HashMap<String, toolgate_upstream::openapi::LiveSurface>,
    toolgate_upstream::openapi::LoadError,
> {
    let mut out = std::collections::HashMap::new();
    for u in &cfg.upstreams {
        if let Some(s) = toolgate_upstream::openapi::load(u)? {
            out.insert(u.name().to_owned(), toolgate_decision::Published::new(s));
        }
    }
    Ok(out)
}

/// Every `stdio` upstream's process, started (each in the background:
/// its tools appear once its handshake is done). Errors: a sandbox that
/// cannot confine its process here.
pub fn stdio_processes(
    cfg: &ValidConfig,
) -> Result<
    std::collections::HashMap<String, std::sync::Arc<toolgate_upstream::stdio::Pool>>,
    toolgate_upstream::stdio::StartError,
> {
    let mut out = std::collections::HashMap::new();
    for u in &cfg.upstreams {
        if let Some(spec) = &u.stdio {
            let p = toolgate_upstream::stdio::Pool::start(
                u.name(),
                spec.clone(),
                u.entry.max_response_bytes,
            )?;
            out.insert(u.name().to_owned(), p);
        }
    }
    Ok(out)
}

/// The token endpoint of every `token_exchange` upstream, by name, its
/// client secret read now (one that cannot be read stops the start).
pub fn exchange_endpoints(
    cfg: &ValidConfig,
) -> Result<
    std::collections::HashMap<String, std::sync::Arc<toolgate_upstream::exchange::Endpoint>>,
    toolgate_upstream::exchange::SetupError,
> {
    let mut out = std::collections::HashMap::new();
    for u in &cfg.upstreams {
        if let Some(e) = toolgate_upstream::exchange::Endpoint::load(u)? {
            out.insert(u.name().to_owned(), e);
        }
    }
    Ok(out)
}

/// What the shared state is built with, read from the files, variables and
/// commands the configuration names; starts the credential watchers.
pub(super) fn loaded(cfg: &ValidConfig) -> Result<Loaded, StartError> {
    let credentials = credential::load(cfg)?;
    credential::watch(cfg, &credentials);
    let tls = load_tls(cfg)?;
    let subtokens = cfg
        .subtoken_dir
        .as_deref()
        .map(subtokens::verifier)
        .transpose()
        .map_err(StartError::Subtokens)?;
    let oauth = oauth::clients(cfg, &credentials)?;
    let pins = cfg
        .pins_file
        .as_deref()
        .map(toolgate_decision::pins::Pins::load)
        .transpose()?;
    Ok(Loaded {
        openapi: openapi_surfaces(cfg)?,
        stdio: stdio_processes(cfg)?,
        assertions: cfg
            .assertion_keys
            .as_ref()
            .map(toolgate_upstream::assertion::Signer::load)
            .transpose()?,
        exchanges: exchange_endpoints(cfg)?,
        accounts: None,
        credentials,
        tls,
        subtokens,
        oauth,
        pins,
    })
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("toolgate-load-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn config(dir: &Path, extra: &str) -> ValidConfig {
        let text = format!("[server]\nlisten = \"127.0.0.1:0\"\n{extra}");
        toolgate_core::config::parse(&text, "test.toml", dir).unwrap()
    }

    #[test]
    fn invalid_policies_say_so_then_list_each_error() {
        let dir = scratch("policies");
        std::fs::write(
            dir.join("p.cedar"),
            "permit(principal, action, resource) when { bogus",
        )
        .unwrap();
        let cfg = config(&dir, "[policies]\nfiles = [\"p.cedar\"]\n");
        let Err(e) = load_policies(&cfg) else {
            panic!("a broken policy file was accepted");
        };
        let text = e.to_string();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("invalid policies"));
        assert_eq!(lines.count(), e.0.len(), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_policy_files_is_an_empty_bundle() {
        let dir = scratch("nopolicies");
        let cfg = config(&dir, "");
        let bundle = load_policies(&cfg).unwrap();
        assert!(bundle.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unusable_listener_certificate_is_a_tls_error() {
        let dir = scratch("tls");
        for f in ["cert.pem", "key.pem"] {
            std::fs::write(dir.join(f), "not a pem\n").unwrap();
        }
        let cfg = config(
            &dir,
            "[server.tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n",
        );
        let Err(e) = load_tls(&cfg) else {
            panic!("an unusable certificate was accepted");
        };
        assert!(e.to_string().starts_with("TLS: "), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
