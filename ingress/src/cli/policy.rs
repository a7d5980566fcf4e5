//! `toolgate policy …`: validate the configured Cedar policies against the
//! schema, and run policy test cases through the decision code.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Subcommand;
use toolgate_decision::Snapshot;
use toolgate_ingress::process::load_policies;

use super::catalogs::fetch_catalogs;

/// `toolgate policy …`.
#[derive(Subcommand)]
pub enum PolicyCommand {
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
    /// Re-decide the calls an audit log recorded with a candidate policy set
    /// and print what would change (exit 0: nothing, 2: decisions change).
    Simulate(super::simulate::SimulateArgs),
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

/// Runs `toolgate policy …`.
pub fn run(command: PolicyCommand) -> anyhow::Result<std::process::ExitCode> {
    let done = |r: anyhow::Result<()>| r.map(|()| std::process::ExitCode::SUCCESS);
    match command {
        PolicyCommand::Validate { config, offline } => done(validate(&config, offline)),
        PolicyCommand::Simulate(args) => super::simulate::run(args),
        PolicyCommand::Test { config, cases } => done(test(&config, &cases)),
    }
}

fn validate(path: &Path, offline: bool) -> anyhow::Result<()> {
    let cfg = super::load(path)?;
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
    let errors = bundle.validate(snap.cedar_schema(&cfg));
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

fn test(path: &Path, case_files: &[PathBuf]) -> anyhow::Result<()> {
    let cfg = super::load(path)?;
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
