//! What a call's audit record keeps of its arguments (`[audit] arguments`).
//!
//! Never the raw arguments: they may carry secrets and personal data that
//! the log and every SIEM it feeds would then hold. `digest` keeps SHA-256
//! of the argument bytes exactly as forwarded, so an operator holding a
//! copy of a call (the upstream's request log, say) can prove it is the one
//! recorded; `redacted` (the default) keeps the arguments with every
//! built-in detector's matches masked, whatever the output rules say, and
//! the value of every field named like a secret ([`SECRET_FIELDS`], at the
//! top and two levels down) masked whole, cut to 4 KiB; `omit` keeps
//! nothing.

use std::cell::RefCell;

use toolgate_core::audit::AuditArgs;
use toolgate_core::config::AuditArguments;
use toolgate_core::jsonrpc::JsonParser;
use toolgate_core::output::{Detector, MaskStyle, OutputRule};
use toolgate_decision::OutputFilter;

/// Kept instead of arguments that could not be read back (never expected:
/// they are toolgate's own encoding).
const UNREADABLE: &str = "[REDACTED:unreadable]";

/// Argument names whose values `redacted` masks whole, whatever they hold:
/// secrets no detector recognises by their form.
pub const SECRET_FIELDS: [&str; 16] = [
    "password",
    "passwd",
    "passphrase",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "apikey",
    "authorization",
    "private_key",
    "credential",
    "credentials",
    "pin",
];

/// The field paths of [`SECRET_FIELDS`]: at the top, and under any one or
/// two keys.
fn secret_paths() -> Vec<toolgate_core::output::FieldPath> {
    SECRET_FIELDS
        .iter()
        .flat_map(|f| [format!("$.{f}"), format!("$.*.{f}"), format!("$.*.*.{f}")])
        .filter_map(|p| toolgate_core::output::FieldPath::parse(&p).ok())
        .collect()
}

/// One shard's `[audit] arguments` setting, compiled.
pub(super) enum ArgsAudit {
    /// Nothing is kept.
    Omit,
    /// SHA-256 of the bytes.
    Digest,
    /// A masked copy: every detector, label style.
    Redacted(Box<Redactor>),
}

/// The masking of `redacted`, with parsers of its own (the driver's are
/// busy with the request while the record is built).
pub(super) struct Redactor {
    masker: OutputFilter,
    parser: RefCell<JsonParser>,
    inner: RefCell<JsonParser>,
}

impl ArgsAudit {
    /// The shard's setting for `mode`.
    pub(super) fn new(mode: AuditArguments) -> Self {
        match mode {
            AuditArguments::Omit => ArgsAudit::Omit,
            AuditArguments::Digest => ArgsAudit::Digest,
            AuditArguments::Redacted => {
                let every_detector = OutputRule {
                    name: "audit".to_owned(),
                    tools: Vec::new(),
                    agents: Vec::new(),
                    drop_fields: Vec::new(),
                    mask_fields: secret_paths(),
                    detectors: Detector::ALL.to_vec(),
                    patterns: Vec::new(),
                    style: MaskStyle::Label,
                    drop_where: Vec::new(),
                    refuse_when: Vec::new(),
                    results: false,
                    arguments: true,
                    descriptions: false,
                };
                ArgsAudit::Redacted(Box::new(Redactor {
                    masker: OutputFilter::compile(&[&every_detector], usize::MAX),
                    parser: RefCell::new(JsonParser::new()),
                    inner: RefCell::new(JsonParser::new()),
                }))
            }
        }
    }

    /// Whether records keep anything of the arguments.
    pub(super) fn is_on(&self) -> bool {
        !matches!(self, ArgsAudit::Omit)
    }

    /// What the record keeps of `args`, the arguments JSON as forwarded.
    pub(super) fn record(&self, args: &[u8]) -> Option<AuditArgs> {
        match self {
            ArgsAudit::Omit => None,
            ArgsAudit::Digest => Some(AuditArgs::digest(args)),
            ArgsAudit::Redacted(r) => Some(AuditArgs::redacted(&r.mask(args))),
        }
    }
}

impl Redactor {
    /// `args` with every detector match masked; as is when nothing can match.
    fn mask(&self, args: &[u8]) -> String {
        if !self.masker.needs_walk(args) {
            return std::str::from_utf8(args).unwrap_or(UNREADABLE).to_owned();
        }
        let mut parser = self.parser.borrow_mut();
        let Ok(tape) = parser.parse(args) else {
            return UNREADABLE.to_owned();
        };
        let mut inner = self.inner.borrow_mut();
        let mut walker = self.masker.walker(&mut inner);
        let mut out = Vec::with_capacity(args.len());
        walker.write_arguments(tape.as_value(), &mut out);
        drop(walker.finish());
        String::from_utf8(out).unwrap_or_else(|_| UNREADABLE.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redacted(args: &str) -> (String, bool) {
        match ArgsAudit::new(AuditArguments::Redacted).record(args.as_bytes()) {
            Some(AuditArgs::Redacted { text, truncated }) => (text, truncated),
            other => unreachable!("{other:?}"),
        }
    }

    #[test]
    fn digest_is_of_the_exact_bytes_and_omit_keeps_nothing() {
        let a = ArgsAudit::new(AuditArguments::Digest);
        assert_eq!(
            a.record(br#"{"q":1}"#),
            Some(AuditArgs::digest(br#"{"q":1}"#))
        );
        assert_ne!(a.record(br#"{"q":1}"#), a.record(br#"{"q": 1}"#));
        let o = ArgsAudit::new(AuditArguments::Omit);
        assert!(!o.is_on());
        assert_eq!(o.record(br#"{"q":1}"#), None);
    }

    #[test]
    fn redacted_masks_every_detector_anywhere_in_the_arguments() {
        let (text, truncated) = redacted(
            r#"{"card":"4111 1111 1111 1111","nested":{"to":["ada@example.com"],"key":"AKIAIOSFODNN7EXAMPLE"},"n":4111111111111111,"note":"hi"}"#,
        );
        assert!(!truncated);
        for secret in [
            "4111 1111 1111 1111",
            "ada@example.com",
            "AKIAIOSFODNN7EXAMPLE",
            "4111111111111111",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("[REDACTED:card]") && text.contains("[REDACTED:aws_key]"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(v["note"], "hi", "the rest is kept: {text}");
    }

    #[test]
    fn redacted_masks_fields_named_like_secrets_whatever_they_hold() {
        let (text, _) = redacted(
            r#"{"user":"ada","password":"hunter2","auth":{"token":"t0p-s3cret","scope":"read"},"a":{"b":{"api_key":"k-9"}}}"#,
        );
        for secret in ["hunter2", "t0p-s3cret", "k-9"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(v["user"], "ada");
        assert_eq!(v["auth"]["scope"], "read");
    }

    #[test]
    fn redacted_without_matches_is_the_arguments_as_is_and_long_ones_are_cut() {
        assert_eq!(
            redacted(r#"{"customer_id":"C-1"}"#),
            (r#"{"customer_id":"C-1"}"#.to_owned(), false)
        );
        let long = format!(
            r#"{{"card":"4111 1111 1111 1111","blob":"{}"}}"#,
            "x".repeat(5000)
        );
        let (text, truncated) = redacted(&long);
        assert!(truncated);
        assert_eq!(text.len(), toolgate_core::audit::MAX_REDACTED_ARGS);
        assert!(text.starts_with(r#"{"card":"[REDACTED:card]","blob":"xx"#));
    }
}
