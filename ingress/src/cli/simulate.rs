//! `toolgate policy simulate`: what a candidate policy set would have
//! decided for the calls an audit log recorded, beside what the live
//! policies decide, through the same decision code as the gateway.
//!
//! Every `tools/call` that reached policy is re-decided twice — with the
//! configuration's policies (the fidelity check: they must reproduce the
//! recorded verdict) and with the candidate's — and the differences are
//! counted by transition (`allow→deny`, …), by agent, tool and customer,
//! with a few example records (their `log_seq`, never argument values).
//! A call the live policies do not reproduce is listed apart (with what
//! the candidate decides), never counted as a change; records that cannot
//! be re-decided are counted with the reason.
//!
//! Exit status: 0 when the candidate changes no decision, 2 when it
//! changes some, 1 on error.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use toolgate_decision::policy::simulate::{recorded_verdict, Simulator, Unsimulable};
use toolgate_decision::Snapshot;
use toolgate_sinks::reader::{Entry, LogReader, Position};

use super::window::Window;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned text.
    Table,
    /// One JSON object.
    Json,
    /// Markdown, for a pull-request comment.
    Markdown,
}

/// `toolgate policy simulate …`.
#[derive(Args)]
pub struct SimulateArgs {
    /// Configuration file (TOML): the live policies, agents and tools.
    #[arg(short, long, value_name = "FILE", default_value = "toolgate.toml")]
    pub config: PathBuf,
    /// The candidate policy set: a directory of `.cedar` files (or one file).
    #[arg(long, value_name = "DIR")]
    pub candidate: PathBuf,
    /// The recorded traffic: an audit directory (`[audit] dir`).
    #[arg(long, value_name = "DIR")]
    pub audit: PathBuf,
    /// Only calls since a duration ago (`30m`, `24h`, `7d`) or an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only calls from this RFC 3339 time.
    #[arg(long)]
    pub from: Option<String>,
    /// Only calls before this RFC 3339 time.
    #[arg(long)]
    pub to: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Example records shown per transition.
    #[arg(long, default_value_t = 5)]
    pub examples: usize,
    /// Simulate a log whose hash chain does not verify.
    #[arg(long)]
    pub allow_unverified: bool,
    /// Do not contact upstreams for their tool catalogs: the candidate is
    /// then not validated against the tools' argument types.
    #[arg(long)]
    pub offline: bool,
}

/// A change of decision: (live, candidate), or (recorded, live).
type Transition = (String, String);
/// Who made a call: (agent, tool, customer).
type Caller = (String, String, String);

/// What a simulation found.
#[derive(Default)]
pub struct Report {
    /// Calls re-decided.
    pub simulated: u64,
    /// Decisions that change: (live, candidate) → calls.
    pub transitions: BTreeMap<Transition, u64>,
    /// Per transition: who made the calls → calls.
    pub by_caller: BTreeMap<Transition, BTreeMap<Caller, u64>>,
    /// Per transition: a few records.
    pub examples: BTreeMap<Transition, Vec<Value>>,
    /// Calls the live policies do not decide as recorded: (recorded, now) → calls.
    pub unreproduced: BTreeMap<Transition, u64>,
    /// A few of them.
    pub unreproduced_examples: Vec<Value>,
    /// Calls not re-decided, by reason.
    pub unsimulable: BTreeMap<String, u64>,
    /// Records that were not calls decided by policy.
    pub not_decided: u64,
}

/// Threads re-deciding records.
const WORKERS: usize = 2;

impl Report {
    /// Adds the record on log line `line` when it falls in `window`.
    fn line(
        &mut self,
        line: &[u8],
        window: Window,
        live: &mut Simulator<'_>,
        candidate: &mut Simulator<'_>,
        examples: usize,
    ) {
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            *self
                .unsimulable
                .entry("not a JSON record".into())
                .or_default() += 1;
            return;
        };
        if window.holds(&v) {
            self.add(&v, live, candidate, examples);
        }
    }

    /// Adds `other` (the report of another part of the log), keeping the
    /// `examples` earliest examples.
    fn merge(&mut self, other: Report, examples: usize) {
        let earliest = |list: &mut Vec<Value>| {
            list.sort_by_key(|e| e["log_seq"].as_u64().unwrap_or(u64::MAX));
            list.truncate(examples);
        };
        self.simulated += other.simulated;
        self.not_decided += other.not_decided;
        for (k, n) in other.transitions {
            *self.transitions.entry(k).or_default() += n;
        }
        for (k, by) in other.by_caller {
            let mine = self.by_caller.entry(k).or_default();
            for (c, n) in by {
                *mine.entry(c).or_default() += n;
            }
        }
        for (k, list) in other.examples {
            let mine = self.examples.entry(k).or_default();
            mine.extend(list);
            earliest(mine);
        }
        for (k, n) in other.unreproduced {
            *self.unreproduced.entry(k).or_default() += n;
        }
        self.unreproduced_examples
            .extend(other.unreproduced_examples);
        earliest(&mut self.unreproduced_examples);
        for (k, n) in other.unsimulable {
            *self.unsimulable.entry(k).or_default() += n;
        }
    }

    /// Adds record `rec` re-decided with `live` and `candidate`.
    pub fn add(
        &mut self,
        rec: &Value,
        live: &mut Simulator<'_>,
        candidate: &mut Simulator<'_>,
        examples: usize,
    ) {
        let recorded = match recorded_verdict(rec) {
            Ok(v) => v,
            Err(Unsimulable::NotDecided) => {
                self.not_decided += 1;
                return;
            }
            Err(why) => {
                *self.unsimulable.entry(why.describe()).or_default() += 1;
                return;
            }
        };
        let (now, next) = match (live.redecide(rec), candidate.redecide(rec)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(why), _) | (_, Err(why)) => {
                *self.unsimulable.entry(why.describe()).or_default() += 1;
                return;
            }
        };
        self.simulated += 1;
        let example = |extra: Value| {
            let mut e = json!({
                "log_seq": rec.get("log_seq"), "time": rec.get("time"),
                "request_id": rec.get("request_id"), "agent": rec.get("agent"),
                "user": rec.get("user"), "customer": rec.get("customer"), "tool": rec.get("tool"),
            });
            if let (Some(o), Some(x)) = (e.as_object_mut(), extra.as_object()) {
                o.extend(x.clone());
            }
            e
        };
        if now.as_str() != recorded {
            // The live policies do not reproduce this call: what the
            // candidate would change for it is not known, so it counts
            // here, beside what the candidate decides, not as a change.
            *self
                .unreproduced
                .entry((recorded.to_owned(), now.as_str().to_owned()))
                .or_default() += 1;
            if self.unreproduced_examples.len() < examples {
                self.unreproduced_examples.push(example(json!({
                    "recorded": recorded, "now": now.as_str(), "candidate": next.as_str(),
                    "recorded_policies": rec.get("policies"), "policies": now.policies(),
                })));
            }
            return;
        }
        if now.as_str() == next.as_str() {
            return;
        }
        let t = (now.as_str().to_owned(), next.as_str().to_owned());
        *self.transitions.entry(t.clone()).or_default() += 1;
        let s = |k: &str| rec.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        *self
            .by_caller
            .entry(t.clone())
            .or_default()
            .entry((s("agent"), s("tool"), s("customer")))
            .or_default() += 1;
        let list = self.examples.entry(t).or_default();
        if list.len() < examples {
            list.push(example(json!({
                "policies": now.policies(), "candidate_policies": next.policies(),
            })));
        }
    }

    fn to_json(&self) -> Value {
        let pair = |(a, b): &Transition| format!("{a}→{b}");
        json!({
            "simulated": self.simulated,
            "changed": self.transitions.values().sum::<u64>(),
            "transitions": self.transitions.iter().map(|(t, n)| json!({
                "from": t.0, "to": t.1, "calls": n,
                "by": self.by_caller.get(t).map(|m| m.iter().map(|((a, tool, c), n)| json!({
                    "agent": a, "tool": tool, "customer": c, "calls": n})).collect::<Vec<_>>()),
                "examples": self.examples.get(t),
            })).collect::<Vec<_>>(),
            "not_reproduced": self.unreproduced.iter().map(|(t, n)| json!({"transition": pair(t), "calls": n})).collect::<Vec<_>>(),
            "not_reproduced_examples": self.unreproduced_examples,
            "not_simulable": self.unsimulable,
            "not_decided_by_policy": self.not_decided,
        })
    }

    fn write_table(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            out,
            "{} calls re-decided; {} would change",
            self.simulated,
            self.transitions.values().sum::<u64>()
        )?;
        for (t, n) in &self.transitions {
            writeln!(out, "\n{} → {}: {n} calls", t.0, t.1)?;
            for ((a, tool, c), n) in self.by_caller.get(t).into_iter().flatten() {
                writeln!(out, "  {n:>8}  agent {a}  tool {tool}  customer {c}")?;
            }
            for e in self.examples.get(t).into_iter().flatten() {
                writeln!(out, "  e.g. {e}")?;
            }
        }
        self.write_caveats(out, "")
    }

    fn write_caveats(&self, out: &mut dyn Write, bullet: &str) -> std::io::Result<()> {
        if !self.unreproduced.is_empty() {
            writeln!(
                out,
                "\n{bullet}Not reproduced by the live policies (the policies or the configuration changed since, or a masked argument):"
            )?;
            for (t, n) in &self.unreproduced {
                writeln!(out, "{bullet}  recorded {} → now {}: {n} calls", t.0, t.1)?;
            }
            for e in &self.unreproduced_examples {
                writeln!(out, "{bullet}  e.g. {e}")?;
            }
        }
        if !self.unsimulable.is_empty() {
            writeln!(out, "\n{bullet}Not simulable:")?;
            for (why, n) in &self.unsimulable {
                writeln!(out, "{bullet}  {n:>8}  {why}")?;
            }
        }
        writeln!(
            out,
            "\n{bullet}{} records were not calls decided by policy (refused before it, or not calls).",
            self.not_decided
        )
    }

    fn write_markdown(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let changed: u64 = self.transitions.values().sum();
        writeln!(out, "### Policy simulation\n")?;
        writeln!(
            out,
            "{} recorded calls re-decided with the candidate policies: **{changed} would change**.\n",
            self.simulated
        )?;
        if changed > 0 {
            writeln!(out, "| change | agent | tool | customer | calls |")?;
            writeln!(out, "|---|---|---|---|---:|")?;
            for (t, by) in &self.by_caller {
                for ((a, tool, c), n) in by {
                    writeln!(
                        out,
                        "| {} → {} | `{a}` | `{tool}` | `{c}` | {n} |",
                        t.0, t.1
                    )?;
                }
            }
            writeln!(out, "\nExamples (audit `log_seq`):\n")?;
            for (t, list) in &self.examples {
                let seqs: Vec<String> = list.iter().map(|e| e["log_seq"].to_string()).collect();
                writeln!(out, "- {} → {}: {}", t.0, t.1, seqs.join(", "))?;
            }
        }
        self.write_caveats(out, "")
    }
}

fn candidate_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading the candidate `{}`", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("the candidate `{}` holds no .cedar file", path.display());
    }
    Ok(files)
}

/// Runs `toolgate policy simulate`.
pub fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let cfg = super::load(&args.config)?;
    let live = toolgate_ingress::process::load_policies(&cfg)?;
    let candidate =
        toolgate_decision::policy::load(&candidate_files(&args.candidate)?).map_err(|errs| {
            let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("the candidate does not parse:\n{}", lines.join("\n"))
        })?;
    let catalogs = if args.offline {
        eprintln!("offline: the candidate is not validated against the tools' argument types");
        Vec::new()
    } else {
        super::catalogs::fetch_catalogs(&cfg)
    };
    if !args.offline {
        let errors = candidate.validate(Snapshot::build(&cfg, &catalogs).cedar_schema(&cfg));
        if !errors.is_empty() {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            bail!(
                "the candidate does not validate against the schema:\n{}",
                lines.join("\n")
            );
        }
    }
    let live = Snapshot::build(&cfg, &catalogs).with_policies(&cfg, Arc::new(live));
    let candidate = Snapshot::build(&cfg, &catalogs).with_policies(&cfg, Arc::new(candidate));
    if !args.audit.is_dir() {
        bail!("`{}` is not an audit directory", args.audit.display());
    }
    let key = if args.allow_unverified {
        None
    } else {
        let key_file = args.audit.join(toolgate_sinks::key::GENERATED_KEY_FILE);
        key_file
            .exists()
            .then(|| toolgate_sinks::key::load_key(&toolgate_sinks::key::KeySource::File(key_file)))
            .transpose()
            .context("loading the audit log's checkpoint key")?
    };
    let window = Window::parse(
        args.since.as_deref(),
        args.from.as_deref(),
        args.to.as_deref(),
        "to",
    )?;
    let audit = args.audit.as_path();
    let report = std::thread::scope(|scope| -> anyhow::Result<Report> {
        // The hash chain is checked while the records are re-decided.
        let verifying = (!args.allow_unverified).then(|| {
            let key = key.as_ref().map(|k| k.bytes.as_slice());
            scope.spawn(move || toolgate_sinks::verify::verify(audit, key))
        });
        let (live, candidate) = (&live, &candidate);
        let mut feeds = Vec::new();
        let mut workers = Vec::new();
        for _ in 0..WORKERS {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Entry>>(4);
            feeds.push(tx);
            let examples = args.examples;
            workers.push(scope.spawn(move || {
                let mut report = Report::default();
                let (mut live, mut candidate) = (Simulator::new(live), Simulator::new(candidate));
                for batch in rx {
                    for e in &batch {
                        report.line(&e.line, window, &mut live, &mut candidate, examples);
                    }
                }
                report
            }));
        }
        let mut reader = LogReader::new(audit, Position::START);
        for turn in 0.. {
            let mut batch = Vec::new();
            reader.read(4096, &mut batch)?;
            if batch.is_empty() || feeds[turn % WORKERS].send(batch).is_err() {
                break;
            }
        }
        drop(feeds);
        let mut report = Report::default();
        for w in workers {
            let part = w
                .join()
                .map_err(|_| anyhow::anyhow!("a simulation thread failed"))?;
            report.merge(part, args.examples);
        }
        if let Some(v) = verifying {
            v.join()
                .map_err(|_| anyhow::anyhow!("the verification thread failed"))?
                .map_err(|e| {
                    anyhow::anyhow!(
                        "the audit log does not verify ({e}); `--allow-unverified` simulates it anyway"
                    )
                })?;
        }
        Ok(report)
    })?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match args.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &report.to_json())?;
            writeln!(out)?;
        }
        Format::Table => report.write_table(&mut out)?,
        Format::Markdown => report.write_markdown(&mut out)?,
    }
    out.flush()?;
    Ok(if report.transitions.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
