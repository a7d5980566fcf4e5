//! `toolgate demo`: the gateway with a demo MCP server, a demo REST API and two agents,
//! configured in a temporary directory.

use anyhow::Context;
use toolgate_ingress::{demo, process};

/// Starts the demo upstream, writes the demo configuration and runs the
/// gateway on `127.0.0.1:port`, printing how to try it once it listens.
pub fn run(port: u16) -> anyhow::Result<()> {
    let upstream = demo::start_upstream().context("starting the demo upstream")?;
    let dir = std::env::temp_dir().join(format!("toolgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let path = demo::write_config(&dir, listen, upstream)
        .with_context(|| format!("writing the demo configuration into {}", dir.display()))?;
    let cfg = super::load(&path)?;
    let audit_file = cfg.audit_dir.clone();
    process::run(
        cfg,
        Some(Box::new(move |addr| {
            println!("{}", demo::instructions(addr, &audit_file));
            println!("(configuration written to {})", path.display());
        })),
    )?;
    Ok(())
}
