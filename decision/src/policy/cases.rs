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
//! session = "s1"                  # optional: cases naming one session are a sequence
//! at_s = 30                       # optional: seconds after the first case
//! ```
//!
//! Sequences: cases that name the same `session` run in file order in one
//! session, as calls of one agent would: each case allowed (or sent to the
//! judge, taken as approved) is recorded in the session before the next
//! is decided, so `context.session` sees the cases before it. A case with
//! no `session` is the first call of a session of its own. `at_s` moves the
//! clock for the sliding windows (it never goes back).

use serde::Deserialize;
use toolgate_core::jsonrpc::JsonParser;

use std::sync::Arc;

use super::simulate::{self, Call};
use super::Verdict;
use crate::session::{Entry, Sessions};
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
    /// The session the case's call belongs to; cases naming one session
    /// are decided in order, each seeing the ones before it.
    #[serde(default)]
    pub session: Option<String>,
    /// Seconds after the first case this call is made.
    #[serde(default)]
    pub at_s: Option<u64>,
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

/// The clock of a case file's first case (any fixed time will do).
const START: u64 = 1_800_000_000;

/// Runs `cases` against `snap`.
pub fn run(snap: &Snapshot, cases: &[Case]) -> Vec<CaseResult> {
    let sessions = Arc::new(Sessions::new(
        cases.len().max(1),
        u64::from(u32::MAX),
        snap.distinct.len(),
    ));
    let mut now = START;
    cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            now = now.max(START + c.at_s.unwrap_or(0));
            let key = match &c.session {
                Some(s) => sessions.key(&[b"named", s.as_bytes()]),
                None => sessions.key(&[b"own", &i.to_le_bytes()]),
            };
            let entry = sessions.enter(key, now);
            let (got, detail) = decide(snap, c, &sessions, entry);
            CaseResult {
                name: c.name.clone(),
                expected: c.expect.clone(),
                got: got.to_owned(),
                detail,
            }
        })
        .collect()
}

fn decide(snap: &Snapshot, c: &Case, sessions: &Sessions, entry: Entry) -> (&'static str, String) {
    let json =
        serde_json::to_string(&c.args.clone().unwrap_or_default()).unwrap_or_else(|_| "{}".into());
    let mut parser = JsonParser::new();
    let Ok(tape) = parser.parse(json.as_bytes()) else {
        return ("deny", "arguments are not JSON".to_owned());
    };
    let route = snap
        .agent_by_id(&c.agent)
        .and_then(|a| snap.route(a, &c.tool));
    let recorded = route
        .map(|r| sessions.recorded(r.labels, &r.exposed, &snap.distinct, Some(tape.as_value())));
    let facts = entry.facts(recorded.map_or(0, |r| r.tool));
    let call = Call {
        agent: &c.agent,
        user: c.user.as_deref(),
        customer: c.customer.as_deref(),
        tool: &c.tool,
        args: Some(&json),
        session: Some(&facts),
        groups: None,
    };
    let verdict = match simulate::decide(snap, &call) {
        Ok(v) => v,
        Err(why) => return ("deny", why.describe()),
    };
    if let (Verdict::Allow { .. } | Verdict::Judge { .. }, Some(r)) = (&verdict, recorded) {
        entry.commit(&r);
    }
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
