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
    /// Make the shadow policies the enforced ones: `@shadow` policies lose
    /// the annotation, `@shadow("retire")` policies are removed, in the
    /// configured policy files (a running toolgate reloads them).
    Promote {
        /// Configuration file (TOML).
        #[arg(short, long, value_name = "FILE", default_value = "toolgate.toml")]
        config: PathBuf,
        /// Show what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
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

/// Runs `toolgate policy …`.
pub fn run(command: PolicyCommand) -> anyhow::Result<std::process::ExitCode> {
    let done = |r: anyhow::Result<()>| r.map(|()| std::process::ExitCode::SUCCESS);
    match command {
        PolicyCommand::Validate { config, offline } => done(validate(&config, offline)),
        PolicyCommand::Simulate(args) => super::simulate::run(args),
        PolicyCommand::Promote { config, dry_run } => done(promote(&config, dry_run)),
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

/// Rewrites the policy files with the shadow policies promoted: every
/// file is read, promoted and the result checked to compile as one set
/// before any is written; a file that changed since it was read stops the
/// promotion before anything is written (the files are replaced whole,
/// each by a rename).
fn promote(path: &Path, dry_run: bool) -> anyhow::Result<()> {
    use toolgate_decision::policy::promote::promote;
    let cfg = super::load(path)?;
    let mut changed = Vec::new();
    let (mut enforced, mut retired) = (0, 0);
    let mut sources = Vec::new();
    for file in &cfg.policy_files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let p = promote(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        enforced += p.enforced;
        retired += p.retired;
        sources.push((file.clone(), p.text.clone()));
        if p.text != text {
            changed.push((file.clone(), text, p.text));
        }
    }
    if let Err(errs) = toolgate_decision::policy::from_sources(&sources) {
        let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
        bail!(
            "the promoted policies would not compile; nothing written:\n{}",
            lines.join("\n")
        );
    }
    if changed.is_empty() {
        println!("no shadow policy to promote");
        return Ok(());
    }
    for (file, _, _) in &changed {
        println!("{}", file.display());
    }
    println!("{enforced} shadow policies enforced, {retired} retired");
    if dry_run {
        println!("(dry run: nothing written)");
        return Ok(());
    }
    for (file, before, _) in &changed {
        let now = std::fs::read_to_string(file)?;
        if &now != before {
            bail!(
                "{} changed while promoting; nothing written — run it again",
                file.display()
            );
        }
    }
    for (file, _, after) in &changed {
        let tmp = file.with_extension("cedar.promoting");
        std::fs::write(&tmp, after).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, file).with_context(|| format!("replacing {}", file.display()))?;
    }
    println!(
        "written; a running toolgate reloads them (within a second with `watch`, or on SIGHUP)"
    );
    Ok(())
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
