//! `toolgate token …`: sub-tokens (`[auth.subtokens]`) minted, listed and
//! revoked in the sub-token directory of the configuration file, without a
//! running gateway.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;
use toolgate_core::config::ValidConfig;
use toolgate_core::subtoken::Claims;
use toolgate_ingress::subtokens;

/// What a sub-token is minted for: `toolgate token mint` and `toolgate
/// admin token mint`.
#[derive(clap::Args)]
pub struct MintArgs {
    /// The agent the token acts as.
    #[arg(long)]
    pub agent: String,
    /// Narrow the token to this end user.
    #[arg(long)]
    pub user: Option<String>,
    /// Narrow the token to this tool (repeatable; each must be attached to the agent).
    #[arg(long = "tool", value_name = "TOOL")]
    pub tools: Vec<String>,
    /// Attribute the token's calls to this customer (default: the agent's).
    #[arg(long)]
    pub customer: Option<String>,
    /// Lifetime: `90s`, `30m`, `1h`, `7d`.
    #[arg(long, default_value = "1h")]
    pub ttl: String,
}

impl MintArgs {
    /// `--ttl` in seconds (above 0).
    pub fn ttl_s(&self) -> anyhow::Result<u64> {
        let ttl = &self.ttl;
        toolgate_sinks::query::parse_duration_s(ttl)
            .filter(|s| *s > 0)
            .with_context(|| format!("`--ttl {ttl}`: expected a duration such as 30m, 1h, 7d"))
    }
}

/// `toolgate token …`.
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Mint a token for one agent, optionally narrowed to a user and tools;
    /// prints the token on stdout and its id on stderr.
    Mint {
        /// Configuration file (TOML).
        #[arg(short, long, value_name = "FILE", default_value = "toolgate.toml")]
        config: PathBuf,
        #[command(flatten)]
        mint: MintArgs,
    },
    /// List minted tokens (claims only) with their state.
    List {
        /// Configuration file (TOML).
        #[arg(short, long, value_name = "FILE", default_value = "toolgate.toml")]
        config: PathBuf,
    },
    /// Revoke a token by its id (or the token itself); a running gateway
    /// refuses it within a second, on every shard.
    Revoke {
        /// Configuration file (TOML).
        #[arg(short, long, value_name = "FILE", default_value = "toolgate.toml")]
        config: PathBuf,
        /// Token id, or the token.
        token: String,
    },
}

/// Runs `toolgate token …`.
pub fn run(command: TokenCommand) -> anyhow::Result<()> {
    let config = match &command {
        TokenCommand::Mint { config, .. }
        | TokenCommand::List { config }
        | TokenCommand::Revoke { config, .. } => config.clone(),
    };
    let config = &config;
    let cfg = super::load(config)?;
    let (Some(dir), Some(st)) = (&cfg.subtoken_dir, &cfg.config.auth.subtokens) else {
        bail!(
            "{}: no `[auth.subtokens]` section: sub-tokens are off",
            config.display()
        );
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match command {
        TokenCommand::Mint { mint, .. } => mint_token(&cfg, config, dir, st.max_ttl_s, mint, now),
        TokenCommand::List { .. } => list_tokens(dir, now),
        TokenCommand::Revoke { token, .. } => revoke_token(dir, token, now),
    }
}

/// Mints a token into `dir` with the claims of `mint` (checked against
/// `cfg`, read from `config`), issued at `now`; prints it and its id.
fn mint_token(
    cfg: &ValidConfig,
    config: &Path,
    dir: &Path,
    max_ttl_s: u64,
    mint: MintArgs,
    now: u64,
) -> anyhow::Result<()> {
    let ttl_s = mint.ttl_s()?;
    let MintArgs {
        agent,
        user,
        tools,
        customer,
        ttl,
    } = mint;
    if let Some(c) = &customer {
        toolgate_core::identity::check_customer(c)
            .map_err(|why| anyhow::anyhow!("`--customer`: {why}"))?;
    }
    let Some(a) = cfg.config.agents.iter().find(|a| *a.id.get_ref() == agent) else {
        bail!("no agent `{agent}` in {}", config.display());
    };
    if ttl_s > max_ttl_s {
        bail!("`--ttl {ttl}` is longer than `max_ttl_s` ({max_ttl_s} s)");
    }
    let mut narrowed: Vec<String> = Vec::new();
    for t in tools {
        if !a.tools.iter().any(|x| *x.get_ref() == t) {
            bail!(
                "tool `{t}` is not attached to agent `{agent}`: a sub-token cannot widen its agent"
            );
        }
        if !narrowed.contains(&t) {
            narrowed.push(t);
        }
    }
    if let Some(u) = &user {
        if u.is_empty() || u.len() > 256 || !u.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("`--user` must be a user id (printable, no spaces)");
        }
    }
    let claims = Claims {
        jti: hex::encode(&toolgate_ingress::random::bytes32()?[..16]),
        agent,
        user,
        tools: (!narrowed.is_empty()).then_some(narrowed),
        customer,
        iat: now,
        exp: now + ttl_s,
    };
    let token = subtokens::mint(dir, &claims)?;
    println!("{token}");
    eprintln!("id: {} (expires in {ttl_s} s)", claims.jti);
    Ok(())
}

/// Prints every token minted in `dir` (claims only) with its state at `now`.
fn list_tokens(dir: &Path, now: u64) -> anyhow::Result<()> {
    let revoked = subtokens::revoked(dir)?;
    for c in subtokens::minted(dir)? {
        let state = if revoked.contains(&c.jti) {
            "revoked"
        } else if c.exp <= now {
            "expired"
        } else {
            "active"
        };
        println!(
            "{}  {:8} agent={} user={} tools={} expires_in={}s",
            c.jti,
            state,
            c.agent,
            c.user.as_deref().unwrap_or("-"),
            c.tools.map(|t| t.join(",")).unwrap_or_else(|| "*".into()),
            c.exp.saturating_sub(now)
        );
    }
    Ok(())
}

/// Revokes the token minted in `dir` with id `token` (or the token itself)
/// as of `now`.
fn revoke_token(dir: &Path, token: String, now: u64) -> anyhow::Result<()> {
    // Accept the token itself: its id is read from the verified payload.
    let jti = if toolgate_core::subtoken::looks_like_subtoken(token.as_bytes()) {
        let v = subtokens::verifier(dir)?;
        match v.verify(token.as_bytes(), 0) {
            Ok(c) => c.jti,
            Err(toolgate_core::jwt::TokenError::Revoked) => {
                bail!("this token is already revoked")
            }
            Err(e) => bail!("not a token minted here: {}", e.reason()),
        }
    } else {
        token
    };
    if jti.is_empty() || !jti.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("`{jti}` is not a token id");
    }
    if !subtokens::minted(dir)?.iter().any(|c| c.jti == jti) {
        bail!("no minted token has id `{jti}` (see `toolgate token list`)");
    }
    subtokens::revoke(dir, &jti, now)?;
    println!("revoked {jti}");
    Ok(())
}
