//! SOAR triggers: a sink that turns records into alerts by rule and POSTs
//! one JSON alert per firing to a SOAR or paging webhook.
//!
//! It runs under the shared [`crate::sink::SinkRunner`] like every sink, so
//! its cursor only passes records whose alerts were acknowledged
//! (at-least-once). Rules ([`Rule`]) watch denials, judge escalations, an
//! agent's deny or call rate over a window, and the first use of a tool by
//! an agent; a cool-down per (rule, agent[, tool]) key keeps a storm to one
//! alert. Windows and cool-downs run on record time, never the wall clock,
//! so evaluating the same records again (a retry, a replay after an
//! outage) gives the same alerts.
//!
//! The evaluation state ([`Engine`]: rate windows, cool-downs, the agent and
//! tool pairs already seen) is persisted to `<audit dir>/soar/<name>.json`
//! with the `log_seq` it has evaluated up to: at once after any delivery
//! that sent alerts or learnt a pair, otherwise at most every second. After
//! a restart the sink skips records the state already covers, and silently
//! re-reads records between the state and the cursor (their alerts, if any,
//! were delivered), so a restart neither repeats nor loses alerts except for
//! the alerts in flight when toolgate was killed. Memory is bounded by
//! `max_keys` per kind of state.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use toolgate_core::config::{SinkConfig, SinkTarget, SoarRuleKind};
use toolgate_core::output::glob_match;

use crate::ocsf::Record;
use crate::reader::{Entry, LogReader, Position};
use crate::retry::Endpoint;
use crate::segment::write_atomically;
use crate::siem::{HttpSink, HttpSinkError};
use crate::sink::{Sink, SinkError};

/// Folder of SOAR sink states inside the audit directory.
pub const STATE_DIR: &str = "soar";

/// Longest a sink goes without saving its state while nothing forces it.
const STATE_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// Path of SOAR sink `name`'s state.
pub fn state_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(STATE_DIR).join(format!("{name}.json"))
}

/// One trigger, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Name, sent as `rule`.
    pub name: String,
    /// What it watches.
    pub kind: SoarRuleKind,
    /// Agent globs (empty: any).
    pub agents: Vec<String>,
    /// Tool globs (empty: any).
    pub tools: Vec<String>,
    /// Reason globs (empty: any).
    pub reasons: Vec<String>,
    /// Judge outcomes (empty: any).
    pub judge_outcomes: Vec<String>,
    /// Rate rules: records needed within the window.
    pub threshold: usize,
    /// Rate rules: the window, µs.
    pub window_us: u64,
    /// Cool-down per key, µs (0: none).
    pub cooldown_us: u64,
}

impl Rule {
    /// The rules of a `soar` sink's config (validated).
    pub fn from_config(s: &SinkConfig) -> Vec<Rule> {
        s.rules
            .iter()
            .map(|r| {
                let window_us = r.window_s.unwrap_or(0).saturating_mul(1_000_000);
                let rate = matches!(r.kind, SoarRuleKind::DenyRate | SoarRuleKind::CallRate);
                let cooldown_s =
                    r.cooldown_s
                        .unwrap_or(if rate { r.window_s.unwrap_or(0) } else { 0 });
                Rule {
                    name: r.name.get_ref().clone(),
                    kind: r.kind,
                    agents: r.agents.clone(),
                    tools: r.tools.clone(),
                    reasons: r.reasons.clone(),
                    judge_outcomes: r.judge_outcomes.clone(),
                    threshold: r.threshold.unwrap_or(1).max(1) as usize,
                    window_us,
                    cooldown_us: cooldown_s.saturating_mul(1_000_000),
                }
            })
            .collect()
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            SoarRuleKind::Deny => "deny",
            SoarRuleKind::Judge => "judge",
            SoarRuleKind::DenyRate => "deny_rate",
            SoarRuleKind::CallRate => "call_rate",
            SoarRuleKind::FirstUse => "first_use",
        }
    }

    fn is_rate(&self) -> bool {
        matches!(self.kind, SoarRuleKind::DenyRate | SoarRuleKind::CallRate)
    }

    /// Whether the record passes the rule's filters.
    fn filters(&self, agent: &str, tool: Option<&str>, reason: Option<&str>) -> bool {
        let any = |globs: &[String], v: Option<&str>| {
            globs.is_empty() || v.is_some_and(|v| globs.iter().any(|g| glob_match(g, v)))
        };
        any(&self.agents, Some(agent)) && any(&self.tools, tool) && any(&self.reasons, reason)
    }
}

/// Rule evaluation and its state; pure (no I/O), so it is tested alone.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<Rule>,
    max_keys: usize,
    /// Every record below this `log_seq` has been evaluated.
    next_seq: u64,
    /// (rule, agent) → times (µs) of its latest matching records, at most
    /// `threshold` of them, within the window.
    windows: HashMap<(usize, String), VecDeque<u64>>,
    /// (rule, agent, tool) → time (µs) of its last alert.
    cooldowns: HashMap<(usize, String, String), u64>,
    /// (agent, tool) pairs seen calling.
    seen: HashSet<(String, String)>,
    /// Whether a full table already said so (once per start).
    warned_full: bool,
}

/// What evaluating one record did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The state changed in a way that must be saved before the next
    /// delivery is acknowledged (a pair learnt, a cool-down started).
    pub must_save: bool,
}

/// The persisted form of an [`Engine`]'s state.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Saved {
    next_seq: u64,
    seen: Vec<(String, String)>,
    windows: Vec<SavedWindow>,
    cooldowns: Vec<SavedCooldown>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedWindow {
    rule: String,
    agent: String,
    times: Vec<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedCooldown {
    rule: String,
    agent: String,
    tool: String,
    at: u64,
}

impl Engine {
    /// A fresh engine (nothing evaluated yet).
    pub fn new(rules: Vec<Rule>, max_keys: usize) -> Self {
        Self {
            rules,
            max_keys: max_keys.max(1),
            next_seq: 0,
            windows: HashMap::new(),
            cooldowns: HashMap::new(),
            seen: HashSet::new(),
            warned_full: false,
        }
    }

    /// `log_seq` of the first record not yet evaluated (0: none evaluated).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    fn tracks_pairs(&self) -> bool {
        self.rules.iter().any(|r| r.kind == SoarRuleKind::FirstUse)
    }

    fn full(&mut self, what: &str) {
        if !self.warned_full {
            self.warned_full = true;
            tracing::warn!(
                table = what,
                max_keys = self.max_keys,
                "SOAR sink state is full: new keys are not tracked (raise `max_keys`)"
            );
        }
    }

    /// Evaluates the record `line` (`log_seq` `seq`), appending the alerts
    /// it fires to `out`. Records below [`Engine::next_seq`] were evaluated
    /// already and are skipped.
    pub fn evaluate(&mut self, seq: u64, line: &[u8], out: &mut Vec<Value>) -> Outcome {
        let mut outcome = Outcome::default();
        if seq < self.next_seq {
            return outcome;
        }
        self.next_seq = seq + 1;
        let r = Record::parse(line);
        let Some(t) = r.time.as_deref().and_then(crate::query::parse_rfc3339_us) else {
            return outcome;
        };
        let agent = r.agent.as_deref().unwrap_or("");
        let tool = r.tool.as_deref();
        let reason = r.reason.as_deref();
        let denied = r.decision.as_deref() == Some("deny");
        let is_call = r.method.as_deref() == Some("tools/call");
        let judge = r.judge["outcome"].as_str();
        let first_use = is_call
            && self.tracks_pairs()
            && tool.is_some_and(|tool| !self.seen.contains(&(agent.to_owned(), tool.to_owned())));
        let mut pair_new = false;
        if first_use {
            if self.seen.len() >= self.max_keys {
                self.full("seen pairs");
            } else if let Some(tool) = tool {
                self.seen.insert((agent.to_owned(), tool.to_owned()));
                pair_new = true;
                outcome.must_save = true;
            }
        }
        for i in 0..self.rules.len() {
            let rule = &self.rules[i];
            if !rule.filters(agent, tool, reason) {
                continue;
            }
            let (hit, count, first_us) = match rule.kind {
                SoarRuleKind::Deny => (denied, 1, t),
                SoarRuleKind::Judge => (
                    judge.is_some_and(|j| {
                        rule.judge_outcomes.is_empty() || rule.judge_outcomes.iter().any(|o| o == j)
                    }),
                    1,
                    t,
                ),
                SoarRuleKind::FirstUse => (pair_new, 1, t),
                SoarRuleKind::DenyRate | SoarRuleKind::CallRate => {
                    let counts = if rule.kind == SoarRuleKind::DenyRate {
                        denied
                    } else {
                        is_call
                    };
                    if !counts {
                        continue;
                    }
                    match self.window_push(i, agent, t) {
                        Some((n, first)) => (n >= self.rules[i].threshold, n, first),
                        None => continue,
                    }
                }
            };
            if !hit {
                continue;
            }
            let rule = &self.rules[i];
            let key_tool = if rule.is_rate() {
                String::new()
            } else {
                tool.unwrap_or("").to_owned()
            };
            let cooldown = rule.cooldown_us;
            if cooldown > 0 {
                let key = (i, agent.to_owned(), key_tool);
                if let Some(&last) = self.cooldowns.get(&key) {
                    if t < last.saturating_add(cooldown) {
                        continue;
                    }
                } else if self.cooldowns.len() >= self.max_keys {
                    let rules = &self.rules;
                    self.cooldowns
                        .retain(|k, at| t < at.saturating_add(rules[k.0].cooldown_us));
                    if self.cooldowns.len() >= self.max_keys {
                        // Without room to remember the alert, the cool-down
                        // could not hold: stay quiet rather than storm.
                        self.full("cool-downs");
                        continue;
                    }
                }
                self.cooldowns.insert(key, t);
            }
            outcome.must_save = true;
            let rule = &self.rules[i];
            let rate = rule.is_rate();
            out.push(json!({
                "alert_id": format!("{}/{}", rule.name, seq),
                "rule": rule.name,
                "kind": rule.kind_name(),
                "agent": r.agent,
                "user": r.user,
                "tool": r.tool,
                "method": r.method,
                "upstream": r.upstream,
                "decision": r.decision,
                "reason": r.reason,
                "judge_outcome": judge,
                "count": count,
                "threshold": if rate { Some(rule.threshold) } else { None },
                "window_s": if rate { Some(rule.window_us / 1_000_000) } else { None },
                "first_time": format_time(first_us),
                "last_time": r.time,
                "log_seq": seq,
                "hash": r.hash,
            }));
        }
        outcome
    }

    /// Adds a matching record at `t` to rule `i`'s window of `agent`;
    /// returns how many records the window holds and the oldest one's time,
    /// or `None` when the table is full.
    fn window_push(&mut self, i: usize, agent: &str, t: u64) -> Option<(usize, u64)> {
        let (threshold, window) = (self.rules[i].threshold, self.rules[i].window_us);
        let key = (i, agent.to_owned());
        if !self.windows.contains_key(&key) && self.windows.len() >= self.max_keys {
            let rules = &self.rules;
            self.windows.retain(|k, times| {
                times
                    .back()
                    .is_some_and(|&b| b.saturating_add(rules[k.0].window_us) > t)
            });
            if self.windows.len() >= self.max_keys {
                self.full("rate windows");
                return None;
            }
        }
        let times = self.windows.entry(key).or_default();
        // Records arrive in log order, whose times may step back a little
        // across shards: a window is the span ending at the newest record
        // counted so far (O(1) per record, whatever the threshold).
        let newest = times.back().map_or(t, |&b| b.max(t));
        times.push_back(t);
        while times
            .front()
            .is_some_and(|&f| f.saturating_add(window) <= newest)
        {
            times.pop_front();
        }
        while times.len() > threshold {
            times.pop_front();
        }
        let first = times.front().copied().unwrap_or(t);
        Some((times.len(), first))
    }

    /// The state as saved on disk.
    pub fn save_bytes(&self) -> Vec<u8> {
        let name = |i: usize| self.rules[i].name.clone();
        let saved = Saved {
            next_seq: self.next_seq,
            seen: self.seen.iter().cloned().collect(),
            windows: self
                .windows
                .iter()
                .map(|((i, agent), times)| SavedWindow {
                    rule: name(*i),
                    agent: agent.clone(),
                    times: times.iter().copied().collect(),
                })
                .collect(),
            cooldowns: self
                .cooldowns
                .iter()
                .map(|((i, agent, tool), at)| SavedCooldown {
                    rule: name(*i),
                    agent: agent.clone(),
                    tool: tool.clone(),
                    at: *at,
                })
                .collect(),
        };
        let mut out = serde_json::to_vec(&saved).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Restores state saved by [`Engine::save_bytes`]; state of rules no
    /// longer configured is dropped, and tables stay within `max_keys`.
    pub fn load_bytes(&mut self, bytes: &[u8]) -> Result<(), serde_json::Error> {
        let saved: Saved = serde_json::from_slice(bytes)?;
        let index = |name: &str| self.rules.iter().position(|r| r.name == name);
        let mut windows = HashMap::new();
        for w in saved.windows {
            if let Some(i) = index(&w.rule) {
                if windows.len() < self.max_keys && self.rules[i].is_rate() {
                    let mut times: VecDeque<u64> = w.times.into();
                    while times.len() > self.rules[i].threshold {
                        times.pop_front();
                    }
                    windows.insert((i, w.agent), times);
                }
            }
        }
        let mut cooldowns = HashMap::new();
        for c in saved.cooldowns {
            if let Some(i) = index(&c.rule) {
                if cooldowns.len() < self.max_keys {
                    cooldowns.insert((i, c.agent, c.tool), c.at);
                }
            }
        }
        self.windows = windows;
        self.cooldowns = cooldowns;
        self.seen = saved.seen.into_iter().take(self.max_keys).collect();
        self.next_seq = saved.next_seq;
        Ok(())
    }
}

/// µs since the epoch as RFC 3339 UTC with microseconds.
fn format_time(us: u64) -> String {
    let mut out = Vec::with_capacity(27);
    toolgate_core::audit::write_rfc3339_us(us, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The `soar` sink.
pub struct SoarSink {
    name: String,
    dir: PathBuf,
    state: PathBuf,
    engine: Engine,
    endpoint: Endpoint,
    /// Alerts evaluated and not yet acknowledged, oldest first.
    outbox: VecDeque<Vec<u8>>,
    /// State that must be saved before the next acknowledgement.
    must_save: bool,
    last_save: Option<Instant>,
    /// Whether the gap between the saved state and the cursor was read.
    caught_up: bool,
}

impl SoarSink {
    /// Builds the sink for `[[audit.sinks]]` entry `s` (validated into
    /// `t`) of the log in `dir`, restoring its saved state.
    pub fn from_config(
        s: &SinkConfig,
        t: &SinkTarget,
        dir: &Path,
        hostname: String,
    ) -> Result<Self, HttpSinkError> {
        let name = s.name.get_ref().clone();
        let endpoint = HttpSink::from_config(s, t, hostname)?.into_endpoint();
        let mut engine = Engine::new(Rule::from_config(s), s.max_keys);
        let state = state_path(dir, &name);
        match std::fs::read(&state) {
            Ok(bytes) => {
                if let Err(e) = engine.load_bytes(&bytes) {
                    tracing::warn!(sink = %name, state = %state.display(), error = %e, "unreadable SOAR state: rebuilding it from the log");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(sink = %name, state = %state.display(), error = %e, "cannot read the SOAR state: rebuilding it from the log");
            }
        }
        Ok(Self {
            name,
            dir: dir.to_owned(),
            state,
            engine,
            endpoint,
            outbox: VecDeque::new(),
            must_save: false,
            last_save: None,
            caught_up: false,
        })
    }

    /// Re-reads, without alerting, the records between the saved state and
    /// `upto` (the cursor): their alerts were delivered before the cursor
    /// passed them, and the windows and pairs need them.
    fn catch_up(&mut self, upto: u64) {
        let from = self.engine.next_seq().max(1);
        if from >= upto {
            return;
        }
        let mut reader = LogReader::new(
            &self.dir,
            Position {
                next_seq: from,
                segment: 0,
                offset: 0,
            },
        );
        let mut batch = Vec::new();
        let mut discard = Vec::new();
        'read: loop {
            batch.clear();
            if let Err(e) = reader.read(256, &mut batch) {
                tracing::warn!(sink = %self.name, error = %e, "cannot re-read the log to rebuild SOAR state; windows start afresh");
                break;
            }
            if batch.is_empty() {
                break;
            }
            for e in &batch {
                if e.seq >= upto {
                    break 'read;
                }
                discard.clear();
                self.engine.evaluate(e.seq, &e.line, &mut discard);
            }
        }
        self.must_save = true;
        tracing::info!(sink = %self.name, from_seq = from, to_seq = upto, "SOAR state rebuilt from the log");
    }

    fn save(&mut self) {
        let bytes = self.engine.save_bytes();
        let done = match self.state.parent() {
            Some(d) => std::fs::create_dir_all(d),
            None => Ok(()),
        }
        .and_then(|()| write_atomically(&self.state, &bytes));
        match done {
            Ok(()) => {
                self.must_save = false;
                self.last_save = Some(Instant::now());
            }
            Err(e) => {
                tracing::warn!(sink = %self.name, error = %e, "cannot save the SOAR state; alerts may repeat after a restart");
            }
        }
    }

    fn send(&mut self, body: &[u8]) -> Result<(), SinkError> {
        let resp = self
            .endpoint
            .post(&[("Content-Type", b"application/json")], body)?;
        self.endpoint.outcome(&resp, "an alert")
    }
}

impl Sink for SoarSink {
    fn deliver(&mut self, batch: &[Entry]) -> Result<(), SinkError> {
        if !self.caught_up {
            self.caught_up = true;
            if let Some(first) = batch.first() {
                self.catch_up(first.seq);
            }
        }
        // A retried batch is below `next_seq` already: only the alerts not
        // yet acknowledged go out again.
        let mut alerts = Vec::new();
        for e in batch {
            if self.engine.evaluate(e.seq, &e.line, &mut alerts).must_save {
                self.must_save = true;
            }
        }
        for a in alerts {
            self.outbox
                .push_back(serde_json::to_vec(&a).unwrap_or_default());
        }
        while let Some(body) = self.outbox.front() {
            let body = body.clone();
            self.send(&body)?;
            self.outbox.pop_front();
            tracing::debug!(sink = %self.name, "SOAR alert delivered");
        }
        if self.must_save
            || self
                .last_save
                .is_none_or(|t| t.elapsed() >= STATE_SAVE_INTERVAL)
        {
            self.save();
        }
        Ok(())
    }
}

impl Drop for SoarSink {
    fn drop(&mut self) {
        // Only a state whose alerts were all acknowledged may be saved: the
        // rest are evaluated again from the log after a restart.
        if self.outbox.is_empty() && self.caught_up {
            self.save();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, kind: SoarRuleKind) -> Rule {
        Rule {
            name: name.into(),
            kind,
            agents: Vec::new(),
            tools: Vec::new(),
            reasons: Vec::new(),
            judge_outcomes: Vec::new(),
            threshold: 1,
            window_us: 0,
            cooldown_us: 0,
        }
    }

    fn rate(name: &str, kind: SoarRuleKind, threshold: usize, window_s: u64) -> Rule {
        Rule {
            threshold,
            window_us: window_s * 1_000_000,
            cooldown_us: window_s * 1_000_000,
            ..rule(name, kind)
        }
    }

    /// A record at second `s` of the day.
    fn line(s: u64, agent: &str, tool: &str, decision: &str, judge: Option<&str>) -> Vec<u8> {
        let judge = judge.map_or("null".to_owned(), |j| {
            format!(r#"{{"outcome":"{j}","latency_us":5}}"#)
        });
        let reason = if decision == "deny" {
            "policy:no-delete"
        } else {
            "allowed"
        };
        format!(
            r#"{{"time":"2026-11-25T00:{:02}:{:02}.000000Z","agent":"{agent}","user":"u1","method":"tools/call","tool":"{tool}","decision":"{decision}","reason":"{reason}","judge":{judge},"log_seq":0,"hash":"h"}}"#,
            s / 60,
            s % 60
        )
        .into_bytes()
    }

    struct Feed {
        engine: Engine,
        seq: u64,
    }

    impl Feed {
        fn new(rules: Vec<Rule>, max_keys: usize) -> Self {
            Self {
                engine: Engine::new(rules, max_keys),
                seq: 0,
            }
        }

        /// Evaluates one record; returns the rules that fired.
        fn push(&mut self, line: &[u8]) -> Vec<String> {
            self.seq += 1;
            let mut out = Vec::new();
            self.engine.evaluate(self.seq, line, &mut out);
            out.iter()
                .map(|a| a["rule"].as_str().unwrap_or("").to_owned())
                .collect()
        }
    }

    #[test]
    fn deny_rule_honours_filters_and_cooldown_per_tool() {
        let mut deny = rule("d", SoarRuleKind::Deny);
        deny.agents = vec!["billing-*".into()];
        deny.reasons = vec!["policy:*".into()];
        deny.cooldown_us = 60_000_000;
        let mut f = Feed::new(vec![deny], 100);
        assert_eq!(f.push(&line(0, "billing-bot", "a", "deny", None)), ["d"]);
        assert!(f
            .push(&line(1, "billing-bot", "a", "allow", None))
            .is_empty());
        assert!(f
            .push(&line(2, "support-bot", "a", "deny", None))
            .is_empty());
        assert!(
            f.push(&line(30, "billing-bot", "a", "deny", None))
                .is_empty(),
            "cool-down"
        );
        assert_eq!(
            f.push(&line(31, "billing-bot", "b", "deny", None)),
            ["d"],
            "another tool is another key"
        );
        assert_eq!(
            f.push(&line(60, "billing-bot", "a", "deny", None)),
            ["d"],
            "cool-down over"
        );
    }

    #[test]
    fn judge_rule_filters_on_the_outcome() {
        let mut j = rule("j", SoarRuleKind::Judge);
        j.judge_outcomes = vec!["deny".into(), "timeout".into()];
        let mut f = Feed::new(vec![j, rule("any", SoarRuleKind::Judge)], 100);
        assert!(f.push(&line(0, "a", "t", "allow", None)).is_empty());
        assert_eq!(f.push(&line(1, "a", "t", "allow", Some("allow"))), ["any"]);
        assert_eq!(
            f.push(&line(2, "a", "t", "deny", Some("deny"))),
            ["j", "any"]
        );
        assert_eq!(
            f.push(&line(3, "a", "t", "deny", Some("timeout"))),
            ["j", "any"]
        );
    }

    #[test]
    fn rate_windows_use_record_time_and_cool_down() {
        let mut f = Feed::new(vec![rate("burst", SoarRuleKind::DenyRate, 3, 10)], 100);
        // Three denials 6 s apart never sit within 10 s together.
        for s in [0, 6, 12, 18] {
            assert!(f.push(&line(s, "a", "t", "deny", None)).is_empty(), "{s}");
        }
        // 12 and 18 sit within 10 s of 19: three.
        let mut out = Vec::new();
        f.seq += 1;
        f.engine
            .evaluate(f.seq, &line(19, "a", "t", "deny", None), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["count"], 3);
        assert_eq!(out[0]["first_time"], "2026-11-25T00:00:12.000000Z");
        assert_eq!(out[0]["last_time"], "2026-11-25T00:00:19.000000Z");
        assert_eq!(out[0]["window_s"], 10);
        assert_eq!(out[0]["tool"], "t");
        // Cool-down (= window): quiet until 29 s, then fires again.
        assert!(f.push(&line(21, "a", "t", "deny", None)).is_empty());
        assert!(f.push(&line(28, "a", "t", "deny", None)).is_empty());
        assert!(
            f.push(&line(28, "b", "t", "deny", None)).is_empty(),
            "per agent"
        );
        assert_eq!(f.push(&line(29, "a", "t", "deny", None)), ["burst"]);
        // Allowed calls never count towards a deny rate.
        assert!(f.push(&line(45, "a", "t", "allow", None)).is_empty());
    }

    #[test]
    fn call_rate_counts_only_tool_calls() {
        let mut f = Feed::new(vec![rate("busy", SoarRuleKind::CallRate, 2, 60)], 100);
        let list = br#"{"time":"2026-11-25T00:00:01.000000Z","agent":"a","method":"tools/list","decision":"allow"}"#;
        assert!(f.push(list).is_empty());
        assert!(f.push(&line(2, "a", "t", "allow", None)).is_empty());
        assert_eq!(f.push(&line(3, "a", "t", "deny", None)), ["busy"]);
    }

    #[test]
    fn first_use_survives_a_save_and_load_and_retries_are_skipped() {
        let rules = vec![
            rule("new", SoarRuleKind::FirstUse),
            rate("burst", SoarRuleKind::DenyRate, 2, 60),
        ];
        let mut f = Feed::new(rules.clone(), 100);
        assert_eq!(f.push(&line(0, "a", "t", "deny", None)), ["new"]);
        assert!(f.push(&line(1, "a", "t", "allow", None)).is_empty());
        let mut out = Vec::new();
        assert_eq!(
            f.engine
                .evaluate(1, &line(0, "a", "t", "deny", None), &mut out),
            Outcome::default(),
            "a record evaluated before is skipped"
        );
        assert!(out.is_empty());
        let saved = f.engine.save_bytes();
        let mut g = Feed::new(rules, 100);
        assert!(g.engine.load_bytes(&saved).is_ok());
        g.seq = f.seq;
        assert_eq!(g.engine.next_seq(), 3);
        assert!(
            g.push(&line(2, "a", "t", "allow", None)).is_empty(),
            "pair known"
        );
        assert_eq!(
            g.push(&line(3, "a", "t", "deny", None)),
            ["burst"],
            "the window carried over"
        );
        assert_eq!(g.push(&line(4, "a", "u", "allow", None)), ["new"]);
    }

    #[test]
    fn tables_stay_within_max_keys() {
        let mut f = Feed::new(
            vec![
                rate("burst", SoarRuleKind::DenyRate, 2, 10),
                rule("new", SoarRuleKind::FirstUse),
            ],
            2,
        );
        f.push(&line(0, "a", "t", "deny", None));
        f.push(&line(1, "b", "t", "deny", None));
        // Full: c is not tracked while a and b are within their windows.
        let got = f.push(&line(2, "c", "t", "deny", None));
        assert!(got.is_empty(), "{got:?}");
        assert!(f.push(&line(3, "c", "t", "deny", None)).is_empty());
        assert!(f.engine.windows.len() <= 2 && f.engine.seen.len() <= 2);
        // Once a and b's windows have passed, c gets a slot.
        f.push(&line(20, "c", "t", "deny", None));
        assert_eq!(f.push(&line(21, "c", "t", "deny", None)), ["burst"]);
        assert!(f.engine.windows.len() <= 2 && f.engine.seen.len() <= 2);
    }
}
