//! The `toolgate` command line: the clap definitions of the top-level
//! commands, and one module per subcommand that runs it.
//!
//! Each subcommand module holds its own clap arguments and a `run` that
//! returns `anyhow::Result`; `main` prints an error as `error: …` and turns
//! the result into the exit status.

pub mod admin;
pub mod apply;
pub mod audit;
mod catalogs;
pub mod check;
pub mod demo;
pub mod key;
pub mod policy;
pub mod run;
pub mod simulate;
pub mod token;
pub mod tools;
pub mod usage;
pub mod window;

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::{Parser, Subcommand};
use toolgate_core::config::{self, ValidConfig};

use admin::{AdminApiArgs, AdminCommand};
use audit::AuditCommand;
use key::KeyCommand;
use policy::PolicyCommand;
use token::TokenCommand;
use tools::ToolsCommand;

/// toolgate: the gateway between AI agents and the tools they call.
#[derive(Parser)]
#[command(name = "toolgate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Subcommand)]
pub enum Command {
    /// Run the gateway with a configuration file.
    Run {
        /// Configuration file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Check a configuration file and exit: prints each error with its line.
    Check {
        /// Configuration file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run a self-contained demo: the gateway, a demo MCP upstream and two agents.
    Demo {
        /// Port for the gateway on 127.0.0.1.
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Cedar policies: validate them, run test cases against them.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The audit log: verify its chain, query it, follow it.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// What each customer called, per tool, from the audit log (JSON or CSV).
    Usage(usage::UsageArgs),
    /// Sub-tokens (`[auth.subtokens]`): mint, list, revoke.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Tool definition pins (`[tool_pins]`): list, approve.
    Tools {
        #[command(subcommand)]
        command: ToolsCommand,
    },
    /// The admin API of a running gateway: read and change agents, users, upstreams, credentials, policies and sub-tokens; read tools.
    Admin {
        #[command(flatten)]
        api: AdminApiArgs,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Make the live control state equal to a directory of resource files
    /// (`agents/ID.json`, `users/ID.json`, `policies/NAME.cedar`): prints the
    /// plan, then applies it in one transaction, refused if anything changed
    /// since it was read.
    Apply {
        #[command(flatten)]
        api: AdminApiArgs,
        /// The directory.
        #[arg(short = 'f', long = "file", value_name = "DIR")]
        dir: PathBuf,
        /// Print the plan only.
        #[arg(long)]
        dry_run: bool,
        /// Also delete what the admin API holds of a kind whose folder is in
        /// DIR but has no file there (the configuration file's stay).
        #[arg(long)]
        prune: bool,
    },
}

/// Reads and validates the configuration file at `path`; the error lists
/// every problem with its line.
pub fn load(path: &Path) -> anyhow::Result<ValidConfig> {
    match config::load(path) {
        Ok(c) => Ok(c),
        Err(errors) => bail!("invalid configuration\n{errors}"),
    }
}
