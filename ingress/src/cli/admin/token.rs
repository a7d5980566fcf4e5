//! `toolgate admin token …`: sub-tokens through the admin API.

use anyhow::Context;
use clap::Subcommand;
use serde_json::{json, Value};
use toolgate_ingress::admin::client::Client;

use super::api::{current, ok, print, write};
use crate::cli::token::MintArgs;

/// `toolgate admin token …`.
#[derive(Subcommand)]
pub enum AdminTokenCommand {
    /// Mint a sub-token for one agent, optionally narrowed to a user and
    /// tools; prints the token on stdout (the only time it is shown) and
    /// its id on stderr.
    Mint(MintArgs),
    /// List the sub-tokens minted through the admin API (claims only) with their state.
    List,
    /// Revoke a sub-token by its id; answers once every shard refuses it.
    Revoke {
        /// Token id.
        id: String,
        /// Version the revoke replaces. Default: the version read just before.
        #[arg(long)]
        if_match: Option<u64>,
    },
}

/// Runs `toolgate admin token …` with the client `c`.
pub fn run(c: &Client, cmd: AdminTokenCommand) -> anyhow::Result<()> {
    match cmd {
        AdminTokenCommand::Mint(mint) => {
            let ttl_s = mint.ttl_s()?;
            let MintArgs {
                agent, user, tools, ..
            } = mint;
            let mut body = json!({"agent": agent, "ttl_s": ttl_s});
            if let Some(u) = user {
                body["user"] = json!(u);
            }
            if !tools.is_empty() {
                body["tools"] = json!(tools);
            }
            let r = c.request(
                "POST",
                "/v1/subtokens",
                &[],
                Some(body.to_string().as_bytes()),
            )?;
            let v = ok(r)?;
            println!("{}", v["token"].as_str().unwrap_or(""));
            eprintln!(
                "id: {} (expires in {ttl_s} s, version {})",
                v["id"].as_str().unwrap_or("?"),
                v["results"][0]["version"]
            );
        }
        AdminTokenCommand::List => {
            let r = c.request("GET", "/v1/subtokens", &[], None)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            for item in ok(r)?["items"].as_array().into_iter().flatten() {
                let t = &item["spec"];
                let exp = t["exp"].as_u64().unwrap_or(0);
                let state = if t["revoked"] == json!(true) {
                    "revoked"
                } else if exp <= now {
                    "expired"
                } else {
                    "active"
                };
                let tools = t["tools"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_else(|| "*".into());
                println!(
                    "{}  {:8} version={} agent={} user={} tools={} expires_in={}s",
                    item["id"].as_str().unwrap_or("?"),
                    state,
                    item["version"],
                    t["agent"].as_str().unwrap_or("?"),
                    t["user"].as_str().unwrap_or("-"),
                    tools,
                    exp.saturating_sub(now)
                );
            }
        }
        AdminTokenCommand::Revoke { id, if_match } => {
            let target = format!("subtokens/{id}");
            let version = match if_match {
                Some(v) => v,
                None => current(c, &target)?
                    .map(|(v, _)| v)
                    .with_context(|| format!("no `{target}` (see `toolgate admin token list`)"))?,
            };
            print(&write(
                c,
                "POST",
                &format!("{target}/revoke"),
                Some(version),
                None,
            )?);
        }
    }
    Ok(())
}
