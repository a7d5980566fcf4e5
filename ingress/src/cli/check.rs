//! `toolgate check -c FILE`: reads the configuration, its policies,
//! upstream credentials, OAuth clients, TLS files and sink tokens the way
//! `run` does at start, and exits; nothing is started or sent.

use std::path::Path;

use toolgate_ingress::process;
use toolgate_upstream::{credential, oauth};

/// Checks the configuration at `path`; prints a one-line summary if it is ok.
pub fn run(path: &Path) -> anyhow::Result<()> {
    let cfg = super::load(path)?;
    process::load_policies(&cfg)?;
    let creds = credential::load(&cfg)?;
    oauth::clients(&cfg, &creds)?;
    process::load_tls(&cfg)?;
    process::openapi_surfaces(&cfg)?;
    // Sink tokens and TLS files are read as at start (nothing is sent).
    for (s, t) in cfg.config.audit.sinks.iter().zip(&cfg.sink_targets) {
        toolgate_sinks::build_sink(s, t, &cfg.audit_dir)?;
    }
    println!(
        "{}: ok ({} upstreams, {} agents, listening on {})",
        path.display(),
        cfg.upstreams.len(),
        cfg.config.agents.len(),
        cfg.listen
    );
    Ok(())
}
