//! The `toolgate` command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use toolgate_core::config::{self, ValidConfig};
use toolgate_decision::policy::PolicyBundle;
use toolgate_decision::{Catalog, Snapshot};
use toolgate_ingress::{demo, shard, shared::Shared};
use toolgate_sinks::{audit_ring, AuditWriter, WriterConfig};

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
enum KeyCommand {
    /// Print a fresh API key and the SHA-256 to put in `api_key_sha256`.
    New,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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

fn check(path: &Path) -> anyhow::Result<()> {
    let cfg = load(path)?;
    load_policies(&cfg)?;
    println!(
        "{}: ok ({} upstreams, {} agents, listening on {})",
        path.display(),
        cfg.config.upstreams.len(),
        cfg.config.agents.len(),
        cfg.listen
    );
    Ok(())
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
    let namer = cfg.namer.clone();
    let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let mut out = Vec::new();
            for (idx, info) in infos.into_iter().enumerate() {
                let name = info.name.clone();
                let upstream = toolgate_ingress::mcp::upstream::Upstream::new(info);
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
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let shards = cfg
        .config
        .server
        .shards
        .as_ref()
        .map(|s| *s.get_ref())
        .unwrap_or(cores);
    let mut writers = Vec::with_capacity(shards);
    let mut consumers = Vec::with_capacity(shards);
    for _ in 0..shards {
        let (w, c) = audit_ring(cfg.config.audit.ring_capacity);
        writers.push(w);
        consumers.push(c);
    }
    let audit = AuditWriter::spawn(
        WriterConfig {
            dir: cfg.audit_dir.clone(),
            fsync_interval: Duration::from_millis(cfg.config.audit.fsync_interval_ms),
        },
        consumers,
    )
    .context("starting the audit log")?;
    let audit_path = audit.path().to_path_buf();
    let policies = load_policies(&cfg)?;
    let watch = cfg.config.policies.watch;
    let shared: Arc<Shared> = Shared::new(cfg, policies, random32()?);
    let running = shard::start(Arc::clone(&shared), writers).context("starting shards")?;
    tracing::info!(addr = %running.addr, shards, audit = %audit_path.display(), "toolgate listening");
    if let Some(b) = banner {
        b(running.addr);
    }
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

fn demo_main(port: u16) -> anyhow::Result<()> {
    let upstream = demo::start_upstream().context("starting the demo upstream")?;
    let dir = std::env::temp_dir().join(format!("toolgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let text = demo::config(listen, upstream, &dir.join("audit"));
    let path = dir.join("toolgate.toml");
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    let cfg = load(&path)?;
    let audit_file = cfg.audit_dir.join(toolgate_sinks::writer::LOG_FILE);
    run(
        cfg,
        Some(Box::new(move |addr| {
            println!("{}", demo::instructions(addr, &audit_file));
            println!("(configuration written to {})", path.display());
        })),
    )
}
