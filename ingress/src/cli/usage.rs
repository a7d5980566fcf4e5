//! `toolgate usage`: what each customer called, from the audit log — calls,
//! allowed, denied, refused by a limit, tool errors, quota units — per customer and
//! tool, for a window, as JSON or CSV to feed billing. Reads the log files
//! only; no gateway needs to run.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::window::Window;
use anyhow::bail;
use clap::{Args, ValueEnum};
use serde_json::Value;
use toolgate_ingress::metrics::usage::{Counted, Counts, CSV_HEADER};
use toolgate_sinks::reader::{LogReader, Position};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON array.
    Json,
    /// CSV with a header line.
    Csv,
}

/// `toolgate usage …`.
#[derive(Args)]
pub struct UsageArgs {
    /// The audit directory (`[audit] dir`).
    pub dir: PathBuf,
    /// Only calls since a duration ago (`90s`, `30m`, `24h`, `30d`) or an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only calls before an RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
    /// Only this customer.
    #[arg(long)]
    pub customer: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
}

/// Adds record `v` to `usage` when it is a call of a tool by a known
/// customer within the window.
pub fn count(
    usage: &mut BTreeMap<(String, String), Counts>,
    v: &Value,
    window: Window,
    customer: Option<&str>,
) {
    if v["method"].as_str() != Some("tools/call") {
        return;
    }
    let (Some(c), Some(tool)) = (v["customer"].as_str(), v["tool"].as_str()) else {
        return;
    };
    if customer.is_some_and(|want| want != c) {
        return;
    }
    if !window.holds(v) {
        return;
    }
    let allowed = v["decision"].as_str() == Some("allow");
    usage
        .entry((c.to_owned(), tool.to_owned()))
        .or_default()
        .add(Counted {
            allowed,
            limited: matches!(
                v["reason"].as_str(),
                Some("rate_limited" | "quota_exceeded" | "limit_table_full")
            ),
            tool_error: v["outcome"].as_str() == Some("tool_error"),
            units: v["units"].as_u64().unwrap_or(0),
        });
}

/// Runs `toolgate usage`.
pub fn run(args: UsageArgs) -> anyhow::Result<()> {
    if !args.dir.is_dir() {
        bail!("`{}` is not a directory", args.dir.display());
    }
    let window = Window::parse(args.since.as_deref(), None, args.until.as_deref(), "until")?;
    let usage = read(&args.dir, window, args.customer.as_deref())?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match args.format {
        Format::Json => {
            let rows: Vec<Value> = usage.iter().map(|((c, t), n)| n.json(c, t)).collect();
            serde_json::to_writer_pretty(&mut out, &rows)?;
            writeln!(out)?;
        }
        Format::Csv => {
            let mut text = String::from(CSV_HEADER);
            for ((c, t), n) in &usage {
                n.csv(c, t, &mut text);
            }
            out.write_all(text.as_bytes())?;
        }
    }
    out.flush()?;
    Ok(())
}

fn read(
    dir: &Path,
    window: Window,
    customer: Option<&str>,
) -> anyhow::Result<BTreeMap<(String, String), Counts>> {
    let mut reader = LogReader::new(dir, Position::START);
    let mut usage = BTreeMap::new();
    let mut batch = Vec::new();
    loop {
        batch.clear();
        reader.read(4096, &mut batch)?;
        if batch.is_empty() {
            return Ok(usage);
        }
        for e in &batch {
            let v: Value = serde_json::from_slice(&e.line).unwrap_or_default();
            count(&mut usage, &v, window, customer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;
    use toolgate_ingress::metrics::usage::csv_field;

    fn rec(customer: &str, tool: &str, decision: &str, reason: &str, outcome: &str) -> Value {
        json!({"time": "2026-12-06T10:00:00.000000Z", "method": "tools/call", "customer": customer,
               "tool": tool, "decision": decision, "reason": reason, "outcome": outcome})
    }

    #[test]
    fn calls_are_counted_per_customer_and_tool() {
        let mut u = BTreeMap::new();
        for v in [
            rec("acme", "crm__a", "allow", "attached", "success"),
            rec("acme", "crm__a", "allow", "attached", "tool_error"),
            json!({"time": "2026-12-06T10:00:00.000000Z", "method": "tools/call", "customer": "acme",
                   "tool": "crm__a", "decision": "allow", "reason": "attached", "outcome": "success",
                   "units": 10}),
            rec("acme", "crm__a", "deny", "quota_exceeded", "failure"),
            rec("acme", "crm__a", "deny", "forbidden_by_policy", "failure"),
            rec("globex", "crm__a", "allow", "attached", "success"),
            json!({"method": "tools/list", "customer": "acme", "tool": null}),
        ] {
            count(&mut u, &v, Window::default(), None);
        }
        assert_eq!(
            u[&("acme".to_owned(), "crm__a".to_owned())],
            Counts {
                calls: 5,
                allowed: 3,
                denied: 2,
                limited: 1,
                tool_errors: 1,
                units: 10,
            }
        );
        assert_eq!(u[&("globex".to_owned(), "crm__a".to_owned())].calls, 1);
        let mut only = BTreeMap::new();
        let late = Window {
            since: toolgate_sinks::query::parse_rfc3339_us("2026-12-06T11:00:00Z"),
            until: None,
        };
        count(
            &mut only,
            &rec("acme", "t", "allow", "attached", "success"),
            late,
            None,
        );
        count(
            &mut only,
            &rec("acme", "t", "allow", "attached", "success"),
            Window::default(),
            Some("globex"),
        );
        assert!(only.is_empty());
    }

    #[test]
    fn csv_fields_are_quoted_when_they_must_be() {
        assert_eq!(csv_field("acme"), "acme");
        assert_eq!(csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");
    }
}
