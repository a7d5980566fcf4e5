//! `toolgate admin …`: a client of a running gateway's admin API — read
//! and write resources, attach and detach tools, sub-tokens, and the diff
//! against a directory of resource files.

pub mod api;
pub mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::{json, Value};
use toolgate_ingress::admin::client::Client;

use api::{client, current, document, ok, print, write};
use token::AdminTokenCommand;

/// Where the admin API is and how to authenticate to it.
#[derive(clap::Args)]
pub struct AdminApiArgs {
    /// The admin API (`[admin] listen`): `http://` for a loopback listener,
    /// `https://` for one with `[admin.tls]`.
    #[arg(
        long,
        global = true,
        env = "TOOLGATE_ADMIN_URL",
        default_value = "http://127.0.0.1:9091"
    )]
    pub url: String,
    /// With `https://`: PEM CA certificates the admin listener's certificate
    /// must chain to. Default: the system's trusted roots.
    #[arg(
        long,
        global = true,
        env = "TOOLGATE_ADMIN_CA_FILE",
        value_name = "FILE"
    )]
    pub ca_file: Option<PathBuf>,
    /// With `https://`: a PEM client certificate, for an admin listener with
    /// `[admin.tls] client_ca_file`.
    #[arg(long, global = true, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The private key of `--client-cert`.
    #[arg(long, global = true, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// An admin token (its SHA-256 is in `[[admin.tokens]]`).
    #[arg(
        long,
        global = true,
        env = "TOOLGATE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// `toolgate admin …`.
#[derive(Subcommand)]
pub enum AdminCommand {
    /// Print a resource (`agents/ID`) with its version, or every resource of a kind (`agents`).
    Get {
        /// `KIND` or `KIND/ID`; kinds: agents, users, upstreams, credentials, policies, subtokens, tools.
        target: String,
    },
    /// Write a resource from a JSON document (a Cedar file for a policy).
    Apply {
        /// `KIND/ID`.
        target: String,
        /// The document: JSON, or Cedar text for `policies/NAME`.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// Version the write replaces (0: not in the store). Default: the version read just before.
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// Delete a resource from the store.
    Delete {
        /// `KIND/ID`.
        target: String,
        /// Version to delete. Default: the version read just before.
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// Attach a tool to an agent.
    Grant {
        /// Agent id.
        agent: String,
        /// Tool, by exposed name.
        tool: String,
    },
    /// Detach a tool from an agent; answers once every shard refuses it.
    Revoke {
        /// Agent id.
        agent: String,
        /// Tool, by exposed name.
        tool: String,
    },
    /// Print the plan `toolgate apply -f DIR` would apply, and change
    /// nothing. Exit status 0: the live state equals the files; 2: it
    /// differs; 1: error.
    Diff {
        /// The directory (`agents/ID.json`, `users/ID.json`, `policies/NAME.cedar`).
        #[arg(short = 'f', long = "file", value_name = "DIR")]
        dir: PathBuf,
        /// Plan the deletions of `apply --prune` too.
        #[arg(long)]
        prune: bool,
    },
    /// Sub-tokens through the admin API: mint, list, revoke.
    Token {
        #[command(subcommand)]
        command: AdminTokenCommand,
    },
}

/// Runs `toolgate admin …`; the exit status is 0, or for `diff` 2 when the
/// live state differs from the files.
pub fn run(api: &AdminApiArgs, cmd: AdminCommand) -> anyhow::Result<ExitCode> {
    let c = client(api)?;
    match cmd {
        AdminCommand::Get { target } => {
            let r = c.request("GET", &format!("/v1/{target}"), &[], None)?;
            print(&ok(r)?);
        }
        AdminCommand::Apply {
            target,
            file,
            if_match,
        } => {
            let (kind, _) = split(&target)?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let body = document(kind, &text, &file)?;
            let version = match if_match {
                Some(v) => Some(v),
                None => current(&c, &target)?.map(|(v, _)| v),
            };
            print(&write(
                &c,
                "PUT",
                &target,
                version,
                Some(body.to_string().as_bytes()),
            )?);
        }
        AdminCommand::Delete { target, if_match } => {
            split(&target)?;
            let version = match if_match {
                Some(v) => v,
                None => current(&c, &target)?
                    .map(|(v, _)| v)
                    .with_context(|| format!("no `{target}`"))?,
            };
            print(&write(&c, "DELETE", &target, Some(version), None)?);
        }
        AdminCommand::Grant { agent, tool } => print(&attach(&c, &agent, &tool, true)?),
        AdminCommand::Revoke { agent, tool } => print(&attach(&c, &agent, &tool, false)?),
        AdminCommand::Token { command } => token::run(&c, command)?,
        AdminCommand::Diff { dir, prune } => {
            if crate::cli::apply::diff(&c, &dir, prune)? {
                return Ok(ExitCode::from(2));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `KIND/ID` as its two parts, both non-empty.
fn split(target: &str) -> anyhow::Result<(&str, &str)> {
    target
        .split_once('/')
        .filter(|(k, id)| !k.is_empty() && !id.is_empty())
        .with_context(|| format!("`{target}` is not `KIND/ID`, such as `agents/support-bot`"))
}

/// Reads the agent, adds or removes `tool`, and writes it back under
/// the version read: a concurrent change makes this fail (412), never
/// get overwritten.
fn attach(c: &Client, agent: &str, tool: &str, grant: bool) -> anyhow::Result<Value> {
    let target = format!("agents/{agent}");
    let (version, item) = current(c, &target)?.with_context(|| format!("no agent `{agent}`"))?;
    let mut spec = item["spec"].clone();
    let tools: Vec<Value> = spec["tools"].as_array().cloned().unwrap_or_default();
    let has = tools.iter().any(|t| t == tool);
    if has == grant {
        bail!(
            "agent `{agent}` {} `{tool}` already (version {version})",
            if grant { "has" } else { "does not have" }
        );
    }
    let tools: Vec<Value> = if grant {
        tools.into_iter().chain([json!(tool)]).collect()
    } else {
        tools.into_iter().filter(|t| t != tool).collect()
    };
    spec["tools"] = Value::Array(tools);
    write(
        c,
        "PUT",
        &target,
        Some(version),
        Some(spec.to_string().as_bytes()),
    )
}
