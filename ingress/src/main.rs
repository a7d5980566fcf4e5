//! The `toolgate` command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use toolgate_core::config::{self, ValidConfig};
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
    println!(
        "{}: ok ({} upstreams, {} agents, listening on {})",
        path.display(),
        cfg.config.upstreams.len(),
        cfg.config.agents.len(),
        cfg.listen
    );
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
    let shared: Arc<Shared> = Shared::new(cfg, random32()?);
    let running = shard::start(Arc::clone(&shared), writers).context("starting shards")?;
    tracing::info!(addr = %running.addr, shards, audit = %audit_path.display(), "toolgate listening");
    if let Some(b) = banner {
        b(running.addr);
    }
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("installing signal handlers")?;
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "shutting down");
    }
    // Let responses in flight finish, then drain every ring into the log.
    std::thread::sleep(Duration::from_millis(100));
    audit.shutdown();
    std::process::exit(0);
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
