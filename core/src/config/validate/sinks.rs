//! `[[audit.sinks]]` and their SOAR rules.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::super::*;
use super::*;

/// Checks one `[[audit.sinks]]` entry beyond its name; returns its resolved
/// endpoint and files.
pub(crate) fn validate_sink(
    s: &SinkConfig,
    base: &Path,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) -> SinkTarget {
    let name = s.name.get_ref();
    let line = at(&s.name.span());
    let resolve = |p: &Spanned<PathBuf>| {
        let p = p.get_ref();
        if p.is_absolute() {
            p.clone()
        } else {
            base.join(p)
        }
    };
    let mut t = SinkTarget {
        ca_file: s.ca_file.as_ref().map(resolve),
        cert_file: s.cert_file.as_ref().map(resolve),
        key_file: s.key_file.as_ref().map(resolve),
        ..SinkTarget::default()
    };
    if s.cert_file.is_some() != s.key_file.is_some() {
        err(
            line,
            format!("sink `{name}`: set both `cert_file` and `key_file`, or neither"),
        );
    }
    let mut host = None;
    if s.kind.is_http() {
        for (key, set) in [
            ("transport", s.transport.is_some()),
            ("address", s.address.is_some()),
        ] {
            if set {
                err(
                    line,
                    format!("sink `{name}`: `{key}` is for syslog sinks; HTTP sinks take `url`"),
                );
            }
        }
        match &s.url {
            None => err(line, format!("sink `{name}`: `url` is required")),
            Some(u) => match SinkUrl::parse(u.get_ref()) {
                Ok(url) => {
                    host = Some(url.bare_host());
                    t.url = Some(url);
                }
                Err(e) => err(at(&u.span()), format!("sink `{name}`: {e}")),
            },
        }
        if s.batch_records == 0 || s.batch_bytes < 1024 {
            err(
                line,
                format!("sink `{name}`: `batch_records` must be at least 1 and `batch_bytes` at least 1024"),
            );
        }
        if let Some(tok) = &s.token {
            let sources = tok.env.is_some() as usize
                + tok.file.is_some() as usize
                + tok.command.is_some() as usize;
            if sources != 1 {
                err(
                    line,
                    format!(
                        "sink `{name}`: `token` needs exactly one of `env`, `file` and `command`"
                    ),
                );
            }
            let header = tok.header.as_deref().unwrap_or("Authorization");
            if header.is_empty()
                || !header
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
                || RESERVED_HEADERS.contains(&header.to_ascii_lowercase().as_str())
            {
                err(
                    line,
                    format!("sink `{name}`: token header `{header}` is not a header name toolgate may send"),
                );
            }
            if tok
                .value_prefix
                .as_deref()
                .is_some_and(|p| p.bytes().any(|b| b.is_ascii_control()))
            {
                err(
                    line,
                    format!("sink `{name}`: token `value_prefix` must not hold control characters"),
                );
            }
            t.token = match (&tok.env, &tok.file, &tok.command) {
                (Some(v), _, _) => Some(crate::secret::SecretSource::Env(v.get_ref().clone())),
                (None, Some(f), _) => {
                    Some(crate::secret::SecretSource::File(base.join(f.get_ref())))
                }
                (None, None, Some(c)) => {
                    Some(crate::secret::SecretSource::Command(c.get_ref().clone()))
                }
                (None, None, None) => None,
            };
        } else if s.kind == SinkKind::SplunkHec {
            err(
                line,
                format!("sink `{name}`: `splunk_hec` needs a `token` (`[audit.sinks.token]` with `env`, `file` or `command`)"),
            );
        }
        for (h, v) in &s.headers {
            let bad_name = h.is_empty()
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
                || RESERVED_HEADERS.contains(&h.to_ascii_lowercase().as_str())
                || h.eq_ignore_ascii_case("content-encoding");
            if bad_name || v.bytes().any(|b| b.is_ascii_control()) {
                err(
                    line,
                    format!("sink `{name}`: header `{h}` is not a header toolgate may send with that value"),
                );
            }
        }
    } else {
        if s.url.is_some() || s.token.is_some() || !s.headers.is_empty() || s.gzip {
            err(
                line,
                format!("sink `{name}`: `url`, `token`, `headers` and `gzip` are for HTTP sinks; syslog sinks take `transport` and `address`"),
            );
        }
        let transport = s.transport.as_ref().map(|t| *t.get_ref());
        if transport.is_none() {
            err(
                line,
                format!("sink `{name}`: `transport` is required (`udp`, `tcp` or `tls`)"),
            );
        }
        match &s.address {
            None => err(line, format!("sink `{name}`: `address` is required")),
            Some(a) => match a.get_ref().parse::<SocketAddr>() {
                Ok(addr) => {
                    host = Some(addr.ip().to_string());
                    t.address = Some(addr);
                }
                Err(_) => err(
                    at(&a.span()),
                    format!(
                        "sink `{name}`: `{}` is not an address and port such as `127.0.0.1:5514`",
                        a.get_ref()
                    ),
                ),
            },
        }
        if transport != Some(SinkTransport::Tls)
            && (s.ca_file.is_some() || s.cert_file.is_some() || s.server_name.is_some())
        {
            err(
                line,
                format!("sink `{name}`: `ca_file`, `server_name`, `cert_file` and `key_file` need `transport = \"tls\"`"),
            );
        }
        if s.facility > 23 {
            err(
                line,
                format!("sink `{name}`: `facility = {}` must be 0 to 23", s.facility),
            );
        }
        if s.batch_records == 0 || s.max_message_bytes < 480 {
            err(
                line,
                format!("sink `{name}`: `batch_records` must be at least 1 and `max_message_bytes` at least 480"),
            );
        }
    }
    validate_soar_rules(s, err, at);
    t.server_name = match &s.server_name {
        Some(n) => n.get_ref().clone(),
        None => host.unwrap_or_default(),
    };
    t
}

/// Checks a sink's `[[audit.sinks.rules]]`: only `soar` sinks have them,
/// and those need at least one, each complete for its kind.
pub(crate) fn validate_soar_rules(
    s: &SinkConfig,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) {
    let name = s.name.get_ref();
    let line = at(&s.name.span());
    if s.kind != SinkKind::Soar {
        if !s.rules.is_empty() {
            err(line, format!("sink `{name}`: `rules` are for `soar` sinks"));
        }
        return;
    }
    if s.rules.is_empty() {
        err(
            line,
            format!("sink `{name}`: a `soar` sink needs at least one `[[audit.sinks.rules]]`"),
        );
    }
    if s.max_keys == 0 {
        err(
            line,
            format!("sink `{name}`: `max_keys` must be at least 1"),
        );
    }
    if s.format != SinkFormat::Ocsf || s.gzip {
        err(
            line,
            format!(
                "sink `{name}`: `format` and `gzip` do not apply to `soar` sinks (alerts are JSON)"
            ),
        );
    }
    for (i, r) in s.rules.iter().enumerate() {
        let rule = r.name.get_ref();
        let rline = at(&r.name.span());
        if rule.is_empty() || rule.len() > 128 || rule.chars().any(char::is_control) {
            err(
                rline,
                format!("sink `{name}`: rule name `{rule}` must be 1 to 128 printable characters"),
            );
        }
        if s.rules[..i].iter().any(|o| o.name.get_ref() == rule) {
            err(
                rline,
                format!("sink `{name}`: rule name `{rule}` is used more than once"),
            );
        }
        let rate = matches!(r.kind, SoarRuleKind::DenyRate | SoarRuleKind::CallRate);
        if rate {
            if r.threshold.is_none_or(|t| t == 0) || r.window_s.is_none_or(|w| w == 0) {
                err(
                    rline,
                    format!("sink `{name}`: rule `{rule}` needs `threshold` and `window_s`, both at least 1"),
                );
            }
            if r.threshold.is_some_and(|t| t > 10_000) {
                err(
                    rline,
                    format!("sink `{name}`: rule `{rule}`: `threshold` must be at most 10000"),
                );
            }
        } else if r.threshold.is_some() || r.window_s.is_some() {
            err(
                rline,
                format!("sink `{name}`: rule `{rule}`: `threshold` and `window_s` are for `deny_rate` and `call_rate` rules"),
            );
        }
        if !r.judge_outcomes.is_empty() && r.kind != SoarRuleKind::Judge {
            err(
                rline,
                format!("sink `{name}`: rule `{rule}`: `judge_outcomes` is for `judge` rules"),
            );
        }
        for o in &r.judge_outcomes {
            if !["allow", "deny", "timeout", "unavailable", "invalid"].contains(&o.as_str()) {
                err(
                    rline,
                    format!("sink `{name}`: rule `{rule}`: judge outcome `{o}` is not one of allow, deny, timeout, unavailable, invalid"),
                );
            }
        }
    }
}
