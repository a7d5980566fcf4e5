//! toolgate-loadtest: load generator, fast MCP upstream and side-by-side
//! comparison for toolgate. Loopback only; every run is bounded in time.

mod compare;
mod generate;
mod http;
mod secure;
mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use generate::{Era, Kind, Report, Workload};

#[derive(Parser)]
#[command(
    name = "toolgate-loadtest",
    about = "Load generator, fast MCP upstream and side-by-side comparison"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a minimal MCP upstream with one tool, `echo` (both eras).
    Upstream {
        /// Address to listen on (loopback only).
        #[arg(long, default_value = "127.0.0.1:9500")]
        listen: SocketAddr,
        /// Size of the text each call returns, bytes.
        #[arg(long, default_value_t = 1024)]
        result_bytes: usize,
        /// Answer with SSE instead of JSON.
        #[arg(long)]
        sse: bool,
    },
    /// Serve the same upstream over stdin/stdout (a `kind = "stdio"` upstream).
    StdioUpstream {
        /// Size of the text each call returns, bytes.
        #[arg(long, default_value_t = 1024)]
        result_bytes: usize,
    },
    /// Send `tools/call` requests: closed loop, or open loop with `--rate`.
    Run {
        /// MCP endpoint (loopback only), e.g. http://127.0.0.1:8080/mcp
        /// (or https:// with `--ca-file`).
        #[arg(long)]
        url: String,
        /// PEM CA the https:// endpoint's certificate chains to.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// API key sent as a bearer token.
        #[arg(long)]
        key: Option<String>,
        /// Tool expected to be allowed.
        #[arg(long, default_value = "echo")]
        tool: String,
        /// Tool expected to be refused (by policy or permission map), and its share in percent.
        #[arg(long, num_args = 2, value_names = ["TOOL", "PERCENT"])]
        denied: Option<Vec<String>>,
        /// Argument size, bytes.
        #[arg(long, default_value_t = 1024)]
        arg_bytes: usize,
        /// Concurrent connections.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Seconds to run (1–600).
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Open loop: total requests per second.
        #[arg(long)]
        rate: Option<f64>,
        /// MCP era of the calls.
        #[arg(long, value_enum, default_value_t = Era::Stateless)]
        era: Era,
        /// CPU to pin the generator to.
        #[arg(long)]
        cpu: Option<usize>,
        /// Label printed with the results.
        #[arg(long, default_value = "run")]
        label: String,
        /// Write the results as JSON here too.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Run the same workload against the upstream directly, toolgate and nginx, side by side.
    Compare {
        /// toolgate binary (a release build).
        #[arg(long, default_value = "target/release/toolgate")]
        toolgate: PathBuf,
        /// Seconds per scenario (1–120).
        #[arg(long, default_value_t = 6)]
        seconds: u64,
        /// Connections per scenario.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Argument size of calls, bytes.
        #[arg(long, default_value_t = 1024)]
        arg_bytes: usize,
        /// Idle connections opened for the memory-per-connection figure (0 skips).
        #[arg(long, default_value_t = 10000)]
        idle: usize,
        /// Write the results as JSON here too.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Run only the rows whose label contains this (repeatable).
        #[arg(long)]
        only: Vec<String>,
        /// A peer proxy to measure as one more row: its command line, run
        /// with `sh -c` pinned to the proxy CPU; `{config}`, `{port}`,
        /// `{upstream_port}` and `{dir}` are replaced.
        #[arg(long)]
        peer_cmd: Option<String>,
        /// The peer's configuration template (same placeholders), written to `{config}`.
        #[arg(long, requires = "peer_cmd")]
        peer_config: Option<PathBuf>,
        /// The port the peer serves MCP on (default: a free port, as `{port}`).
        #[arg(long, requires = "peer_cmd")]
        peer_port: Option<u16>,
        /// The peer's row label.
        #[arg(long, default_value = "peer")]
        peer_label: String,
        /// The peer's MCP path.
        #[arg(long, default_value = "/mcp")]
        peer_path: String,
        /// The tool to call through the peer.
        #[arg(long, default_value = "echo")]
        peer_tool: String,
        /// A bearer key the peer checks.
        #[arg(long)]
        peer_key: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Upstream {
            listen,
            result_bytes,
            sse,
        } => {
            if !listen.ip().is_loopback() {
                bail!("the load-test upstream listens on loopback only");
            }
            let h = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .name("upstream")
                .io_memory(1 << 20)
                .spawn(move || async move {
                    upstream::serve(listen, result_bytes, sse)
                        .await
                        .map_err(|e| e.to_string())
                })
                .map_err(|e| anyhow::anyhow!("starting the upstream: {e}"))?;
            h.join()
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .map_err(|e| anyhow::anyhow!(e))
        }
        Command::StdioUpstream { result_bytes } => upstream::serve_stdio(result_bytes),
        Command::Run {
            url,
            ca_file,
            key,
            tool,
            denied,
            arg_bytes,
            connections,
            duration,
            rate,
            era,
            cpu,
            label,
            json,
        } => {
            let (rest, tls) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
                (Some(r), _) => (r, None),
                (None, Some(r)) => {
                    let ca = ca_file.context("an https:// URL needs --ca-file")?;
                    (r, Some(secure::client_config(&ca)?))
                }
                _ => bail!("the URL must be http:// or https://"),
            };
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let addr: SocketAddr = authority.parse().context("the URL host must be IP:port")?;
            if !addr.ip().is_loopback() {
                bail!("load tests target 127.0.0.1 only");
            }
            let mut mix = vec![(tool, 100u32, Kind::Allowed)];
            if let Some(d) = denied {
                let pct: u32 = d
                    .get(1)
                    .and_then(|p| p.parse().ok())
                    .filter(|p| *p <= 100)
                    .context("percent 0–100")?;
                mix[0].1 = 100 - pct;
                mix.push((d[0].clone(), pct, Kind::Refused));
            }
            let w = Workload {
                label,
                addr,
                path: if path.is_empty() {
                    "/".into()
                } else {
                    path.into()
                },
                key,
                era,
                mix,
                arg_bytes,
                connections: connections.max(1),
                duration: Duration::from_secs(duration.clamp(1, 600)),
                rate,
                cpu,
                tls,
            };
            let r = generate::run(w)?;
            println!("{}\n{}", Report::header(), r.row());
            if !r.errors.is_empty() {
                println!("errors: {:?}", r.errors);
            }
            if let Some(p) = json {
                std::fs::write(p, serde_json::to_vec_pretty(&r.json())?)?;
            }
            Ok(())
        }
        Command::Compare {
            toolgate,
            seconds,
            connections,
            arg_bytes,
            idle,
            json,
            only,
            peer_cmd,
            peer_config,
            peer_port,
            peer_label,
            peer_path,
            peer_tool,
            peer_key,
        } => compare::compare(compare::Options {
            toolgate,
            seconds: seconds.clamp(1, 120),
            connections: connections.max(1),
            arg_bytes,
            idle,
            json,
            only,
            peer: peer_cmd.map(|command| compare::Peer {
                label: peer_label,
                command,
                config: peer_config,
                port: peer_port,
                path: peer_path,
                tool: peer_tool,
                key: peer_key,
            }),
        }),
    }
}
