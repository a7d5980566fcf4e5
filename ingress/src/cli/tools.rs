//! `toolgate tools …`: tool definition pins (`[tool_pins]`): list every
//! upstream's tools with their pin state, approve their current definitions.

use std::path::PathBuf;

use anyhow::bail;
use clap::Subcommand;
use toolgate_decision::pins::{PinStatus, Pins};

use super::catalogs::fetch_catalogs;

/// `toolgate tools …`.
#[derive(Subcommand)]
pub enum ToolsCommand {
    /// Fetch every upstream's tools now and show each one's pin state.
    List {
        /// Configuration file (TOML).
        #[arg(short, long, value_name = "FILE", default_value = "toolgate.toml")]
        config: PathBuf,
    },
    /// Approve tools' current definitions (fetched now): pins their digests;
    /// a running gateway serves them again within a second.
    Approve {
        /// Configuration file (TOML).
        #[arg(short, long, value_name = "FILE", default_value = "toolgate.toml")]
        config: PathBuf,
        /// Exposed tool names to approve.
        #[arg(value_name = "TOOL", required_unless_present = "all")]
        tools: Vec<String>,
        /// Approve every tool that is new or changed.
        #[arg(long)]
        all: bool,
    },
}

/// Runs `toolgate tools …`.
pub fn run(command: ToolsCommand) -> anyhow::Result<()> {
    let (config, approve) = match &command {
        ToolsCommand::List { config } => (config.clone(), None),
        ToolsCommand::Approve { config, tools, all } => {
            (config.clone(), Some((tools.clone(), *all)))
        }
    };
    let cfg = super::load(&config)?;
    let Some(path) = cfg.pins_file.clone() else {
        bail!(
            "{}: no `[tool_pins]` section: tool pinning is off",
            config.display()
        );
    };
    let mut pins = Pins::load(&path)?;
    let catalogs = fetch_catalogs(&cfg);
    let listed: Vec<(String, String)> = catalogs
        .iter()
        .flatten()
        .flat_map(|c| c.tools.iter())
        .filter_map(|t| Some((t.exposed.clone()?, t.sha256.clone())))
        .collect();
    let state = |s: PinStatus| match s {
        PinStatus::Pinned => "pinned",
        PinStatus::Changed => "CHANGED",
        PinStatus::New => "new",
    };
    match approve {
        None => {
            for (name, digest) in &listed {
                println!(
                    "{:8} {name}  {}",
                    state(pins.status(name, digest)),
                    &digest[..16]
                );
            }
        }
        Some((names, all)) => {
            let mut approved = 0;
            for name in &names {
                if !listed.iter().any(|(n, _)| n == name) {
                    bail!("no upstream lists a tool `{name}` now (see `toolgate tools list`)");
                }
            }
            for (name, digest) in &listed {
                let status = pins.status(name, digest);
                if status != PinStatus::Pinned && (all || names.contains(name)) {
                    println!("approved {name} ({} → {})", state(status), &digest[..16]);
                    pins.pin(name, digest);
                    approved += 1;
                }
            }
            pins.save(&path)?;
            println!(
                "{approved} tool(s) approved; {} pinned in {}",
                pins.len(),
                path.display()
            );
        }
    }
    Ok(())
}
