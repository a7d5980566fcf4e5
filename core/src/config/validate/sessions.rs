//! `[sessions]` and `[tool_labels]`: bounds, and label names a Cedar
//! policy can read as attributes.

use super::super::*;

/// Most distinct labels a configuration may use, the annotation labels
/// included: a session keeps one bit and one counter per label.
pub const MAX_LABELS: usize = 32;

/// Most arguments whose distinct values a session counts.
pub const MAX_DISTINCT: usize = 4;

/// The labels derived from MCP tool annotations, when
/// `sessions.annotation_labels` is on.
pub const ANNOTATION_LABELS: [&str; 3] = ["read_only", "destructive", "open_world"];

/// Whether `name` can be a label or a counted argument: an identifier
/// (`[A-Za-z_][A-Za-z0-9_]*`, at most 64 bytes), so policies read it as
/// `context.session.label_calls.money`.
pub fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 64
}

/// Checks `[sessions]` and `[tool_labels]`.
pub(crate) fn validate_sessions(config: &Config, err: &mut dyn FnMut(Option<usize>, String)) {
    let s = &config.sessions;
    if s.idle_timeout_s == 0 || s.idle_timeout_s > 7 * 86_400 {
        err(
            None,
            "`sessions.idle_timeout_s` must be between 1 and 604800 (a week)".to_owned(),
        );
    }
    if s.max_sessions == 0 || s.max_sessions > 1 << 20 {
        err(
            None,
            "`sessions.max_sessions` must be between 1 and 1048576".to_owned(),
        );
    }
    if s.backend == LimitsBackend::Redis && config.limits.backend != LimitsBackend::Redis {
        err(
            None,
            "`sessions.backend = \"redis\"` keeps sessions where the quota counters live: \
             it needs `limits.backend = \"redis\"` and `[limits.redis]`"
                .to_owned(),
        );
    }
    if s.distinct.len() > MAX_DISTINCT {
        err(
            None,
            format!("`sessions.distinct` names at most {MAX_DISTINCT} arguments"),
        );
    }
    for d in &s.distinct {
        if !is_identifier(d) {
            err(
                None,
                format!(
                    "`sessions.distinct`: `{d}` is not an argument name (letters, digits, `_`)"
                ),
            );
        }
    }
    let mut labels: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    if s.annotation_labels {
        labels.extend(ANNOTATION_LABELS);
    }
    for (tools, names) in &config.tool_labels {
        if tools.is_empty() {
            err(None, "`[tool_labels]`: an empty tool name".to_owned());
        }
        for n in names {
            if !is_identifier(n) {
                err(
                    None,
                    format!(
                        "`[tool_labels]` `{tools}`: label `{n}` must be letters, digits and `_`, \
                         starting with a letter or `_`"
                    ),
                );
            }
            labels.insert(n);
        }
    }
    if labels.len() > MAX_LABELS {
        err(
            None,
            format!(
                "`[tool_labels]` uses {} labels (with the annotation labels); at most {MAX_LABELS}",
                labels.len()
            ),
        );
    }
}

/// What is wrong with the labels of `config` (an admin API write checks
/// the configuration it would make): empty when nothing is.
pub fn check_tool_labels(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    validate_sessions(config, &mut |_, m| problems.push(m));
    problems
}

/// Every label the configuration can give a tool, sorted.
pub fn configured_labels(config: &Config) -> Vec<String> {
    let mut labels: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    if config.sessions.annotation_labels {
        labels.extend(ANNOTATION_LABELS.iter().map(|l| (*l).to_owned()));
    }
    for names in config.tool_labels.values() {
        labels.extend(names.iter().cloned());
    }
    labels.into_iter().collect()
}
