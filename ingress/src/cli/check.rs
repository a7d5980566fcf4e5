//! `toolgate check -c FILE`: reads the configuration, its policies,
//! upstream credentials, OAuth clients, TLS files and sink tokens the way
//! `run` does at start, and exits; nothing is started or sent. For each
//! stdio upstream it says what the sandbox will allow (and whether it can
//! be set up on this host).

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
    if let Some(keys) = &cfg.assertion_keys {
        toolgate_upstream::assertion::Signer::load(keys)?;
    }
    process::exchange_endpoints(&cfg)?;
    // Sink tokens and TLS files are read as at start (nothing is sent).
    for (s, t) in cfg.config.audit.sinks.iter().zip(&cfg.sink_targets) {
        toolgate_sinks::build_sink(s, t, &cfg.audit_dir)?;
    }
    let mut sandboxes = Vec::new();
    for u in &cfg.upstreams {
        let Some(spec) = &u.stdio else {
            continue;
        };
        let name = u.name();
        for (var, value) in &spec.env {
            if let toolgate_core::config::StdioEnv::Secret(src) = value {
                src.read()
                    .map_err(|e| anyhow::anyhow!("upstream `{name}`: `env.{var}`: {e}"))?;
            }
        }
        toolgate_upstream::stdio::sandbox::preflight(spec)
            .map_err(|e| anyhow::anyhow!("upstream `{name}`: {e}"))?;
        let mut text = format!("upstream `{name}` (stdio): {}", spec.program.display());
        for a in &spec.args {
            text.push(' ');
            text.push_str(a);
        }
        for line in toolgate_upstream::stdio::sandbox::explain(spec) {
            text.push_str("\n  ");
            text.push_str(&line);
        }
        sandboxes.push(text);
    }
    println!(
        "{}: ok ({} upstreams, {} agents, listening on {})",
        path.display(),
        cfg.upstreams.len(),
        cfg.config.agents.len(),
        cfg.listen
    );
    for s in sandboxes {
        println!("{s}");
    }
    Ok(())
}
