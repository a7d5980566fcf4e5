//! The `toolgate` command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use toolgate_core::config::{self, SinkConfig, SinkKind, SinkTarget, SinkTransport, ValidConfig};
use toolgate_decision::policy::PolicyBundle;
use toolgate_decision::{Catalog, Snapshot};
use toolgate_ingress::{demo, shard, shared::Shared};
use toolgate_sinks::key::{load_key, KeySource, GENERATED_KEY_FILE};
use toolgate_sinks::retention::{Policy as RetentionPolicy, Retainer};
use toolgate_sinks::siem::HttpSink;
use toolgate_sinks::sink::{RunnerOptions, Sink, SinkRunner};
use toolgate_sinks::soar::SoarSink;
use toolgate_sinks::syslog::{local_hostname, SyslogFormat};
use toolgate_sinks::tls::{client_config, server_name, TlsFiles};
use toolgate_sinks::transport::{SyslogSink, Transport};
use toolgate_sinks::{audit_ring, AuditHealth, AuditWriter, WriterConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// toolgate: the gateway between AI agents and the tools they call.
#[derive(Parser)]
#[command(name = "toolgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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

#[derive(Subcommand)]
enum ToolsCommand {
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

/// What a sub-token is minted for: `toolgate token mint` and `toolgate
/// admin token mint`.
#[derive(clap::Args)]
struct MintArgs {
    /// The agent the token acts as.
    #[arg(long)]
    agent: String,
    /// Narrow the token to this end user.
    #[arg(long)]
    user: Option<String>,
    /// Narrow the token to this tool (repeatable; each must be attached to the agent).
    #[arg(long = "tool", value_name = "TOOL")]
    tools: Vec<String>,
    /// Lifetime: `90s`, `30m`, `1h`, `7d`.
    #[arg(long, default_value = "1h")]
    ttl: String,
}

impl MintArgs {
    /// `--ttl` in seconds (above 0).
    fn ttl_s(&self) -> anyhow::Result<u64> {
        let ttl = &self.ttl;
        toolgate_sinks::query::parse_duration_s(ttl)
            .filter(|s| *s > 0)
            .with_context(|| format!("`--ttl {ttl}`: expected a duration such as 30m, 1h, 7d"))
    }
}

#[derive(Subcommand)]
enum TokenCommand {
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

/// Where the admin API is and how to authenticate to it.
#[derive(clap::Args)]
struct AdminApiArgs {
    /// The admin API (`[admin] listen`): `http://` for a loopback listener,
    /// `https://` for one with `[admin.tls]`.
    #[arg(
        long,
        global = true,
        env = "TOOLGATE_ADMIN_URL",
        default_value = "http://127.0.0.1:9091"
    )]
    url: String,
    /// With `https://`: PEM CA certificates the admin listener's certificate
    /// must chain to. Default: the system's trusted roots.
    #[arg(
        long,
        global = true,
        env = "TOOLGATE_ADMIN_CA_FILE",
        value_name = "FILE"
    )]
    ca_file: Option<PathBuf>,
    /// With `https://`: a PEM client certificate, for an admin listener with
    /// `[admin.tls] client_ca_file`.
    #[arg(long, global = true, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The private key of `--client-cert`.
    #[arg(long, global = true, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// An admin token (its SHA-256 is in `[[admin.tokens]]`).
    #[arg(
        long,
        global = true,
        env = "TOOLGATE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
}

#[derive(Subcommand)]
enum AdminCommand {
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

#[derive(Subcommand)]
enum AdminTokenCommand {
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

#[derive(Subcommand)]
enum PolicyCommand {
    /// Parse the configured policies and validate them against the schema
    /// generated from the configuration and the upstreams' tool catalogs
    /// (fetched now; an unreachable upstream's tools get untyped arguments).
    Validate {
        /// Configuration file (TOML).
        #[arg(short, long, value_name = "FILE", default_value = "toolgate.toml")]
        config: PathBuf,
        /// Do not contact upstreams: arguments of every tool are untyped.
        #[arg(long)]
        offline: bool,
    },
    /// Run policy test cases (TOML files of `[[case]]`) through the decision code.
    Test {
        /// Configuration file (TOML).
        #[arg(short, long, value_name = "FILE", default_value = "toolgate.toml")]
        config: PathBuf,
        /// Case files.
        #[arg(required = true, value_name = "CASES")]
        cases: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Prove the log's hash chain and segment seals intact; report the first
    /// broken or missing record. Exit status 1 if broken.
    Verify {
        /// The audit directory (`[audit] dir`).
        dir: PathBuf,
        /// File holding the checkpoint key. Default: `DIR/checkpoint.key` if present.
        #[arg(long, value_name = "FILE", conflicts_with = "key_env")]
        key_file: Option<PathBuf>,
        /// Environment variable holding the checkpoint key.
        #[arg(long, value_name = "VAR")]
        key_env: Option<String>,
    },
    /// Print the records that match every given filter, oldest first.
    Query {
        /// The audit directory.
        dir: PathBuf,
        /// Only this agent.
        #[arg(long)]
        agent: Option<String>,
        /// Only this end user.
        #[arg(long)]
        user: Option<String>,
        /// Only this tool (as the agent named it).
        #[arg(long)]
        tool: Option<String>,
        /// Only `allow` or `deny`.
        #[arg(long)]
        decision: Option<String>,
        /// Only records since a duration ago (`90s`, `30m`, `1h`, `2d`) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Print the records' JSON lines instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Print the last records; with -f, keep printing new ones.
    Tail {
        /// The audit directory.
        dir: PathBuf,
        /// Keep following the log.
        #[arg(short, long)]
        follow: bool,
        /// How many of the last records to print first.
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: usize,
        /// Print JSON lines instead of summaries.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Print a fresh API key and the SHA-256 to put in `api_key_sha256`.
    New,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Admin {
        api,
        command: AdminCommand::Diff { dir, prune },
    } = &cli.command
    {
        return match admin_cmd::diff_dir(api, dir, *prune) {
            Ok(false) => ExitCode::SUCCESS,
            Ok(true) => ExitCode::from(2),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let result = match cli.command {
        Command::Run { config } => load(&config).and_then(|c| run(c, None)),
        Command::Check { config } => check(&config),
        Command::Demo { port } => demo_main(port),
        Command::Key {
            command: KeyCommand::New,
        } => key_new(),
        Command::Policy {
            command: PolicyCommand::Validate { config, offline },
        } => policy_validate(&config, offline),
        Command::Policy {
            command: PolicyCommand::Test { config, cases },
        } => policy_test(&config, &cases),
        Command::Audit { command } => audit_cmd::run(command),
        Command::Token { command } => token_cmd(command),
        Command::Tools { command } => tools_cmd(command),
        Command::Admin { api, command } => admin_cmd::run(&api, command),
        Command::Apply {
            api,
            dir,
            dry_run,
            prune,
        } => admin_cmd::apply_dir(&api, &dir, dry_run, prune),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &Path) -> anyhow::Result<ValidConfig> {
    match config::load(path) {
        Ok(c) => Ok(c),
        Err(errors) => bail!("invalid configuration\n{errors}"),
    }
}

fn tools_cmd(command: ToolsCommand) -> anyhow::Result<()> {
    use toolgate_decision::pins::{PinStatus, Pins};
    let (config, approve) = match &command {
        ToolsCommand::List { config } => (config.clone(), None),
        ToolsCommand::Approve { config, tools, all } => {
            (config.clone(), Some((tools.clone(), *all)))
        }
    };
    let cfg = load(&config)?;
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

fn token_cmd(command: TokenCommand) -> anyhow::Result<()> {
    use toolgate_core::subtoken::Claims;
    use toolgate_ingress::subtokens;
    let config = match &command {
        TokenCommand::Mint { config, .. }
        | TokenCommand::List { config }
        | TokenCommand::Revoke { config, .. } => config.clone(),
    };
    let config = &config;
    let cfg = load(config)?;
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
        TokenCommand::Mint { mint, .. } => {
            let ttl_s = mint.ttl_s()?;
            let MintArgs {
                agent,
                user,
                tools,
                ttl,
            } = mint;
            let Some(a) = cfg.config.agents.iter().find(|a| *a.id.get_ref() == agent) else {
                bail!("no agent `{agent}` in {}", config.display());
            };
            if ttl_s > st.max_ttl_s {
                bail!(
                    "`--ttl {ttl}` is longer than `max_ttl_s` ({} s)",
                    st.max_ttl_s
                );
            }
            let mut narrowed: Vec<String> = Vec::new();
            for t in tools {
                if !a.tools.iter().any(|x| *x.get_ref() == t) {
                    bail!("tool `{t}` is not attached to agent `{agent}`: a sub-token cannot widen its agent");
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
                jti: hex::encode(&random32()?[..16]),
                agent,
                user,
                tools: (!narrowed.is_empty()).then_some(narrowed),
                iat: now,
                exp: now + ttl_s,
            };
            let token = subtokens::mint(dir, &claims)?;
            println!("{token}");
            eprintln!("id: {} (expires in {ttl_s} s)", claims.jti);
        }
        TokenCommand::List { .. } => {
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
        }
        TokenCommand::Revoke { token, .. } => {
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
        }
    }
    Ok(())
}

fn check(path: &Path) -> anyhow::Result<()> {
    let cfg = load(path)?;
    load_policies(&cfg)?;
    let creds = toolgate_ingress::credential::load(&cfg)?;
    toolgate_ingress::oauth::clients(&cfg, &creds)?;
    load_tls(&cfg)?;
    // Sink tokens and TLS files are read as at start (nothing is sent).
    for (s, t) in cfg.config.audit.sinks.iter().zip(&cfg.sink_targets) {
        build_sink(s, t, &cfg.audit_dir)?;
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

/// Every certificate, key and CA bundle the configuration names.
fn load_tls(cfg: &ValidConfig) -> anyhow::Result<toolgate_ingress::tls::TlsSetup> {
    toolgate_ingress::tls::TlsSetup::load(cfg).map_err(|e| anyhow::anyhow!("TLS: {e}"))
}

fn load_policies(cfg: &ValidConfig) -> anyhow::Result<PolicyBundle> {
    toolgate_decision::policy::load(&cfg.policy_files).map_err(|errs| {
        anyhow::anyhow!(
            "invalid policies\n{}",
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

/// Fetches every upstream's catalog once (for validation), on a throwaway executor.
fn fetch_catalogs(cfg: &ValidConfig) -> Vec<Option<Arc<Catalog>>> {
    let infos = Snapshot::build(cfg, &[]).upstreams;
    // A credential that cannot be read leaves its upstream uncredentialed
    // here: `check` reports it, and `run` refuses to start.
    let creds: Vec<Option<toolgate_core::secret::Secret>> = cfg
        .upstreams
        .iter()
        .map(|u| {
            let c = u.entry.credential.as_ref()?;
            toolgate_ingress::credential::read(u.name(), c, u.credential_file.as_deref()).ok()
        })
        .collect();
    let namer = cfg.namer.clone();
    let tls = toolgate_ingress::tls::TlsSetup::load(cfg)
        .map(|t| t.upstreams)
        .unwrap_or_else(|e| {
            eprintln!("warning: {e}");
            std::collections::HashMap::new()
        });
    let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let mut out = Vec::new();
            for (idx, (info, cred)) in infos.into_iter().zip(creds).enumerate() {
                let name = info.name.clone();
                let cred = cred.map(|c| toolgate_decision::Published::new(c).reader());
                let tls = tls.get(&*name).cloned();
                let upstream = toolgate_ingress::upstream::Upstream::new(info, cred, tls);
                let cat = match upstream.list_tools().await {
                    Ok(pages) => Catalog::from_pages(idx, &namer, &pages).ok().map(Arc::new),
                    Err(e) => {
                        eprintln!(
                            "warning: upstream `{name}`: {e}; its tools' arguments are untyped"
                        );
                        None
                    }
                };
                out.push(cat);
            }
            out
        });
    match handle {
        Ok(h) => h.join().unwrap_or_default(),
        Err(e) => {
            eprintln!("warning: cannot contact upstreams ({e}); arguments are untyped");
            Vec::new()
        }
    }
}

fn policy_validate(path: &Path, offline: bool) -> anyhow::Result<()> {
    let cfg = load(path)?;
    let bundle = load_policies(&cfg)?;
    if bundle.is_empty() {
        println!(
            "{}: no policy files configured; the permission map alone decides",
            path.display()
        );
        return Ok(());
    }
    let catalogs = if offline {
        Vec::new()
    } else {
        fetch_catalogs(&cfg)
    };
    let snap = Snapshot::build(&cfg, &catalogs);
    let errors = bundle.validate(snap.cedar_schema());
    if errors.is_empty() {
        let files: Vec<String> = bundle.files().map(|f| f.display().to_string()).collect();
        println!(
            "policies ok: {} policies in {}",
            bundle.names.len(),
            files.join(", ")
        );
        return Ok(());
    }
    for e in &errors {
        eprintln!("{e}");
    }
    bail!("{} policy validation error(s)", errors.len())
}

fn policy_test(path: &Path, case_files: &[PathBuf]) -> anyhow::Result<()> {
    let cfg = load(path)?;
    let bundle = Arc::new(load_policies(&cfg)?);
    let snap = Snapshot::build(&cfg, &[]).with_policies(&cfg, bundle);
    let (mut passed, mut failed) = (0, 0);
    for file in case_files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let cases = toolgate_decision::policy::cases::parse(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        for r in toolgate_decision::policy::cases::run(&snap, &cases.cases) {
            if r.passed() {
                passed += 1;
                println!("ok    {}: {} ({})", r.name, r.got, r.detail);
            } else {
                failed += 1;
                println!(
                    "FAIL  {}: expected {}, got {} ({})",
                    r.name, r.expected, r.got, r.detail
                );
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} policy case(s) failed");
    }
    Ok(())
}

fn random32() -> anyhow::Result<[u8; 32]> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    Ok(b)
}

fn key_new() -> anyhow::Result<()> {
    let (key, hash) = toolgate_core::identity::format_key(&random32()?);
    println!("key: {key}");
    println!("sha256: {hash}");
    Ok(())
}

fn init_logging(cfg: &ValidConfig) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.config.log.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = if cfg.config.log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Runs the gateway until SIGINT/SIGTERM; `banner` is printed once listening.
fn run(
    cfg: ValidConfig,
    banner: Option<Box<dyn FnOnce(std::net::SocketAddr)>>,
) -> anyhow::Result<()> {
    init_logging(&cfg);
    let shards = toolgate_ingress::shared::shard_count(&cfg);
    // One audit ring per shard, and one for the admin API when it is on.
    let admin_on = cfg.admin_listen.is_some();
    let rings = shards + usize::from(admin_on);
    let mut writers = Vec::with_capacity(rings);
    let mut consumers = Vec::with_capacity(rings);
    for _ in 0..rings {
        let (w, c) = audit_ring(cfg.config.audit.ring_capacity);
        writers.push(w);
        consumers.push(c);
    }
    let a = &cfg.config.audit;
    let key_source = match (&a.checkpoint_key_env, &cfg.checkpoint_key_file) {
        (Some(var), _) => KeySource::Env(var.get_ref().clone()),
        (None, Some(file)) => KeySource::File(file.clone()),
        (None, None) => KeySource::Generated(cfg.audit_dir.clone()),
    };
    let key = load_key(&key_source).context("loading the audit checkpoint key")?;
    if let Some(path) = &key.generated {
        tracing::warn!(key = %path.display(), "generated a checkpoint key for audit segment seals; keep a copy apart from the log, or set `checkpoint_key_file`/`checkpoint_key_env`");
    }
    let health = AuditHealth::new(rings, a.durability);
    let audit = AuditWriter::spawn(
        WriterConfig {
            dir: cfg.audit_dir.clone(),
            fsync_interval: Duration::from_millis(a.fsync_interval_ms),
            segment_bytes: a.segment_bytes,
            segment_max_age: a.segment_max_age_s.map(Duration::from_secs),
            durability: a.durability,
            background: a.writer_priority == toolgate_core::config::WriterPriority::Background,
            key: key.bytes.clone(),
        },
        consumers,
        Arc::clone(&health),
    )
    .context("starting the audit log")?;
    let audit_dir = audit.dir().to_path_buf();
    let sinks = start_sinks(&cfg)?;
    let retainer = start_retention(&cfg, key.bytes)?;
    load_policies(&cfg)?;
    let (policies, _) = toolgate_decision::policy::read_sources(&cfg.policy_files);
    let watch = cfg.config.policies.watch;
    let credentials = toolgate_ingress::credential::load(&cfg)?;
    toolgate_ingress::credential::watch(&cfg, &credentials);
    let tls = load_tls(&cfg)?;
    let subtokens = cfg
        .subtoken_dir
        .as_deref()
        .map(toolgate_ingress::subtokens::verifier)
        .transpose()
        .context("[auth.subtokens]")?;
    let oauth = toolgate_ingress::oauth::clients(&cfg, &credentials)?;
    let pins = cfg
        .pins_file
        .as_deref()
        .map(toolgate_decision::pins::Pins::load)
        .transpose()?;
    let loaded = toolgate_ingress::shared::Loaded {
        credentials,
        tls,
        subtokens,
        oauth,
        pins,
    };
    // The control state applies only with the admin API on: without it,
    // the configuration file alone decides.
    let (store, control, follower) = if admin_on {
        match cfg.config.admin.backend.get_ref() {
            toolgate_core::config::StateBackend::Embedded => {
                let store = toolgate_control::Store::open(&cfg.admin_state_file)?;
                let state = toolgate_control::Backend::load(&store)?;
                tracing::info!(file = %cfg.admin_state_file.display(), resources = state.entries.len(), revision = state.revision, "control state loaded");
                (
                    Some(Box::new(store) as Box<dyn toolgate_control::Backend>),
                    state,
                    None,
                )
            }
            toolgate_core::config::StateBackend::Postgres => {
                let opts = toolgate_control::PgOptions {
                    url: cfg
                        .config
                        .admin
                        .postgres_url
                        .as_ref()
                        .map(|u| u.get_ref().clone())
                        .unwrap_or_default(),
                    password: cfg.admin_postgres_password.clone(),
                };
                let store = toolgate_control::PgStore::open(opts)?;
                let state = toolgate_control::Backend::load(&store)?;
                let follower = store.listener()?;
                tracing::info!(database = %cfg.config.admin.postgres_url.as_ref().map(|u| u.get_ref().as_str()).unwrap_or(""), resources = state.entries.len(), revision = state.revision, "control state loaded");
                (
                    Some(Box::new(store) as Box<dyn toolgate_control::Backend>),
                    state,
                    Some(follower),
                )
            }
        }
    } else {
        (None, toolgate_control::State::default(), None)
    };
    let admin_writer = if admin_on { writers.pop() } else { None };
    let shared: Arc<Shared> =
        Shared::new(cfg, policies, control, random32()?, loaded).map_err(|e| {
            anyhow::anyhow!(
                "the control state's policies do not compile\n{}",
                e.join("\n")
            )
        })?;
    shared.metrics.set_audit(audit.stats(), Arc::clone(&health));
    shared.metrics.set_sinks(
        sinks
            .iter()
            .map(|s| (s.name().to_owned(), s.stats()))
            .collect(),
    );
    let running = shard::start(Arc::clone(&shared), writers, Arc::clone(&health))
        .context("starting shards")?;
    if let (Some(store), Some(writer)) = (store, admin_writer) {
        let ring = u16::try_from(shards).unwrap_or(u16::MAX);
        let addr = toolgate_ingress::admin::start(
            Arc::clone(&shared),
            store,
            writer,
            Arc::clone(&health),
            ring,
        )?;
        tracing::info!(%addr, "admin API listening");
    }
    if let Some(follower) = follower {
        let every = std::time::Duration::from_millis(
            *shared.config.config.admin.poll_interval_ms.get_ref(),
        );
        toolgate_ingress::admin::follow(Arc::clone(&shared), follower, every)
            .context("starting the control-state follower")?;
    }
    tracing::info!(addr = %running.addr, shards, audit = %audit_dir.display(), sinks = sinks.len(), "toolgate listening");
    if let Some(b) = banner {
        b(running.addr);
    }
    watch_control_files(Arc::clone(&shared));
    if watch {
        watch_files(Arc::clone(&shared));
    }
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .context("installing signal handlers")?;
    for sig in signals.forever() {
        if sig == signal_hook::consts::SIGHUP {
            reload(&shared, "SIGHUP");
            continue;
        }
        tracing::info!(signal = sig, "shutting down");
        break;
    }
    // Let responses in flight finish, then drain every ring into the log.
    std::thread::sleep(Duration::from_millis(100));
    audit.shutdown();
    for s in sinks {
        s.shutdown();
    }
    if let Some(r) = retainer {
        r.shutdown();
    }
    std::process::exit(0);
}

fn reload(shared: &Shared, why: &str) {
    match shared.reload() {
        Ok(generation) => tracing::info!(
            generation,
            trigger = why,
            "configuration and policies reloaded"
        ),
        Err(e) => tracing::error!(
            trigger = why,
            "reload refused, the running snapshot stays:\n{e}"
        ),
    }
}

/// Control files whose change is published at once, polled every 200 ms
/// (size, mtime and inode: one `stat` each), always on, independent of
/// `[policies] watch` and of configuration edits: the sub-token revocation
/// list and the tool pins file. A revocation or an approval must not wait on
/// (or be blocked by) an unrelated edit.
fn watch_control_files(shared: Arc<Shared>) {
    type Publish = fn(&Shared) -> Result<u64, toolgate_ingress::shared::ReloadError>;
    let mut files: Vec<(PathBuf, Publish, &'static str)> = Vec::new();
    if let Some(f) = shared.revocation_file() {
        files.push((f, Shared::reload_revocations, "sub-token revocations"));
    }
    if let Some(f) = shared.config.pins_file.clone() {
        files.push((f, Shared::reload_pins, "tool pins"));
    }
    if files.is_empty() {
        return;
    }
    let stamp = |f: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(f)
            .ok()
            .map(|m| (m.len(), m.modified().ok(), m.ino()))
    };
    let spawned = std::thread::Builder::new()
        .name("toolgate-control".into())
        .spawn(move || {
            let mut last: Vec<_> = files.iter().map(|(f, _, _)| stamp(f)).collect();
            loop {
                std::thread::sleep(Duration::from_millis(200));
                for (i, (file, publish, what)) in files.iter().enumerate() {
                    let now = stamp(file);
                    if now == last[i] {
                        continue;
                    }
                    match publish(&shared) {
                        Ok(generation) => {
                            last[i] = now;
                            tracing::info!(generation, "{what} published");
                        }
                        Err(e) => {
                            tracing::error!("cannot read the {what} (the previous ones stay): {e}")
                        }
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch control files; reload with SIGHUP");
    }
}

/// Reloads when the configuration or a policy file changes (polled every
/// second: cheap, and works on every filesystem).
fn watch_files(shared: Arc<Shared>) {
    let stamp = |files: &[PathBuf]| -> Vec<Option<std::time::SystemTime>> {
        files
            .iter()
            .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
            .collect()
    };
    let spawned = std::thread::Builder::new()
        .name("toolgate-watch".into())
        .spawn(move || {
            let mut files = shared.watched_files();
            let mut last = stamp(&files);
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let now = stamp(&files);
                if now != last {
                    reload(&shared, "file change");
                    files = shared.watched_files();
                    last = stamp(&files);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch policy files; reload with SIGHUP");
    }
}

/// Starts the retention thread when `retain_days` or `retain_bytes` is set.
fn start_retention(cfg: &ValidConfig, key: Vec<u8>) -> anyhow::Result<Option<Retainer>> {
    let a = &cfg.config.audit;
    if a.retain_days.is_none() && a.retain_bytes.is_none() {
        return Ok(None);
    }
    let policy = RetentionPolicy {
        max_age: a
            .retain_days
            .map(|d| Duration::from_secs(d.saturating_mul(86_400))),
        max_bytes: a.retain_bytes,
    };
    let sinks = a.sinks.iter().map(|s| s.name.get_ref().clone()).collect();
    let r = Retainer::spawn(cfg.audit_dir.clone(), policy, sinks, key)
        .context("starting audit retention")?;
    tracing::info!(
        retain_days = a.retain_days,
        retain_bytes = a.retain_bytes,
        "audit retention on"
    );
    Ok(Some(r))
}

/// Builds the sink of one `[[audit.sinks]]` entry (reading its token and
/// TLS files); also names its target for the log.
fn build_sink(
    s: &SinkConfig,
    t: &SinkTarget,
    audit_dir: &std::path::Path,
) -> anyhow::Result<(Box<dyn Sink>, String)> {
    let name = s.name.get_ref();
    let hostname = s.hostname.clone().unwrap_or_else(local_hostname);
    Ok(match s.kind {
        SinkKind::Syslog => {
            let Some(addr) = t.address else {
                bail!("sink `{name}` has no address");
            };
            let transport = match s.transport.as_ref().map(|t| *t.get_ref()) {
                Some(SinkTransport::Udp) => Transport::Udp,
                Some(SinkTransport::Tcp) | None => Transport::Tcp,
                Some(SinkTransport::Tls) => {
                    let config = client_config(&TlsFiles {
                        ca_file: t.ca_file.clone(),
                        cert_file: t.cert_file.clone(),
                        key_file: t.key_file.clone(),
                    })
                    .with_context(|| format!("sink `{name}`"))?;
                    let sni =
                        server_name(&t.server_name).with_context(|| format!("sink `{name}`"))?;
                    Transport::Tls(config, sni)
                }
            };
            let format = SyslogFormat {
                facility: s.facility,
                app_name: s.app_name.clone(),
                hostname,
                max_message_bytes: s.max_message_bytes,
            };
            let sink = SyslogSink::new(
                format,
                transport,
                addr,
                Duration::from_millis(s.io_timeout_ms),
            );
            (Box::new(sink), addr.to_string())
        }
        SinkKind::Soar => {
            let sink = SoarSink::from_config(s, t, audit_dir, hostname)?;
            let url = s
                .url
                .as_ref()
                .map(|u| u.get_ref().clone())
                .unwrap_or_default();
            (Box::new(sink), url)
        }
        SinkKind::SplunkHec | SinkKind::Elasticsearch | SinkKind::Webhook => {
            let sink = HttpSink::from_config(s, t, hostname)?;
            let url = s
                .url
                .as_ref()
                .map(|u| u.get_ref().clone())
                .unwrap_or_default();
            (Box::new(sink), url)
        }
    })
}

/// Starts one delivery thread per `[[audit.sinks]]` entry.
fn start_sinks(cfg: &ValidConfig) -> anyhow::Result<Vec<SinkRunner>> {
    let mut out = Vec::new();
    for (s, t) in cfg.config.audit.sinks.iter().zip(&cfg.sink_targets) {
        let name = s.name.get_ref();
        let (sink, target) = build_sink(s, t, &cfg.audit_dir)?;
        let opts = RunnerOptions {
            batch_records: s.batch_records,
            poll_interval: Duration::from_millis(s.poll_interval_ms),
            retry_initial: Duration::from_millis(s.retry_initial_ms),
            retry_max: Duration::from_millis(s.retry_max_ms.max(s.retry_initial_ms)),
        };
        let runner = SinkRunner::spawn(name, &cfg.audit_dir, sink, opts)
            .with_context(|| format!("starting audit sink `{name}`"))?;
        tracing::info!(sink = %name, target = %target, "audit sink started");
        out.push(runner);
    }
    Ok(out)
}

/// `toolgate audit …`.
mod audit_cmd {
    use std::io::Write;
    use std::path::Path;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use anyhow::{bail, Context};
    use toolgate_sinks::key::{load_key, KeySource};
    use toolgate_sinks::query::{human_line, parse_since, Filter};
    use toolgate_sinks::reader::{Entry, LogReader, Position};
    use toolgate_sinks::verify::{verify, VerifyError};

    use super::{AuditCommand, GENERATED_KEY_FILE};

    pub fn run(cmd: AuditCommand) -> anyhow::Result<()> {
        match cmd {
            AuditCommand::Verify {
                dir,
                key_file,
                key_env,
            } => verify_cmd(&dir, key_file, key_env),
            AuditCommand::Query {
                dir,
                agent,
                user,
                tool,
                decision,
                since,
                json,
            } => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_micros() as u64)
                    .unwrap_or(0);
                let since_us = since.map(|s| parse_since(&s, now)).transpose()?;
                let filter = Filter {
                    agent,
                    user,
                    tool,
                    since_us,
                    ..Filter::default()
                }
                .with_decision(decision)?;
                query_cmd(&dir, &filter, json)
            }
            AuditCommand::Tail {
                dir,
                follow,
                lines,
                json,
            } => tail_cmd(&dir, follow, lines, json),
        }
    }

    fn verify_cmd(
        dir: &Path,
        key_file: Option<std::path::PathBuf>,
        key_env: Option<String>,
    ) -> anyhow::Result<()> {
        let source = match (key_env, key_file) {
            (Some(v), _) => Some(KeySource::Env(v)),
            (None, Some(f)) => Some(KeySource::File(f)),
            (None, None) => {
                let f = dir.join(GENERATED_KEY_FILE);
                f.exists().then_some(KeySource::File(f))
            }
        };
        let key = source
            .map(|s| load_key(&s))
            .transpose()
            .context("loading the checkpoint key")?;
        match verify(dir, key.as_ref().map(|k| k.bytes.as_slice())) {
            Ok(v) => {
                println!(
                    "ok: {} records in {} segments, hash chain intact; {} seals verified with the key{}{}",
                    v.records,
                    v.segments,
                    v.seals_checked,
                    if v.seals_unchecked > 0 {
                        format!(", {} seals not checked (no key given)", v.seals_unchecked)
                    } else {
                        String::new()
                    },
                    v.open_segment
                        .map(|s| format!("; `{s}` is open (sealed when it rotates or toolgate restarts)"))
                        .unwrap_or_default()
                );
                if let Some(n) = v.retained_through {
                    println!("records 1..{n} were removed by retention; the kept log continues its anchor (`retained.seal`)");
                }
                println!("head: {}", hex::encode(v.head));
                Ok(())
            }
            Err(VerifyError::Broken(b)) => {
                bail!("audit log broken: {b}")
            }
            Err(e) => Err(e.into()),
        }
    }

    fn print(out: &mut impl Write, e: &Entry, json: bool) -> std::io::Result<()> {
        if json {
            out.write_all(&e.line)?;
            out.write_all(b"\n")
        } else {
            let v: serde_json::Value = serde_json::from_slice(&e.line).unwrap_or_default();
            writeln!(out, "{}", human_line(&v))
        }
    }

    fn query_cmd(dir: &Path, filter: &Filter, json: bool) -> anyhow::Result<()> {
        if !dir.is_dir() {
            bail!("`{}` is not a directory", dir.display());
        }
        let mut reader = LogReader::new(dir, Position::START);
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let mut batch = Vec::new();
        loop {
            batch.clear();
            reader.read(4096, &mut batch)?;
            if batch.is_empty() {
                break;
            }
            for e in &batch {
                let v: serde_json::Value = serde_json::from_slice(&e.line).unwrap_or_default();
                if filter.matches(&v) {
                    print(&mut out, e, json)?;
                }
            }
        }
        out.flush()?;
        Ok(())
    }

    fn tail_cmd(dir: &Path, follow: bool, lines: usize, json: bool) -> anyhow::Result<()> {
        if !dir.is_dir() {
            bail!("`{}` is not a directory", dir.display());
        }
        let mut reader = LogReader::new(dir, Position::START);
        let mut last: std::collections::VecDeque<Entry> = std::collections::VecDeque::new();
        let mut batch = Vec::new();
        loop {
            batch.clear();
            reader.read(4096, &mut batch)?;
            if batch.is_empty() {
                break;
            }
            for e in batch.drain(..) {
                if last.len() == lines {
                    last.pop_front();
                }
                if lines > 0 {
                    last.push_back(e);
                }
            }
        }
        let stdout = std::io::stdout();
        {
            let mut out = stdout.lock();
            for e in &last {
                print(&mut out, e, json)?;
            }
            out.flush()?;
        }
        if !follow {
            return Ok(());
        }
        loop {
            batch.clear();
            reader.read(4096, &mut batch)?;
            if batch.is_empty() {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            let mut out = stdout.lock();
            for e in &batch {
                print(&mut out, e, json)?;
            }
            out.flush()?;
        }
    }
}

fn demo_main(port: u16) -> anyhow::Result<()> {
    let upstream = demo::start_upstream().context("starting the demo upstream")?;
    let dir = std::env::temp_dir().join(format!("toolgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let text = demo::config(listen, upstream, &dir.join("audit"));
    let path = dir.join("toolgate.toml");
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    let cfg = load(&path)?;
    let audit_file = cfg.audit_dir.clone();
    run(
        cfg,
        Some(Box::new(move |addr| {
            println!("{}", demo::instructions(addr, &audit_file));
            println!("(configuration written to {})", path.display());
        })),
    )
}

/// `toolgate admin …` and `toolgate apply`: clients of the admin API.
mod admin_cmd {
    use std::path::Path;

    use anyhow::{bail, Context};
    use serde_json::{json, Value};
    use toolgate_ingress::admin::client::{Client, Reply, TlsOptions};

    use super::{AdminApiArgs, AdminCommand, AdminTokenCommand};

    fn client(api: &AdminApiArgs) -> anyhow::Result<Client> {
        let tls = TlsOptions {
            ca_file: api.ca_file.clone(),
            client_cert: api.client_cert.clone(),
            client_key: api.client_key.clone(),
        };
        Ok(Client::new(&api.url, api.token.clone(), &tls)?)
    }

    /// The reply's body if 2xx; else its error, as the API put it.
    fn ok(r: Reply) -> anyhow::Result<Value> {
        if (200..300).contains(&r.status) {
            return Ok(r.json());
        }
        let v = r.json();
        let e = &v["error"];
        // The TLS listener's answer to plain HTTP has a string `error`.
        let message = e["message"].as_str().or(e.as_str()).unwrap_or("");
        let mut msg = format!(
            "{} ({}): {message}",
            r.status,
            e["code"].as_str().unwrap_or("error"),
        );
        if let Some(cur) = e.get("current_version") {
            msg.push_str(&format!("\ncurrent version: {cur}"));
        }
        bail!(msg)
    }

    fn print(v: &Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
        );
    }

    fn split(target: &str) -> anyhow::Result<(&str, &str)> {
        target
            .split_once('/')
            .filter(|(k, id)| !k.is_empty() && !id.is_empty())
            .with_context(|| format!("`{target}` is not `KIND/ID`, such as `agents/support-bot`"))
    }

    /// The stored version of a resource: 0 when only the configuration file
    /// defines it, `None` when it does not exist.
    fn current(c: &Client, target: &str) -> anyhow::Result<Option<(u64, Value)>> {
        let r = c.request("GET", &format!("/v1/{target}"), &[], None)?;
        if r.status == 404 {
            return Ok(None);
        }
        let v = ok(r)?;
        Ok(Some((v["version"].as_u64().unwrap_or(0), v)))
    }

    fn write(
        c: &Client,
        method: &str,
        target: &str,
        version: Option<u64>,
        body: Option<&[u8]>,
    ) -> anyhow::Result<Value> {
        let (k, v) = match version {
            Some(v) => ("If-Match", format!("\"{v}\"")),
            None => ("If-None-Match", "*".to_owned()),
        };
        let r = c.request(method, &format!("/v1/{target}"), &[(k, &v)], body)?;
        let status = r.status;
        let v = ok(r)?;
        if status == 202 {
            eprintln!(
                "warning: committed, but shards {} did not run it within the time limit",
                v["shards"]["pending"]
            );
        }
        Ok(v)
    }

    pub fn run(api: &AdminApiArgs, cmd: AdminCommand) -> anyhow::Result<()> {
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
            AdminCommand::Token { command } => token(&c, command)?,
            // Handled in `main` for its exit status.
            AdminCommand::Diff { dir, prune } => {
                diff_dir(api, &dir, prune)?;
            }
        }
        Ok(())
    }

    /// `toolgate admin token …`.
    fn token(c: &Client, cmd: AdminTokenCommand) -> anyhow::Result<()> {
        match cmd {
            AdminTokenCommand::Mint(mint) => {
                let ttl_s = mint.ttl_s()?;
                let super::MintArgs {
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
                    None => current(c, &target)?.map(|(v, _)| v).with_context(|| {
                        format!("no `{target}` (see `toolgate admin token list`)")
                    })?,
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

    /// Reads the agent, adds or removes `tool`, and writes it back under
    /// the version read: a concurrent change makes this fail (412), never
    /// get overwritten.
    fn attach(c: &Client, agent: &str, tool: &str, grant: bool) -> anyhow::Result<Value> {
        let target = format!("agents/{agent}");
        let (version, item) =
            current(c, &target)?.with_context(|| format!("no agent `{agent}`"))?;
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

    /// A resource document from a file: Cedar text for policies (or JSON
    /// `{"text":…}`), JSON otherwise.
    fn document(kind: &str, text: &str, file: &Path) -> anyhow::Result<Value> {
        if kind == "policies" && file.extension().is_some_and(|e| e == "cedar") {
            return Ok(json!({ "text": text }));
        }
        serde_json::from_str(text).with_context(|| format!("{} is not JSON", file.display()))
    }

    /// `toolgate admin diff -f DIR`: prints the plan; returns whether it
    /// changes anything.
    pub fn diff_dir(api: &AdminApiArgs, dir: &Path, prune: bool) -> anyhow::Result<bool> {
        let c = client(api)?;
        let (plan, ops) = plan_dir(&c, dir, prune)?;
        print_plan(&plan, &ops);
        Ok(!ops.is_empty())
    }

    fn print_plan(plan: &[String], ops: &[Value]) {
        println!("plan:");
        for line in plan {
            println!("{line}");
        }
        if ops.is_empty() {
            println!("nothing to change");
        }
    }

    /// `toolgate apply -f DIR`.
    pub fn apply_dir(
        api: &AdminApiArgs,
        dir: &Path,
        dry_run: bool,
        prune: bool,
    ) -> anyhow::Result<()> {
        let c = client(api)?;
        let (plan, ops) = plan_dir(&c, dir, prune)?;
        print_plan(&plan, &ops);
        if ops.is_empty() {
            return Ok(());
        }
        if dry_run {
            println!("{} change(s) not applied (--dry-run)", ops.len());
            return Ok(());
        }
        let body = json!({ "operations": ops }).to_string();
        let r = c.request("POST", "/v1/transaction", &[], Some(body.as_bytes()))?;
        if r.status == 412 {
            let v = r.json();
            bail!(
                "refused: `{}/{}` changed since the plan was made (now version {}); nothing was applied, run again",
                v["error"]["kind"].as_str().unwrap_or("?"),
                v["error"]["id"].as_str().unwrap_or("?"),
                v["error"]["current_version"]
            );
        }
        let v = ok(r)?;
        println!(
            "applied {} change(s) as generation {}",
            ops.len(),
            v["generation"]
        );
        Ok(())
    }

    /// The plan for `dir` against the live state: one line per file (and,
    /// with `prune`, per resource to delete), and the transaction's
    /// operations (each guarded by the version read). Deletions come last,
    /// in the reverse order of kinds, so that what refers to a resource goes
    /// before it; the transaction is checked as a whole either way.
    fn plan_dir(c: &Client, dir: &Path, prune: bool) -> anyhow::Result<(Vec<String>, Vec<Value>)> {
        if !dir.is_dir() {
            bail!("`{}` is not a directory", dir.display());
        }
        let mut ops = Vec::new();
        let mut plan = Vec::new();
        let mut deletions: Vec<(String, Value)> = Vec::new();
        for kind in ["credentials", "upstreams", "agents", "users", "policies"] {
            let sub = dir.join(kind);
            if !sub.is_dir() {
                continue;
            }
            let mut in_files = std::collections::BTreeSet::new();
            let mut files: Vec<_> = std::fs::read_dir(&sub)
                .with_context(|| format!("reading {}", sub.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.extension()
                        .is_some_and(|e| e == "json" || (kind == "policies" && e == "cedar"))
                })
                .collect();
            files.sort();
            for file in files {
                let Some(id) = file.file_stem().and_then(|s| s.to_str()) else {
                    continue;
                };
                in_files.insert(id.to_owned());
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                let want = document(kind, &text, &file)?;
                let target = format!("{kind}/{id}");
                let (version, have) = match current(c, &target)? {
                    Some((v, item)) => (v, Some(item)),
                    None => (0, None),
                };
                let same = have
                    .as_ref()
                    .is_some_and(|h| h["source"] == "store" && same_doc(&h["spec"], &want));
                if same {
                    plan.push(format!("  = {target} (version {version}, unchanged)"));
                    continue;
                }
                plan.push(match &have {
                    None => format!("  + {target} (create)"),
                    Some(h) if h["source"] == "config" => {
                        format!("  ~ {target} (replace the configuration file's)")
                    }
                    Some(_) => format!("  ~ {target} (update version {version})"),
                });
                ops.push(
                    json!({"op": "put", "kind": kind, "id": id, "if_match": version, "spec": want}),
                );
            }
            if prune {
                let r = c.request("GET", &format!("/v1/{kind}"), &[], None)?;
                let listed = ok(r)?;
                for item in listed["items"].as_array().into_iter().flatten() {
                    let Some(id) = item["id"].as_str() else {
                        continue;
                    };
                    if item["source"] != "store" || in_files.contains(id) {
                        continue;
                    }
                    let version = item["version"].as_u64().unwrap_or(0);
                    deletions.push((
                        format!("  - {kind}/{id} (delete version {version})"),
                        json!({"op": "delete", "kind": kind, "id": id, "if_match": version}),
                    ));
                }
            }
        }
        for (line, op) in deletions.into_iter().rev() {
            plan.push(line);
            ops.push(op);
        }
        Ok((plan, ops))
    }

    /// Whether two documents say the same, defaults filled in (a missing
    /// list is empty, a missing flag false).
    fn same_doc(have: &Value, want: &Value) -> bool {
        let (Some(h), Some(w)) = (have.as_object(), want.as_object()) else {
            return have == want;
        };
        let keys: std::collections::BTreeSet<&String> = h.keys().chain(w.keys()).collect();
        keys.into_iter().all(|k| {
            let dflt = |v: Option<&Value>| match v {
                None | Some(Value::Null) => None,
                Some(Value::Array(a)) if a.is_empty() => None,
                Some(Value::Bool(false)) => None,
                Some(v) => Some(v.clone()),
            };
            dflt(h.get(k)) == dflt(w.get(k))
        })
    }
}
