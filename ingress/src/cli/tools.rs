//! `toolgate tools …`: list every upstream's tools (and prompts, as
//! `prompt:{name}`) as agents would see them (with their pin state under
//! `[tool_pins]`, and the HTTP operation each tool of an `openapi`
//! upstream becomes); approve their current definitions (`[tool_pins]`).

use std::path::PathBuf;

use anyhow::bail;
use clap::Subcommand;
use toolgate_decision::pins::{PinStatus, Pins};

use super::catalogs::fetch_catalogs;

/// `toolgate tools …`.
#[derive(Subcommand)]
pub enum ToolsCommand {
    /// Fetch every upstream's tools now and show each one's definition
    /// digest, pin state (with `[tool_pins]`) and, for an OpenAPI upstream,
    /// its HTTP method and path.
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
        /// Exposed tool names to approve (a prompt as `prompt:{name}`).
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
    let pins_file = cfg.pins_file.clone();
    let catalogs = fetch_catalogs(&cfg);
    // Each tool with its digest and, for an `openapi` upstream, the HTTP
    // operation it becomes, so a surface can be reviewed before anything
    // is attached to it.
    let surfaces = toolgate_ingress::process::openapi_surfaces(&cfg).unwrap_or_default();
    let listed: Vec<(String, String, String)> = catalogs
        .iter()
        .zip(&cfg.upstreams)
        .filter_map(|(c, u)| Some((c.as_ref()?, u)))
        .flat_map(|(c, u)| {
            let surface = surfaces.get(u.name()).map(|s| s.load());
            // Prompts are pinned beside tools, under `prompt:{name}`.
            c.pinned()
                .into_iter()
                .map(|def| {
                    let http = surface
                        .as_ref()
                        .filter(|_| !def.prompt)
                        .and_then(|s| s.get(def.name))
                        .map(|op| format!("  {} {}", op.method, op.path))
                        .unwrap_or_default();
                    (def.key, def.sha256.to_owned(), http)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let Some(path) = pins_file else {
        if approve.is_some() {
            bail!(
                "{}: no `[tool_pins]` section: tool pinning is off",
                config.display()
            );
        }
        for (name, digest, http) in &listed {
            println!("{name}  {}{http}", &digest[..16]);
        }
        eprintln!(
            "({} tool(s); no `[tool_pins]`: pin state not shown)",
            listed.len()
        );
        return Ok(());
    };
    let mut pins = Pins::load(&path)?;
    let state = |s: PinStatus| match s {
        PinStatus::Pinned => "pinned",
        PinStatus::Changed => "CHANGED",
        PinStatus::New => "new",
    };
    match approve {
        None => {
            for (name, digest, http) in &listed {
                println!(
                    "{:8} {name}  {}{http}",
                    state(pins.status(name, digest)),
                    &digest[..16]
                );
            }
        }
        Some((names, all)) => {
            let mut approved = 0;
            for name in &names {
                if !listed.iter().any(|(n, _, _)| n == name) {
                    bail!("no upstream lists a tool `{name}` now (see `toolgate tools list`)");
                }
            }
            for (name, digest, _) in &listed {
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
