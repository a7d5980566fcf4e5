//! The vocabulary of output rules: detectors, masking styles, field paths and
//! conditions, parsed from the text an operator writes in `[[output_rules]]`.
//!
//! Parsing lives here so that `toolgate check` reports a bad path or
//! condition with its line; `decision` compiles the parsed forms into the
//! filters shards apply.

use std::fmt;

/// A built-in detector of sensitive substrings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detector {
    /// Payment card numbers: 13–19 digits (spaces or dashes between groups),
    /// a card-network first digit (2–6), Luhn-valid.
    Card,
    /// E-mail addresses.
    Email,
    /// Phone numbers: `+` and 8–15 digits, or North American `(555) 123-4567`.
    Phone,
    /// IBANs, mod-97 checked.
    Iban,
    /// AWS access key ids (`AKIA…`, `ASIA…`).
    AwsKey,
    /// GitHub tokens (`ghp_…`, `github_pat_…`, …).
    GithubToken,
    /// Slack tokens (`xoxb-…`, `xapp-…`, …).
    SlackToken,
    /// PEM private-key blocks, `-----BEGIN … PRIVATE KEY-----` to its END line.
    PrivateKey,
    /// JSON Web Tokens (`eyJ….eyJ….…`).
    Jwt,
    /// US social security numbers, `078-05-1120` or `078 05 1120`: area not
    /// 000, 666 or 9xx, group not 00, serial not 0000.
    UsSsn,
    /// UK national insurance numbers, `QQ123456C` or `QQ 12 34 56 C`: the
    /// prefix letters HMRC allocates, six digits, suffix A–D.
    UkNino,
}

impl Detector {
    /// Every detector, in a fixed order (the order of bits in a detector set).
    pub const ALL: [Detector; 11] = [
        Detector::Card,
        Detector::Email,
        Detector::Phone,
        Detector::Iban,
        Detector::AwsKey,
        Detector::GithubToken,
        Detector::SlackToken,
        Detector::PrivateKey,
        Detector::Jwt,
        Detector::UsSsn,
        Detector::UkNino,
    ];

    /// The detectors the group name `secrets` stands for.
    pub const SECRETS: [Detector; 5] = [
        Detector::AwsKey,
        Detector::GithubToken,
        Detector::SlackToken,
        Detector::PrivateKey,
        Detector::Jwt,
    ];

    /// The detectors the group name `gov_id` stands for.
    pub const GOV_ID: [Detector; 2] = [Detector::UsSsn, Detector::UkNino];

    /// The group names [`Detector::parse`] accepts besides detector names.
    pub const GROUPS: [&'static str; 2] = ["secrets", "gov_id"];

    /// The name used in config, labels and audit records.
    pub fn name(self) -> &'static str {
        match self {
            Detector::Card => "card",
            Detector::Email => "email",
            Detector::Phone => "phone",
            Detector::Iban => "iban",
            Detector::AwsKey => "aws_key",
            Detector::GithubToken => "github_token",
            Detector::SlackToken => "slack_token",
            Detector::PrivateKey => "private_key",
            Detector::Jwt => "jwt",
            Detector::UsSsn => "us_ssn",
            Detector::UkNino => "uk_nino",
        }
    }

    /// The detectors a config name stands for (`secrets` and `gov_id` are
    /// groups).
    pub fn parse(name: &str) -> Option<Vec<Detector>> {
        match name {
            "secrets" => return Some(Self::SECRETS.to_vec()),
            "gov_id" => return Some(Self::GOV_ID.to_vec()),
            _ => {}
        }
        Self::ALL
            .iter()
            .find(|d| d.name() == name)
            .map(|d| vec![*d])
    }

    /// Bit of this detector in a set.
    pub fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// How a masked value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaskStyle {
    /// `[REDACTED:card]`.
    #[default]
    Label,
    /// `[REDACTED:card:****1111]`: the last four letters or digits kept.
    Last4,
    /// `[REDACTED:card:sha256:3f2a9c1b7e4d]`: stable across calls, so
    /// records can be correlated; unkeyed, so not for low-entropy values.
    Hash,
}

impl MaskStyle {
    /// Parses `label`, `last4` or `hash`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "label" => Some(Self::Label),
            "last4" => Some(Self::Last4),
            "hash" => Some(Self::Hash),
            _ => None,
        }
    }
}

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// `.name` or `["name"]`.
    Key(String),
    /// `.*`: every member of an object.
    AnyKey,
    /// `[3]`.
    Index(usize),
    /// `[*]`: every element of an array.
    AnyIndex,
}

/// A path into a JSON value: `$.customers[*].ssn`, `$["odd key"]`, `$.items[0]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    /// The path as written (for audit records).
    pub text: String,
    /// Steps from the root.
    pub segments: Vec<Segment>,
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

impl FieldPath {
    /// Parses a path. A leading `$` is optional (`tier` is `$.tier`); the
    /// root itself (`$` alone) is not a field and is refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let b = t.as_bytes();
        let mut i = 0;
        let mut segments = Vec::new();
        if b.first() == Some(&b'$') {
            i = 1;
        } else if b.first().is_some_and(|&c| is_ident(c)) {
            // bare `tier.name`: as if `$.` were written.
            let start = i;
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
            segments.push(Segment::Key(t[start..i].to_owned()));
        } else {
            return Err(format!("path `{text}` must start with `$`"));
        }
        while i < b.len() {
            match b[i] {
                b'.' => {
                    i += 1;
                    if b.get(i) == Some(&b'*') {
                        segments.push(Segment::AnyKey);
                        i += 1;
                        continue;
                    }
                    let start = i;
                    while i < b.len() && is_ident(b[i]) {
                        i += 1;
                    }
                    if start == i {
                        return Err(format!("path `{text}`: expected a field name after `.`"));
                    }
                    segments.push(Segment::Key(t[start..i].to_owned()));
                }
                b'[' => {
                    let close = t[i..]
                        .find(']')
                        .map(|c| c + i)
                        .ok_or_else(|| format!("path `{text}`: `[` without `]`"))?;
                    let inner = t[i + 1..close].trim();
                    if inner == "*" {
                        segments.push(Segment::AnyIndex);
                    } else if let Ok(n) = inner.parse::<usize>() {
                        segments.push(Segment::Index(n));
                    } else if inner.len() >= 2
                        && ((inner.starts_with('"') && inner.ends_with('"'))
                            || (inner.starts_with('\'') && inner.ends_with('\'')))
                    {
                        segments.push(Segment::Key(inner[1..inner.len() - 1].to_owned()));
                    } else {
                        return Err(format!(
                            "path `{text}`: `[{inner}]` must be `[*]`, an index or a quoted name"
                        ));
                    }
                    i = close + 1;
                }
                c => {
                    return Err(format!(
                        "path `{text}`: unexpected `{}`; use `.name`, `[*]`, `[0]` or `[\"name\"]`",
                        c as char
                    ))
                }
            }
        }
        if segments.is_empty() {
            return Err(format!("path `{text}` names the whole result, not a field"));
        }
        Ok(Self {
            text: t.to_owned(),
            segments,
        })
    }
}

/// A JSON scalar a condition compares with.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `"internal"`.
    Str(String),
    /// `3`, `-1.5`.
    Num(f64),
    /// `true` / `false`.
    Bool(bool),
    /// `null`.
    Null,
}

/// A condition of `drop_where` or `refuse_when`.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// `PATH == LITERAL`: some value the path selects equals the literal.
    Eq(FieldPath, Literal),
    /// `PATH != LITERAL`: the path selects a value and none equals the literal.
    Ne(FieldPath, Literal),
    /// `detected(NAME)`: a detector (or a pattern of the same rule) matches
    /// somewhere in the value.
    Detected(String),
}

impl Condition {
    /// Parses `tier == "internal"`, `$.flags.secret != false`, `detected(private_key)`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if let Some(rest) = t.strip_prefix("detected(") {
            let name = rest
                .strip_suffix(')')
                .ok_or_else(|| format!("condition `{text}`: `detected(` without `)`"))?
                .trim();
            if name.is_empty() || !name.bytes().all(is_ident) {
                return Err(format!(
                    "condition `{text}`: `detected(…)` takes a detector or pattern name"
                ));
            }
            return Ok(Condition::Detected(name.to_owned()));
        }
        let (path, op, lit) = if let Some((p, l)) = t.split_once("==") {
            (p, "==", l)
        } else if let Some((p, l)) = t.split_once("!=") {
            (p, "!=", l)
        } else {
            return Err(format!(
                "condition `{text}` must be `PATH == VALUE`, `PATH != VALUE` or `detected(NAME)`"
            ));
        };
        let path = FieldPath::parse(path).map_err(|e| format!("condition `{text}`: {e}"))?;
        let lit = parse_literal(lit.trim()).ok_or_else(|| {
            format!(
                "condition `{text}`: `{}` must be a quoted string, a number, true, false or null",
                lit.trim()
            )
        })?;
        Ok(match op {
            "==" => Condition::Eq(path, lit),
            _ => Condition::Ne(path, lit),
        })
    }
}

fn parse_literal(s: &str) -> Option<Literal> {
    match s {
        "true" => return Some(Literal::Bool(true)),
        "false" => return Some(Literal::Bool(false)),
        "null" => return Some(Literal::Null),
        _ => {}
    }
    if s.len() >= 2
        && ((s.starts_with('"') && s.ends_with('"')) || (s.starts_with('\'') && s.ends_with('\'')))
    {
        return Some(Literal::Str(s[1..s.len() - 1].to_owned()));
    }
    s.parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
        .map(Literal::Num)
}

/// An operator-defined pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// Name in labels and audit records.
    pub name: String,
    /// Regular expression (Rust `regex` syntax), checked at load.
    pub regex: String,
}

/// One `[[output_rules]]` entry, parsed and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputRule {
    /// Rule name, unique, as in audit records.
    pub name: String,
    /// Exposed tool names or globs (`*` matches any run of characters).
    pub tools: Vec<String>,
    /// Agent ids the rule applies to; empty means every agent.
    pub agents: Vec<String>,
    /// Fields removed from structured results.
    pub drop_fields: Vec<FieldPath>,
    /// Fields whose value is replaced by a mask.
    pub mask_fields: Vec<FieldPath>,
    /// Detectors whose matches are masked.
    pub detectors: Vec<Detector>,
    /// Operator patterns whose matches are masked.
    pub patterns: Vec<Pattern>,
    /// How masks are written.
    pub style: MaskStyle,
    /// Array elements dropped when a condition holds for them.
    pub drop_where: Vec<(String, Condition)>,
    /// The whole result is refused when a condition holds for it.
    pub refuse_when: Vec<(String, Condition)>,
    /// Whether the rule filters tool results.
    pub results: bool,
    /// Whether the rule filters the arguments of outgoing calls.
    pub arguments: bool,
    /// Whether the rule filters tool definitions in `tools/list`.
    pub descriptions: bool,
}

/// Whether `name` matches `glob`, where `*` matches any run of characters.
pub fn glob_match(glob: &str, name: &str) -> bool {
    let (g, n) = (glob.as_bytes(), name.as_bytes());
    let (mut gi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if gi < g.len() && g[gi] == b'*' {
            star = Some((gi, ni));
            gi += 1;
        } else if gi < g.len() && g[gi] == n[ni] {
            gi += 1;
            ni += 1;
        } else if let Some((sg, sn)) = star {
            gi = sg + 1;
            ni = sn + 1;
            star = Some((sg, sn + 1));
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_each_segment_kind() {
        let p = FieldPath::parse("$.customers[*].cards[0][\"the pan\"].*").unwrap();
        assert_eq!(
            p.segments,
            vec![
                Segment::Key("customers".into()),
                Segment::AnyIndex,
                Segment::Key("cards".into()),
                Segment::Index(0),
                Segment::Key("the pan".into()),
                Segment::AnyKey,
            ]
        );
        assert_eq!(
            FieldPath::parse("tier.name").map(|p| p.segments.len()),
            Ok(2)
        );
    }

    #[test]
    fn bad_paths_are_refused() {
        for bad in ["$", "", "$..x", "$[x]", "$.a[", "#.a", "$.a b"] {
            assert!(FieldPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn conditions_parse() {
        assert_eq!(
            Condition::parse(r#"tier == "internal""#),
            Ok(Condition::Eq(
                FieldPath {
                    text: "tier".into(),
                    segments: vec![Segment::Key("tier".into())]
                },
                Literal::Str("internal".into())
            ))
        );
        assert!(matches!(
            Condition::parse("$.n != 3"),
            Ok(Condition::Ne(_, Literal::Num(n))) if n == 3.0
        ));
        assert_eq!(
            Condition::parse("detected(private_key)"),
            Ok(Condition::Detected("private_key".into()))
        );
        assert!(Condition::parse("tier = 'x'").is_err());
        assert!(Condition::parse("tier == internal").is_err());
        assert!(Condition::parse("detected(a b)").is_err());
    }

    #[test]
    fn globs() {
        assert!(glob_match("crm__*", "crm__lookup"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("*__lookup_*", "crm__lookup_customer"));
        assert!(!glob_match("crm__*", "tickets__x"));
        assert!(glob_match("crm__lookup", "crm__lookup"));
        assert!(!glob_match("crm__lookup", "crm__lookupx"));
    }

    #[test]
    fn detector_names_round_trip() {
        for d in Detector::ALL {
            assert_eq!(Detector::parse(d.name()), Some(vec![d]));
        }
        assert_eq!(Detector::parse("secrets").map(|v| v.len()), Some(5));
        assert_eq!(
            Detector::parse("gov_id"),
            Some(vec![Detector::UsSsn, Detector::UkNino])
        );
        for g in Detector::GROUPS {
            assert!(Detector::parse(g).is_some_and(|v| v.len() > 1), "{g}");
        }
        // Government ids are named by country: a bare `ssn` is no detector.
        assert_eq!(Detector::parse("ssn"), None);
    }
}
