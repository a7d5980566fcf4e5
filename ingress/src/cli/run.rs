//! `toolgate run -c FILE`: the gateway, until SIGINT or SIGTERM.

use std::path::Path;

use toolgate_ingress::process;

/// Loads the configuration at `config` and runs the gateway with it.
pub fn run(config: &Path) -> anyhow::Result<()> {
    let cfg = super::load(config)?;
    process::run(cfg, None)?;
    Ok(())
}
