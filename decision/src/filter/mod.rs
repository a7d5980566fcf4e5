//! Output filters: the output rules that apply to one (agent, tool), compiled
//! into one [`OutputFilter`], and the pure functions that apply it to a
//! tool's result.
//!
//! All rules of a filter share one detector pass ([`detect::Scanner`]) and
//! one `RegexSet` for operator patterns, so a result is scanned once however
//! many rules apply. A result whose raw JSON has no candidate at all (and a
//! filter without field paths or path conditions) needs no walk:
//! [`OutputFilter::needs_walk`] says so and the caller forwards it as it
//! would without rules. Otherwise [`Walker`] re-encodes the result from its
//! parsed tape, dropping and masking as it goes, and counts what fired.
//!
//! No I/O here: ingress calls these from its call driver.

pub mod detect;
pub mod mask;

use std::sync::Arc;

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use simd_json::prelude::*;
use simd_json::tape::Value;
use toolgate_core::audit::{Redaction, RedactionKind};
use toolgate_core::config::PATTERN_SIZE_LIMIT;
use toolgate_core::jsonrpc::{write_str, write_value, JsonParser};
use toolgate_core::output::{
    Condition, Detector, FieldPath, Literal, MaskStyle, OutputRule, Segment,
};

use detect::{DetectorSet, Found, Scanner};

/// What one counter of a filter counts.
#[derive(Debug)]
struct Counter {
    rule: Arc<str>,
    kind: RedactionKind,
    target: Arc<str>,
}

/// How matches of a detector or pattern are treated.
#[derive(Debug, Clone, Copy)]
struct MaskSpec {
    counter: usize,
    style: MaskStyle,
    /// False for a detector only named by `detected(…)`: found, not masked.
    mask: bool,
}

#[derive(Debug)]
struct PatternC {
    regex: Regex,
    name: Arc<str>,
    spec: MaskSpec,
}

#[derive(Debug, Clone, Copy)]
enum FieldAction {
    Drop,
    Mask(MaskStyle),
}

#[derive(Debug)]
struct FieldC {
    path: FieldPath,
    action: FieldAction,
    counter: usize,
    label: String,
}

#[derive(Debug)]
enum CondC {
    Eq(FieldPath, Literal),
    Ne(FieldPath, Literal),
    /// Bit of a detector or pattern in [`Walker::seen`].
    Detected(u128),
}

#[derive(Debug)]
struct CondRule {
    cond: CondC,
    counter: usize,
}

/// Most operator patterns in one filter (one bit each for `detected(…)`).
const MAX_PATTERNS: usize = 128 - Detector::ALL.len();

/// The output rules of one (agent, tool), compiled. Immutable; shared by
/// every route it applies to.
#[derive(Debug)]
pub struct OutputFilter {
    max_result_bytes: usize,
    scanner: Scanner,
    detectors: [Option<MaskSpec>; Detector::ALL.len()],
    patterns: Vec<PatternC>,
    set: Option<RegexSet>,
    fields: Vec<FieldC>,
    drop_where: Vec<CondRule>,
    refuse_when: Vec<CondRule>,
    counters: Vec<Counter>,
    /// Set when compiling failed: every result is refused (fail closed).
    refuse_all: bool,
    structural: bool,
}

/// Scans of one string's masked text, at most (see `write_string`).
const MASK_PASSES: usize = 4;

fn pattern_bit(i: usize) -> u128 {
    1u128 << (Detector::ALL.len() + i)
}

fn detector_bit(d: Detector) -> u128 {
    1u128 << (d as u32)
}

impl OutputFilter {
    /// Compiles `rules` (in configuration order: for a detector named by
    /// several rules, the first one's style and name apply).
    pub fn compile(rules: &[&OutputRule], max_result_bytes: usize) -> Self {
        let mut f = OutputFilter {
            max_result_bytes,
            scanner: Scanner::new(DetectorSet::default()),
            detectors: [None; Detector::ALL.len()],
            patterns: Vec::new(),
            set: None,
            fields: Vec::new(),
            drop_where: Vec::new(),
            refuse_when: Vec::new(),
            counters: Vec::new(),
            refuse_all: false,
            structural: false,
        };
        let mut scan = DetectorSet::default();
        for r in rules {
            let rule: Arc<str> = Arc::from(r.name.as_str());
            let mut counter = |kind, target: &str| {
                f.counters.push(Counter {
                    rule: Arc::clone(&rule),
                    kind,
                    target: Arc::from(target),
                });
                f.counters.len() - 1
            };
            for &d in &r.detectors {
                let slot = &mut f.detectors[d as usize];
                if slot.is_none_or(|s| !s.mask) {
                    let c = counter(RedactionKind::Detector, d.name());
                    *slot = Some(MaskSpec {
                        counter: c,
                        style: r.style,
                        mask: true,
                    });
                    scan.insert(d);
                }
            }
            let first_pattern = f.patterns.len();
            for p in &r.patterns {
                let c = counter(RedactionKind::Pattern, &p.name);
                match RegexBuilder::new(&p.regex)
                    .size_limit(PATTERN_SIZE_LIMIT)
                    .build()
                {
                    Ok(regex) => f.patterns.push(PatternC {
                        regex,
                        name: Arc::from(p.name.as_str()),
                        spec: MaskSpec {
                            counter: c,
                            style: r.style,
                            mask: true,
                        },
                    }),
                    Err(_) => f.refuse_all = true,
                }
            }
            for p in &r.drop_fields {
                let c = counter(RedactionKind::Field, &p.text);
                f.fields.push(FieldC {
                    path: p.clone(),
                    action: FieldAction::Drop,
                    counter: c,
                    label: String::new(),
                });
            }
            for p in &r.mask_fields {
                let c = counter(RedactionKind::Field, &p.text);
                let label = match p.segments.last() {
                    Some(Segment::Key(k))
                        if k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
                    {
                        k.clone()
                    }
                    _ => "field".to_owned(),
                };
                f.fields.push(FieldC {
                    path: p.clone(),
                    action: FieldAction::Mask(r.style),
                    counter: c,
                    label,
                });
            }
            for (list, kind, into) in [
                (&r.drop_where, RedactionKind::DropWhere, 0),
                (&r.refuse_when, RedactionKind::RefuseWhen, 1),
            ] {
                for (text, cond) in list {
                    let c = counter(kind, text);
                    let cond = match cond {
                        Condition::Eq(p, l) => CondC::Eq(p.clone(), l.clone()),
                        Condition::Ne(p, l) => CondC::Ne(p.clone(), l.clone()),
                        Condition::Detected(name) => {
                            if let Some([d]) = Detector::parse(name).as_deref() {
                                let slot = &mut f.detectors[*d as usize];
                                if slot.is_none() {
                                    *slot = Some(MaskSpec {
                                        counter: c,
                                        style: r.style,
                                        mask: false,
                                    });
                                }
                                scan.insert(*d);
                                CondC::Detected(detector_bit(*d))
                            } else if let Some(i) = f.patterns[first_pattern..]
                                .iter()
                                .position(|p| &*p.name == name.as_str())
                            {
                                CondC::Detected(pattern_bit(first_pattern + i))
                            } else {
                                // validation refuses this; never filter less on a surprise
                                f.refuse_all = true;
                                continue;
                            }
                        }
                    };
                    let rule = CondRule { cond, counter: c };
                    if into == 0 {
                        f.drop_where.push(rule);
                    } else {
                        f.refuse_when.push(rule);
                    }
                }
            }
        }
        if f.patterns.len() > MAX_PATTERNS {
            f.refuse_all = true;
        }
        if !f.patterns.is_empty() {
            match RegexSetBuilder::new(f.patterns.iter().map(|p| p.regex.as_str()))
                .size_limit(PATTERN_SIZE_LIMIT * 4)
                .build()
            {
                Ok(set) => f.set = Some(set),
                Err(_) => f.refuse_all = true,
            }
        }
        f.scanner = Scanner::new(scan);
        let path_cond = |c: &CondRule| !matches!(c.cond, CondC::Detected(_));
        f.structural = !f.fields.is_empty()
            || !f.patterns.is_empty()
            || f.drop_where.iter().any(path_cond)
            || f.refuse_when.iter().any(path_cond);
        f
    }

    /// Largest result this filter is applied to; larger ones are refused.
    pub fn max_result_bytes(&self) -> usize {
        self.max_result_bytes
    }

    /// Whether the result in `raw` (the upstream's JSON message) must be
    /// walked. False means no rule can fire and the result may be forwarded
    /// as is: no field paths or path conditions, and no detector candidate
    /// in the raw text (escapes other than `\u` cannot hide one; a `\u`
    /// forces the walk).
    pub fn needs_walk(&self, raw: &[u8]) -> bool {
        self.refuse_all || self.structural || self.scanner.any_in_json(raw)
    }

    /// A walker applying this filter; `inner` parses text content that holds JSON.
    pub fn walker<'f, 'p>(&'f self, inner: &'p mut JsonParser) -> Walker<'f, 'p> {
        Walker {
            f: self,
            inner: Some(inner),
            counts: vec![0; self.counters.len()],
            seen: 0,
            found: Vec::new(),
        }
    }
}

/// What applying a filter did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The result must not reach the agent.
    pub refused: bool,
    /// What fired, with counts, in configuration order.
    pub redactions: Vec<Redaction>,
}

/// One application of a filter to one result.
pub struct Walker<'f, 'p> {
    f: &'f OutputFilter,
    inner: Option<&'p mut JsonParser>,
    counts: Vec<u32>,
    /// Detectors and patterns found so far (masked or not), one bit each.
    seen: u128,
    found: Vec<Found>,
}

type States = Vec<(u16, u16)>;

enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

struct Hit<'l> {
    start: usize,
    end: usize,
    bit: u128,
    spec: MaskSpec,
    label: &'l str,
}

impl<'f> Walker<'f, '_> {
    /// Writes the value of member `key` of an MCP tool result:
    /// `structuredContent` is a root for field paths, text blocks of
    /// `content` that hold JSON are roots too, everything else is scanned by
    /// detectors and patterns only.
    pub fn write_member(&mut self, key: &str, v: Value<'_, '_>, out: &mut Vec<u8>) {
        match key {
            "structuredContent" => self.write_root(v, out),
            "content" if v.as_array().is_some() => self.write_content(v, out),
            _ => self.write_any(v, &Vec::new(), false, out),
        }
    }

    /// Writes the `arguments` object of an outgoing call: the root of field
    /// paths, scanned by detectors and patterns like a result.
    pub fn write_arguments(&mut self, v: Value<'_, '_>, out: &mut Vec<u8>) {
        self.write_root(v, out);
    }

    /// Writes a REST API's JSON answer passed on through the REST door: the
    /// root of field paths (as `structuredContent` is for the MCP door),
    /// scanned by detectors and patterns.
    pub fn write_body(&mut self, v: Value<'_, '_>, out: &mut Vec<u8>) {
        self.write_root(v, out);
    }

    /// Writes the `error` object of an upstream's JSON-RPC error answer,
    /// scanned by detectors and patterns (field paths address results, not
    /// errors): a tool must not leak through its error message what its
    /// result could not carry.
    pub fn write_error(&mut self, v: Value<'_, '_>, out: &mut Vec<u8>) {
        self.write_any(v, &Vec::new(), false, out);
    }

    /// What fired; whether the result is refused.
    pub fn finish(mut self) -> Verdict {
        let mut refused = self.f.refuse_all;
        for c in &self.f.refuse_when {
            if let CondC::Detected(bit) = c.cond {
                if self.seen & bit != 0 {
                    self.counts[c.counter] += 1;
                }
            }
            refused |= self.counts[c.counter] > 0;
        }
        let redactions = self
            .f
            .counters
            .iter()
            .zip(&self.counts)
            .filter(|(_, &n)| n > 0)
            .map(|(c, &n)| Redaction {
                rule: Arc::clone(&c.rule),
                kind: c.kind,
                target: Arc::clone(&c.target),
                count: n,
            })
            .collect();
        Verdict {
            refused,
            redactions,
        }
    }

    fn write_root(&mut self, v: Value<'_, '_>, out: &mut Vec<u8>) {
        for c in &self.f.refuse_when {
            if eval_path(&c.cond, v) {
                self.counts[c.counter] += 1;
            }
        }
        let states: States = (0..self.f.fields.len()).map(|i| (i as u16, 0)).collect();
        self.write_any(v, &states, true, out);
    }

    fn write_content(&mut self, v: Value<'_, '_>, out: &mut Vec<u8>) {
        out.push(b'[');
        let none = Vec::new();
        for (i, block) in v.as_array().into_iter().flat_map(|a| a.iter()).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let is_text = block.get("type").and_then(|t| t.into_string()) == Some("text");
            match block.as_object().filter(|_| is_text) {
                Some(obj) => {
                    out.push(b'{');
                    for (j, (k, child)) in obj.iter().enumerate() {
                        if j > 0 {
                            out.push(b',');
                        }
                        write_str(k, out);
                        out.push(b':');
                        match child.as_str().filter(|_| k == "text") {
                            Some(text) => self.write_text(text, out),
                            None => self.write_any(child, &none, false, out),
                        }
                    }
                    out.push(b'}');
                }
                None => self.write_any(block, &none, false, out),
            }
        }
        out.push(b']');
    }

    /// A text block: JSON text is a root for field paths (re-encoded only
    /// when a rule changed it), other text is scanned.
    fn write_text(&mut self, text: &str, out: &mut Vec<u8>) {
        let t = text.trim_start();
        if self.f.structural && (t.starts_with('{') || t.starts_with('[')) {
            if let Some(p) = self.inner.take() {
                let before = self.counts.clone();
                let mut buf = Vec::with_capacity(text.len());
                let parsed = match p.parse(text.as_bytes()) {
                    Ok(tape) => {
                        self.write_root(tape.as_value(), &mut buf);
                        true
                    }
                    Err(_) => false,
                };
                self.inner = Some(p);
                if parsed {
                    match std::str::from_utf8(&buf) {
                        Ok(s) if self.counts != before => write_str(s, out),
                        _ => write_str(text, out),
                    }
                    return;
                }
            }
        }
        self.write_string(text, out);
    }

    fn advance(&self, states: &States, step: Step<'_>) -> (Option<usize>, States) {
        let mut done: Option<usize> = None;
        let mut next = Vec::new();
        for &(fi, pos) in states {
            let segs = &self.f.fields[usize::from(fi)].path.segments;
            let ok = match (&segs[usize::from(pos)], &step) {
                (Segment::Key(k), Step::Key(s)) => k == s,
                (Segment::AnyKey, Step::Key(_)) => true,
                (Segment::Index(n), Step::Index(i)) => n == i,
                (Segment::AnyIndex, Step::Index(_)) => true,
                _ => false,
            };
            if ok {
                if usize::from(pos) + 1 == segs.len() {
                    done = Some(done.map_or(usize::from(fi), |d| d.min(usize::from(fi))));
                } else {
                    next.push((fi, pos + 1));
                }
            }
        }
        (done, next)
    }

    fn write_any(&mut self, v: Value<'_, '_>, states: &States, in_root: bool, out: &mut Vec<u8>) {
        if let Some(s) = v.as_str() {
            self.write_string(s, out);
        } else if let Some(obj) = v.as_object() {
            out.push(b'{');
            let mut first = true;
            for (k, child) in obj.iter() {
                let (done, next) = if states.is_empty() {
                    (None, Vec::new())
                } else {
                    self.advance(states, Step::Key(k))
                };
                if let Some(fi) = done {
                    let field = &self.f.fields[fi];
                    self.counts[field.counter] += 1;
                    if let FieldAction::Mask(style) = field.action {
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        write_str(k, out);
                        out.push(b':');
                        write_masked_value(child, &field.label, style, out);
                    }
                    continue;
                }
                if !first {
                    out.push(b',');
                }
                first = false;
                write_str(k, out);
                out.push(b':');
                self.write_any(child, &next, in_root, out);
            }
            out.push(b'}');
        } else if let Some(arr) = v.as_array() {
            out.push(b'[');
            let mut first = true;
            for (i, el) in arr.iter().enumerate() {
                let (done, next) = if states.is_empty() {
                    (None, Vec::new())
                } else {
                    self.advance(states, Step::Index(i))
                };
                if let Some(fi) = done {
                    let field = &self.f.fields[fi];
                    self.counts[field.counter] += 1;
                    if let FieldAction::Mask(style) = field.action {
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        write_masked_value(el, &field.label, style, out);
                    }
                    continue;
                }
                if in_root && !self.f.drop_where.is_empty() {
                    if let Some(c) = self.f.drop_where.iter().find(|c| eval_path(&c.cond, el)) {
                        self.counts[c.counter] += 1;
                        continue;
                    }
                    let mark = out.len();
                    let (seen, counts) = (self.seen, self.counts.clone());
                    self.seen = 0;
                    if !first {
                        out.push(b',');
                    }
                    self.write_any(el, &next, in_root, out);
                    let hit =
                        self.f.drop_where.iter().find(
                            |c| matches!(c.cond, CondC::Detected(bit) if self.seen & bit != 0),
                        );
                    if let Some(c) = hit {
                        out.truncate(mark);
                        self.counts = counts;
                        self.counts[c.counter] += 1;
                        self.seen = seen;
                        continue;
                    }
                    self.seen |= seen;
                    first = false;
                    continue;
                }
                if !first {
                    out.push(b',');
                }
                first = false;
                self.write_any(el, &next, in_root, out);
            }
            out.push(b']');
        } else {
            // A number can be a card or phone number too.
            let mark = out.len();
            write_value(v, out);
            if v.is_number() && !self.f.scanner.set().is_empty() {
                let text = String::from_utf8_lossy(&out[mark..]).into_owned();
                self.found.clear();
                self.f.scanner.scan(text.as_bytes(), &mut self.found);
                if !self.found.is_empty() {
                    out.truncate(mark);
                    self.write_string(&text, out);
                }
            }
        }
    }

    /// A string, with detector and pattern matches masked. Masking joins
    /// what was around a match, which can make a new one (digits glued to
    /// an IBAN stand alone once the phone number before it is a label), so
    /// the masked text is scanned again until nothing more is found; past
    /// [`MASK_PASSES`] the whole string is masked (fail closed).
    fn write_string(&mut self, s: &str, out: &mut Vec<u8>) {
        let Some(mut masked) = self.mask_once(s) else {
            write_str(s, out);
            return;
        };
        for _ in 1..MASK_PASSES {
            match self.mask_once(&masked) {
                Some(again) => masked = again,
                None => {
                    write_str(&masked, out);
                    return;
                }
            }
        }
        let mut whole = String::new();
        mask::write_mask(&masked, "masked", MaskStyle::Label, &mut whole);
        write_str(&whole, out);
    }

    /// `s` with one pass of detector and pattern matches masked; `None`
    /// when nothing in it is to be masked.
    fn mask_once(&mut self, s: &str) -> Option<String> {
        let f = self.f;
        self.found.clear();
        f.scanner.scan(s.as_bytes(), &mut self.found);
        let mut hits: Vec<Hit<'f>> = Vec::new();
        for x in &self.found {
            if let Some(spec) = f.detectors[x.detector as usize] {
                hits.push(Hit {
                    start: x.start,
                    end: x.end,
                    bit: detector_bit(x.detector),
                    spec,
                    label: x.detector.name(),
                });
            }
        }
        if let Some(set) = &f.set {
            for i in set.matches(s).iter() {
                let p = &f.patterns[i];
                for m in p.regex.find_iter(s) {
                    if m.start() < m.end() {
                        hits.push(Hit {
                            start: m.start(),
                            end: m.end(),
                            bit: pattern_bit(i),
                            spec: p.spec,
                            label: &p.name,
                        });
                    }
                }
            }
            hits.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        }
        let mut spans = Vec::with_capacity(hits.len());
        let mut at = 0;
        for h in &hits {
            if h.start < at {
                continue; // overlaps an earlier, longer match
            }
            self.seen |= h.bit;
            if h.spec.mask {
                self.counts[h.spec.counter] += 1;
                spans.push(mask::Span {
                    start: h.start,
                    end: h.end,
                    label: h.label,
                    style: h.spec.style,
                });
                at = h.end;
            }
        }
        (!spans.is_empty()).then(|| mask::mask(s, &spans))
    }
}

/// Writes a whole value masked: strings and numbers by their text, other
/// values by their JSON text.
fn write_masked_value(v: Value<'_, '_>, label: &str, style: MaskStyle, out: &mut Vec<u8>) {
    let text = match v.as_str() {
        Some(s) => s.to_owned(),
        None => {
            let mut raw = Vec::new();
            write_value(v, &mut raw);
            String::from_utf8_lossy(&raw).into_owned()
        }
    };
    let mut m = String::with_capacity(label.len() + 16);
    mask::write_mask(&text, label, style, &mut m);
    write_str(&m, out);
}

/// Whether a path condition holds for `v` (detector conditions: false).
fn eval_path(c: &CondC, v: Value<'_, '_>) -> bool {
    match c {
        CondC::Eq(p, lit) => {
            let mut hit = false;
            select(v, &p.segments, &mut |x| {
                hit |= lit_eq(x, lit);
                hit
            });
            hit
        }
        CondC::Ne(p, lit) => {
            let (mut any, mut eq) = (false, false);
            select(v, &p.segments, &mut |x| {
                any = true;
                eq |= lit_eq(x, lit);
                eq
            });
            any && !eq
        }
        CondC::Detected(_) => false,
    }
}

/// Calls `f` on every value `segs` selects under `v` until it returns true.
fn select(v: Value<'_, '_>, segs: &[Segment], f: &mut dyn FnMut(Value<'_, '_>) -> bool) -> bool {
    let Some((seg, rest)) = segs.split_first() else {
        return f(v);
    };
    match seg {
        Segment::Key(k) => v.get(k.as_str()).is_some_and(|c| select(c, rest, f)),
        Segment::AnyKey => v
            .as_object()
            .is_some_and(|o| o.values().any(|c| select(c, rest, f))),
        Segment::Index(i) => v
            .as_array()
            .and_then(|a| a.get(*i))
            .is_some_and(|c| select(c, rest, f)),
        Segment::AnyIndex => v
            .as_array()
            .is_some_and(|a| a.iter().any(|c| select(c, rest, f))),
    }
}

fn lit_eq(v: Value<'_, '_>, lit: &Literal) -> bool {
    match lit {
        Literal::Str(s) => v.as_str() == Some(s.as_str()),
        Literal::Num(n) => v.cast_f64() == Some(*n),
        Literal::Bool(b) => v.as_bool() == Some(*b),
        Literal::Null => v.is_null(),
    }
}

#[cfg(test)]
mod tests;
