//! `toolgate audit …`: prove the audit log's hash chain and seals, query
//! it, follow it. These read the log files only; no gateway needs to run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Subcommand;
use toolgate_sinks::key::{load_key, KeySource, GENERATED_KEY_FILE};
use toolgate_sinks::query::{human_line, parse_since, Filter};
use toolgate_sinks::reader::{Entry, LogReader, Position};
use toolgate_sinks::verify::{verify, VerifyError};

/// `toolgate audit …`.
#[derive(Subcommand)]
pub enum AuditCommand {
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

/// Runs `toolgate audit …`.
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
    key_file: Option<PathBuf>,
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
