//! Sessions: what a decision may know of the calls before it in the same
//! session (`context.session` in Cedar), kept lock-free across shards.
//!
//! A call enters its session before its decision ([`Sessions::enter`]),
//! reads the session's [`SessionFacts`], and — once attachment, policy,
//! the judge and the quotas have all let it through — is recorded in the
//! session ([`Entry::commit`]). A refused call records nothing: it cannot
//! advance or reset anything. While a call is between its decision and
//! its record it counts in `in_flight` for the session's other calls, so
//! a policy can refuse to decide a counted call while another one is
//! still open.
//!
//! Labels ([`labels`]) summarise tools (`money`, `reads_pii`, …); a session
//! keeps one bit and one counter per label.

pub mod labels;
pub mod shared;
mod table;

pub use table::{Entry, Sessions, DISTINCT, RING, TOOLS};

use std::sync::Arc;

use cedar_policy::RestrictedExpression;
use toolgate_core::jsonrpc::write_str;

/// Most labels a session keeps apart.
pub const MAX_LABELS: usize = toolgate_core::config::validate::MAX_LABELS;
/// Most arguments whose distinct values a session counts.
pub const MAX_DISTINCT: usize = toolgate_core::config::validate::MAX_DISTINCT;

/// The attributes of `context.session`, by bit: a policy slice builds only
/// the ones its policies name ([`fields_read`]).
pub const FIELDS: [&str; 14] = [
    "id",
    "known",
    "calls",
    "calls_last_minute",
    "calls_last_hour",
    "tool_calls",
    "in_flight",
    "age_s",
    "labels",
    "last_labels",
    "label_calls",
    "label_calls_last_minute",
    "label_calls_last_hour",
    "distinct_last_hour",
];

/// The `context.session` attributes (bits of [`FIELDS`]) a policy text may
/// read: every identifier or quoted word of the text that names one, when
/// the text mentions `session` at all. It errs only towards more.
pub fn fields_read(policy_text: &str) -> u16 {
    if !policy_text.contains("session") {
        return 0;
    }
    policy_text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter_map(|word| FIELDS.iter().position(|f| *f == word))
        .fold(0, |bits, i| bits | 1 << i)
}

/// The label bits whose counters a policy text may read: labels named as
/// a word of the text (`.money`, `["money"]`, `has money`), when it
/// mentions `session` at all.
pub fn labels_read(policy_text: &str) -> u32 {
    if !policy_text.contains("session") {
        return 0;
    }
    let names = labels::names();
    policy_text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter_map(|word| names.iter().position(|n| **n == *word))
        .fold(0, |bits, i| bits | 1 << i)
}

/// What one admitted call adds to its session.
#[derive(Debug, Clone, Copy, Default)]
pub struct Recorded {
    /// The tool's label bits.
    pub labels: u32,
    /// The tool's [`Sessions::value_hash`].
    pub tool: u32,
    /// Per counted argument, its value's hash (0: absent).
    pub distinct: [u32; MAX_DISTINCT],
}

impl Sessions {
    /// What a call of a tool with `labels` and name `tool`, with
    /// `arguments`, adds to its session: the hashes of the counted
    /// arguments' values (`distinct`, in `[sessions] distinct` order) as
    /// their JSON text, so `"7"` and `7` are two values.
    pub fn recorded(
        &self,
        labels: u32,
        tool: &str,
        distinct: &[Arc<str>],
        arguments: Option<simd_json::tape::Value<'_, '_>>,
    ) -> Recorded {
        let mut call = Recorded {
            labels,
            tool: self.value_hash(tool.as_bytes()),
            distinct: [0; MAX_DISTINCT],
        };
        let Some(obj) = arguments.as_ref().and_then(|a| a.as_object()) else {
            return call;
        };
        let mut text = Vec::new();
        for (slot, name) in call.distinct.iter_mut().zip(distinct) {
            if let Some(v) = obj.iter().find(|(k, _)| *k == &**name).map(|(_, v)| v) {
                text.clear();
                toolgate_core::jsonrpc::write_value(v, &mut text);
                // The same digest on every replica: shared sessions agree.
                *slot = shared::value_digest(&text);
            }
        }
        call
    }
}

/// A session as one decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFacts {
    /// The session key.
    pub id: u64,
    /// False when the session's state is not all there (no room for the
    /// session, or it outgrew its per-session state): policies decide what
    /// unknown means.
    pub known: bool,
    /// Calls recorded in the session.
    pub calls: u32,
    /// Of them, in the last 60 s (at most [`RING`]).
    pub calls_last_minute: u32,
    /// Of them, in the last hour (at most [`RING`]).
    pub calls_last_hour: u32,
    /// Calls of the tool now being called.
    pub tool_calls: u32,
    /// Other calls of the session decided but not yet recorded or refused.
    pub in_flight: u32,
    /// Seconds since the session's first call.
    pub age_s: u32,
    /// Label bits of every call so far.
    pub labels: u32,
    /// Label bits of the last call recorded.
    pub last_labels: u32,
    /// Calls per label bit.
    pub label_calls: [u32; MAX_LABELS],
    /// Calls per label bit in the last 60 s.
    pub label_calls_last_minute: [u32; MAX_LABELS],
    /// Calls per label bit in the last hour.
    pub label_calls_last_hour: [u32; MAX_LABELS],
    /// Distinct values per counted argument in the last hour (at most [`DISTINCT`]).
    pub distinct_last_hour: [u32; MAX_DISTINCT],
}

impl SessionFacts {
    /// What a decision cache key must hold of these facts for a slice
    /// reading `fields` (bits of [`FIELDS`]) with per-label counters for
    /// `labels`: exactly the values [`SessionView::to_cedar`] would give
    /// it, so two calls with equal keys get equal contexts.
    pub fn cache_key(&self, fields: u16, labels: u32, out: &mut Vec<u8>) {
        let has = |i: usize| fields & (1 << i) != 0;
        let mut put = |v: u32| out.extend_from_slice(&v.to_le_bytes());
        let per_label = |counts: &[u32; MAX_LABELS], put: &mut dyn FnMut(u32)| {
            for (i, c) in counts.iter().enumerate() {
                if labels & (1 << i) != 0 {
                    put(*c);
                }
            }
        };
        if has(0) {
            put(self.id as u32);
            put((self.id >> 32) as u32);
        }
        if has(1) {
            put(u32::from(self.known));
        }
        for (i, v) in [
            (2, self.calls),
            (3, self.calls_last_minute),
            (4, self.calls_last_hour),
            (5, self.tool_calls),
            (6, self.in_flight),
            (7, self.age_s),
            (8, self.labels),
            (9, self.last_labels),
        ] {
            if has(i) {
                put(v);
            }
        }
        if has(10) {
            per_label(&self.label_calls, &mut put);
        }
        if has(11) {
            per_label(&self.label_calls_last_minute, &mut put);
        }
        if has(12) {
            per_label(&self.label_calls_last_hour, &mut put);
        }
        if has(13) {
            for d in self.distinct_last_hour {
                put(d);
            }
        }
    }

    /// The facts an audit record's `session` object holds (as
    /// [`SessionView::write_json`] wrote them), for re-deciding the call:
    /// label names get this process's bits, counted arguments their place
    /// in `distinct`. `None` when it is not such an object.
    pub fn from_record(v: &serde_json::Value, distinct: &[Arc<str>]) -> Option<Self> {
        let num = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_u64)
                .map(|n| n as u32)
        };
        let bits = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|n| labels::bit(n.as_str()?))
                        .fold(0u32, |b, x| b | x)
                })
                .unwrap_or(0)
        };
        let per_label = |k: &str| {
            let mut out = [0u32; MAX_LABELS];
            for (name, n) in v
                .get(k)
                .and_then(serde_json::Value::as_object)
                .into_iter()
                .flatten()
            {
                if let (Some(b), Some(n)) = (labels::bit(name), n.as_u64()) {
                    out[b.trailing_zeros() as usize] = n as u32;
                }
            }
            out
        };
        let id = u64::from_str_radix(v.get("id")?.as_str()?, 16).ok()?;
        let mut f = Self::unknown(id);
        f.known = v.get("known")?.as_bool()?;
        f.calls = num("calls")?;
        f.calls_last_minute = num("calls_last_minute").unwrap_or(0);
        f.calls_last_hour = num("calls_last_hour").unwrap_or(0);
        f.tool_calls = num("tool_calls").unwrap_or(0);
        f.in_flight = num("in_flight").unwrap_or(0);
        f.age_s = num("age_s").unwrap_or(0);
        f.labels = bits("labels");
        f.last_labels = bits("last_labels");
        f.label_calls = per_label("label_calls");
        f.label_calls_last_minute = per_label("label_calls_last_minute");
        f.label_calls_last_hour = per_label("label_calls_last_hour");
        if let Some(d) = v
            .get("distinct_last_hour")
            .and_then(serde_json::Value::as_object)
        {
            for (name, n) in d {
                if let (Some(i), Some(n)) =
                    (distinct.iter().position(|x| **x == **name), n.as_u64())
                {
                    if let Some(slot) = f.distinct_last_hour.get_mut(i) {
                        *slot = n as u32;
                    }
                }
            }
        }
        Some(f)
    }

    /// Nothing known of session `id`.
    pub fn unknown(id: u64) -> Self {
        Self {
            id,
            known: false,
            calls: 0,
            calls_last_minute: 0,
            calls_last_hour: 0,
            tool_calls: 0,
            in_flight: 0,
            age_s: 0,
            labels: 0,
            last_labels: 0,
            label_calls: [0; MAX_LABELS],
            label_calls_last_minute: [0; MAX_LABELS],
            label_calls_last_hour: [0; MAX_LABELS],
            distinct_last_hour: [0; MAX_DISTINCT],
        }
    }
}

/// Facts with the names that give them meaning: what Cedar and the audit
/// record are given.
#[derive(Clone, Copy)]
pub struct SessionView<'a> {
    /// The facts.
    pub facts: &'a SessionFacts,
    /// Label names by bit.
    pub labels: &'a [Arc<str>],
    /// Counted argument names, in `[sessions] distinct` order.
    pub distinct: &'a [Arc<str>],
}

impl SessionView<'_> {
    /// The session's id as records show it.
    pub fn id(&self) -> String {
        format!("{:016x}", self.facts.id)
    }

    fn names(&self, bits: u32) -> impl Iterator<Item = &Arc<str>> + '_ {
        self.labels
            .iter()
            .enumerate()
            .filter(move |(i, _)| bits & (1 << i) != 0)
            .map(|(_, n)| n)
    }

    /// `context.session` as the schema types it, with the attributes of
    /// `fields` (bits of [`FIELDS`]) only, and in the per-label counters
    /// the labels of `labels` (bits) only: the policies read no others
    /// (a record attribute is read by its literal name). The label sets
    /// stay whole: a set can be compared without naming its members.
    pub fn to_cedar(&self, fields: u16, labels: u32) -> Result<RestrictedExpression, String> {
        let f = self.facts;
        let want = |name: &str| {
            FIELDS
                .iter()
                .position(|n| *n == name)
                .is_some_and(|i| fields & (1 << i) != 0)
        };
        let long = |v: u32| RestrictedExpression::new_long(i64::from(v));
        let set = |bits: u32| {
            RestrictedExpression::new_set(
                self.names(bits)
                    .map(|n| RestrictedExpression::new_string(n.to_string())),
            )
        };
        let per_label = |counts: &[u32; MAX_LABELS]| {
            RestrictedExpression::new_record(
                self.labels
                    .iter()
                    .zip(counts)
                    .enumerate()
                    .filter(|(i, _)| labels & (1 << i) != 0)
                    .map(|(_, (n, c))| (n.to_string(), long(*c))),
            )
            .map_err(|e| e.to_string())
        };
        let mut attrs: Vec<(String, RestrictedExpression)> = Vec::with_capacity(FIELDS.len());
        let mut put = |name: &str, value: &dyn Fn() -> Result<RestrictedExpression, String>| {
            if want(name) {
                attrs.push((name.to_owned(), value()?));
            }
            Ok::<(), String>(())
        };
        put("id", &|| Ok(RestrictedExpression::new_string(self.id())))?;
        put("known", &|| Ok(RestrictedExpression::new_bool(f.known)))?;
        put("calls", &|| Ok(long(f.calls)))?;
        put("calls_last_minute", &|| Ok(long(f.calls_last_minute)))?;
        put("calls_last_hour", &|| Ok(long(f.calls_last_hour)))?;
        put("tool_calls", &|| Ok(long(f.tool_calls)))?;
        put("in_flight", &|| Ok(long(f.in_flight)))?;
        put("age_s", &|| Ok(long(f.age_s)))?;
        put("labels", &|| Ok(set(f.labels)))?;
        put("last_labels", &|| Ok(set(f.last_labels)))?;
        put("label_calls", &|| per_label(&f.label_calls))?;
        put("label_calls_last_minute", &|| {
            per_label(&f.label_calls_last_minute)
        })?;
        put("label_calls_last_hour", &|| {
            per_label(&f.label_calls_last_hour)
        })?;
        put("distinct_last_hour", &|| {
            RestrictedExpression::new_record(
                self.distinct
                    .iter()
                    .zip(&f.distinct_last_hour)
                    .map(|(n, c)| (n.to_string(), long(*c))),
            )
            .map_err(|e| e.to_string())
        })?;
        RestrictedExpression::new_record(attrs).map_err(|e| e.to_string())
    }

    /// The facts as the audit record's `session` object: the id, whether
    /// known, the counts, and only the labels and counters that are set.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let f = self.facts;
        out.extend_from_slice(b"{\"id\":");
        write_str(&self.id(), out);
        let _ = write!(
            out,
            ",\"known\":{},\"calls\":{},\"calls_last_minute\":{},\"calls_last_hour\":{},\
             \"tool_calls\":{},\"in_flight\":{},\"age_s\":{}",
            f.known,
            f.calls,
            f.calls_last_minute,
            f.calls_last_hour,
            f.tool_calls,
            f.in_flight,
            f.age_s
        );
        let list = |key: &str, bits: u32, out: &mut Vec<u8>| {
            let _ = write!(out, ",\"{key}\":[");
            for (i, n) in self.names(bits).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(n, out);
            }
            out.push(b']');
        };
        list("labels", f.labels, out);
        list("last_labels", f.last_labels, out);
        let counts = |key: &str, names: &[Arc<str>], counts: &[u32], out: &mut Vec<u8>| {
            let _ = write!(out, ",\"{key}\":{{");
            let mut first = true;
            for (n, c) in names.iter().zip(counts).filter(|(_, c)| **c > 0) {
                if !first {
                    out.push(b',');
                }
                first = false;
                write_str(n, out);
                let _ = write!(out, ":{c}");
            }
            out.push(b'}');
        };
        counts("label_calls", self.labels, &f.label_calls, out);
        counts(
            "label_calls_last_minute",
            self.labels,
            &f.label_calls_last_minute,
            out,
        );
        counts(
            "label_calls_last_hour",
            self.labels,
            &f.label_calls_last_hour,
            out,
        );
        counts(
            "distinct_last_hour",
            self.distinct,
            &f.distinct_last_hour,
            out,
        );
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests;
