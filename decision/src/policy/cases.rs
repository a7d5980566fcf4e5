//! Policy test cases: a request and the outcome it must get.
//!
//! The same format serves `toolgate policy test` and the tests of the
//! shipped policies, and cases run through the same decision code as live
//! calls (permission map first, then the precompiled or evaluated policy).
//!
//! ```toml
//! [[case]]
//! name = "admins may delete"
//! agent = "support-bot"
//! user = "alice"                  # optional
//! customer = "acme"                # optional; default the agent's customer
//! tool = "crm__delete_record"
//! args = { record_id = "r-1" }    # optional
//! expect = "allow"                # allow | deny | judge
//! ```

use serde::Deserialize;
use toolgate_core::jsonrpc::JsonParser;

use super::{CallFacts, PairDecision, Verdict};
use crate::Snapshot;

/// A file of cases.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    /// The cases, in order.
    #[serde(default, rename = "case")]
    pub cases: Vec<Case>,
}

/// One case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case shows.
    pub name: String,
    /// Calling agent id.
    pub agent: String,
    /// End user, if any.
    #[serde(default)]
    pub user: Option<String>,
    /// Customer the call is attributed to; default the agent's.
    #[serde(default)]
    pub customer: Option<String>,
    /// Exposed tool name.
    pub tool: String,
    /// Arguments.
    #[serde(default)]
    pub args: Option<toml::Table>,
    /// `allow`, `deny` or `judge`.
    pub expect: String,
}

/// The outcome of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// What it expected.
    pub expected: String,
    /// What it got: `allow`, `deny` or `judge`, with the reason and policies.
    pub got: String,
    /// Reason and determining policies, for the report.
    pub detail: String,
}

impl CaseResult {
    /// Whether the case passed.
    pub fn passed(&self) -> bool {
        self.expected == self.got
    }
}

/// Parses a case file.
pub fn parse(text: &str) -> Result<CaseFile, String> {
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| toolgate_core::config::line_of(text, s.start));
        match line {
            Some(l) => format!("line {l}: {}", e.message()),
            None => e.message().to_owned(),
        }
    })
}

/// Runs `cases` against `snap`.
pub fn run(snap: &Snapshot, cases: &[Case]) -> Vec<CaseResult> {
    cases
        .iter()
        .map(|c| {
            let (got, detail) = decide(snap, c);
            CaseResult {
                name: c.name.clone(),
                expected: c.expect.clone(),
                got: got.to_owned(),
                detail,
            }
        })
        .collect()
}

fn decide(snap: &Snapshot, c: &Case) -> (&'static str, String) {
    let Some(agent) = snap.agents.iter().find(|a| *a.id == c.agent) else {
        return ("deny", format!("unknown agent `{}`", c.agent));
    };
    let Some(route) = snap.route(agent, &c.tool) else {
        return ("deny", "tool not attached to the agent".to_owned());
    };
    let verdict = match &route.decision {
        PairDecision::Fixed(v) => v.clone(),
        PairDecision::Evaluate(slice) => {
            let Some(engine) = &snap.engine else {
                return ("deny", "no policy engine".to_owned());
            };
            let json = serde_json::to_string(&c.args.clone().unwrap_or_default())
                .unwrap_or_else(|_| "{}".into());
            let mut parser = JsonParser::new();
            let Ok(tape) = parser.parse(json.as_bytes()) else {
                return ("deny", "arguments are not JSON".to_owned());
            };
            let facts = CallFacts {
                agent: &agent.id,
                user: c.user.as_deref(),
                groups: None,
                tool: &route.exposed,
                upstream: &snap.upstreams[route.upstream].name,
                customer: c.customer.as_deref().unwrap_or(&agent.customer),
                args: Some(tape.as_value()),
            };
            engine.evaluate(slice, &facts)
        }
    };
    let list = |p: &[std::sync::Arc<str>]| {
        p.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match verdict {
        Verdict::Allow { policies } => ("allow", format!("policies: [{}]", list(&policies))),
        Verdict::Deny { policies, reason } => {
            ("deny", format!("{reason}; policies: [{}]", list(&policies)))
        }
        Verdict::Judge { policies } => ("judge", format!("policies: [{}]", list(&policies))),
    }
}
