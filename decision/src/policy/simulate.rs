//! Re-deciding recorded calls: what a policy set would have decided for
//! the `tools/call`s an audit log holds, through the same decision code as
//! live calls (the permission map, the precompiled pair, Cedar), with the
//! session facts the record carries.
//!
//! A record is re-decided from what it holds: the agent, end user,
//! customer, tool, the arguments (`[audit] arguments = "redacted"`: values
//! the detectors matched are masked, so a condition on one of them may
//! decide differently — the fidelity check shows it) and the session's
//! facts, and the groups a token gave the end user when they decided.

use serde_json::Value;

use super::{CallFacts, DecisionCache, PairDecision, Verdict};
use crate::session::{SessionFacts, SessionView};
use crate::Snapshot;
use toolgate_core::jsonrpc::JsonParser;

/// Why a record cannot be re-decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsimulable {
    /// Not a `tools/call` that reached policy (refused before it: unknown
    /// tool, quarantined, rate limit, scope, bad input — or not a call).
    NotDecided,
    /// A call recorded without its verdict (by a toolgate before 2026-12).
    NoVerdict,
    /// The agent or tool is no longer in the configuration.
    NotConfigured(String),
    /// Its arguments are needed and the record does not hold them whole.
    NoArguments(&'static str),
}

impl Unsimulable {
    /// Why, in words.
    pub fn describe(&self) -> String {
        match self {
            Unsimulable::NotDecided => "not decided by policy".into(),
            Unsimulable::NoVerdict => "recorded without its verdict (older toolgate)".into(),
            Unsimulable::NotConfigured(w) => w.clone(),
            Unsimulable::NoArguments(w) => (*w).into(),
        }
    }
}

/// The verdict a record holds, or why it holds none.
pub fn recorded_verdict(rec: &Value) -> Result<&str, Unsimulable> {
    if rec.get("method").and_then(Value::as_str) != Some("tools/call") {
        return Err(Unsimulable::NotDecided);
    }
    match rec.get("verdict").and_then(Value::as_str) {
        Some(v @ ("allow" | "deny" | "judge")) => Ok(v),
        _ => match rec.get("reason").and_then(Value::as_str) {
            // These carry a verdict from any toolgate that writes it.
            Some("allowed_by_policy" | "forbidden_by_policy" | "no_permit" | "policy_error") => {
                Err(Unsimulable::NoVerdict)
            }
            _ => Err(Unsimulable::NotDecided),
        },
    }
}

/// One call to decide, by name.
pub struct Call<'a> {
    /// Agent id.
    pub agent: &'a str,
    /// End user.
    pub user: Option<&'a str>,
    /// Customer; default the agent's.
    pub customer: Option<&'a str>,
    /// Exposed tool name.
    pub tool: &'a str,
    /// The arguments as JSON, when known.
    pub args: Option<&'a str>,
    /// The session's facts, when policies read them.
    pub session: Option<&'a SessionFacts>,
    /// The end user's groups from a token (replacing the configured ones).
    pub groups: Option<&'a [std::sync::Arc<str>]>,
}

/// Decides `call` against `snap` as a live call would be decided.
pub fn decide(snap: &Snapshot, call: &Call<'_>) -> Result<Verdict, Unsimulable> {
    decide_with(snap, call, &mut JsonParser::new(), None)
}

/// [`decide`] with a parser to reuse and, for pairs Cedar evaluates, a
/// decision cache keyed like the gateway's (everything the evaluation
/// reads).
fn decide_with(
    snap: &Snapshot,
    call: &Call<'_>,
    parser: &mut JsonParser,
    cache: Option<&mut DecisionCache>,
) -> Result<Verdict, Unsimulable> {
    let Some(agent) = snap.agent_by_id(call.agent) else {
        return Err(Unsimulable::NotConfigured(format!(
            "agent `{}` is not configured",
            call.agent
        )));
    };
    let Some(route) = snap.route(agent, call.tool) else {
        return Err(Unsimulable::NotConfigured(format!(
            "`{}` is not attached to `{}`",
            call.tool, call.agent
        )));
    };
    let slice = match &route.decision {
        PairDecision::Fixed(v) => return Ok(v.clone()),
        PairDecision::Evaluate(slice) => slice,
    };
    let Some(engine) = &snap.engine else {
        return Err(Unsimulable::NotConfigured("no policy engine".into()));
    };
    let Some(args) = call.args else {
        return Err(Unsimulable::NoArguments(
            "its arguments are not in the record (`[audit] arguments` is not `redacted`)",
        ));
    };
    let Ok(tape) = parser.parse(args.as_bytes()) else {
        return Err(Unsimulable::NoArguments(
            "its recorded arguments are not JSON",
        ));
    };
    let unknown = SessionFacts::unknown(0);
    let view = SessionView {
        facts: call.session.unwrap_or(&unknown),
        labels: &snap.label_names,
        distinct: &snap.distinct,
    };
    let facts = CallFacts {
        agent: &agent.id,
        user: call.user,
        groups: call.groups.filter(|_| call.user.is_some()),
        tool: &route.exposed,
        upstream: &snap.upstreams[route.upstream].name,
        customer: call.customer.unwrap_or(&agent.customer),
        args: Some(tape.as_value()),
        session: slice.reads_session().then_some(view),
    };
    let Some(cache) = cache else {
        return Ok(engine.evaluate(slice, &facts));
    };
    // The recorded arguments are toolgate's own compact JSON: the key as is.
    let mut args_json = args.as_bytes().to_vec();
    Ok(cache.decide(b"", engine, slice, &facts, &mut args_json))
}

/// Re-decides records against one snapshot, reusing a parser and a
/// decision cache across them (the simulation's hot loop).
pub struct Simulator<'s> {
    snap: &'s Snapshot,
    parser: JsonParser,
    cache: DecisionCache,
}

impl<'s> Simulator<'s> {
    /// A simulator of `snap`'s policies.
    pub fn new(snap: &'s Snapshot) -> Self {
        Self {
            snap,
            parser: JsonParser::new(),
            cache: DecisionCache::new(64 * 1024),
        }
    }

    /// Re-decides the call `rec` records.
    pub fn redecide(&mut self, rec: &Value) -> Result<Verdict, Unsimulable> {
        redecide_with(self.snap, rec, &mut self.parser, Some(&mut self.cache))
    }
}

/// Re-decides the call `rec` records against `snap`.
pub fn redecide(snap: &Snapshot, rec: &Value) -> Result<Verdict, Unsimulable> {
    redecide_with(snap, rec, &mut JsonParser::new(), None)
}

fn redecide_with(
    snap: &Snapshot,
    rec: &Value,
    parser: &mut JsonParser,
    cache: Option<&mut DecisionCache>,
) -> Result<Verdict, Unsimulable> {
    let s = |k: &str| rec.get(k).and_then(Value::as_str);
    let (Some(agent), Some(tool)) = (s("agent"), s("tool")) else {
        return Err(Unsimulable::NotDecided);
    };
    if rec.get("args_truncated").and_then(Value::as_bool) == Some(true) {
        return decide_without_args(
            snap,
            agent,
            tool,
            "its recorded arguments were cut at 4 KiB",
        );
    }
    let session = rec
        .get("session")
        .and_then(|v| SessionFacts::from_record(v, &snap.distinct));
    let groups: Option<Vec<std::sync::Arc<str>>> =
        rec.get("groups").and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(|g| g.as_str().map(std::sync::Arc::from))
                .collect()
        });
    decide_with(
        snap,
        &Call {
            agent,
            user: s("user"),
            customer: s("customer"),
            tool,
            args: s("args_redacted"),
            session: session.as_ref(),
            groups: groups.as_deref(),
        },
        parser,
        cache,
    )
}

/// A pair decided before any call needs no arguments; any other does.
fn decide_without_args(
    snap: &Snapshot,
    agent: &str,
    tool: &str,
    why: &'static str,
) -> Result<Verdict, Unsimulable> {
    let route = snap
        .agent_by_id(agent)
        .and_then(|a| snap.route(a, tool))
        .ok_or_else(|| {
            Unsimulable::NotConfigured(format!("`{tool}` is not attached to `{agent}`"))
        })?;
    match &route.decision {
        PairDecision::Fixed(v) => Ok(v.clone()),
        PairDecision::Evaluate(_) => Err(Unsimulable::NoArguments(why)),
    }
}
