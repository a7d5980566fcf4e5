//! Checking: from the file format to the checked form, every error with
//! its line. One file per section's checks.

mod admin;
mod assertions;
mod auth;
mod limits;
mod paths;
mod rules;
mod sessions;
mod sinks;
mod stdio;
mod upstreams;

pub use rules::PATTERN_SIZE_LIMIT;
pub use upstreams::{check_upstream, is_upstream_name, CheckedUpstream};

use admin::*;
use auth::*;
pub use limits::check_limit_rules;
use limits::*;
use paths::*;
use rules::*;
use sessions::validate_sessions;
pub use sessions::{
    check_tool_labels, configured_labels, is_identifier, ANNOTATION_LABELS, MAX_DISTINCT,
    MAX_LABELS,
};
use sinks::*;
use upstreams::*;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::toolname::ToolNamer;
use crate::upstream_url::UpstreamUrl;

use super::*;

/// Reads, parses and checks a configuration file.
pub fn load(path: &Path) -> Result<ValidConfig, ConfigErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        origin: origin.clone(),
        errors: vec![ConfigError {
            line: None,
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut v = parse(&text, &origin, &base)?;
    v.path = Some(path.to_path_buf());
    Ok(v)
}

/// Parses and checks configuration text; `base` resolves relative paths.
pub fn parse(text: &str, origin: &str, base: &Path) -> Result<ValidConfig, ConfigErrors> {
    let fail = |errors| ConfigErrors {
        origin: origin.to_owned(),
        errors,
    };
    let config: Config = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        fail(vec![ConfigError {
            line,
            message: first_line(e.message()),
        }])
    })?;
    validate(config, text, base).map_err(fail)
}

pub(crate) fn first_line(m: &str) -> String {
    m.lines().next().unwrap_or(m).trim().to_owned()
}

/// 1-based line of byte offset `at` in `text`.
pub fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// What an agent attaches: tools and prompts by exposed name, resources
/// by exposed URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attachment {
    /// `tools`.
    Tool,
    /// `prompts`.
    Prompt,
    /// `resources`.
    Resource,
}

impl Attachment {
    /// Why `pattern` names no configured upstream, or `None` when it
    /// names one: tools and prompts by their prefix (`namer`), resources
    /// by the upstream of their `toolgate://` URI (`has_upstream`).
    pub fn problem(
        self,
        pattern: &str,
        namer: &ToolNamer,
        has_upstream: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let (what, known, expected) = match self {
            Attachment::Tool => ("tool", namer.route(pattern).is_some(), "{prefix}__{tool}"),
            Attachment::Prompt => (
                "prompt",
                namer.route(pattern).is_some(),
                "{prefix}__{prompt}",
            ),
            Attachment::Resource => (
                "resource",
                crate::resource_uri::split(pattern).is_ok_and(|(u, _)| has_upstream(u)),
                "toolgate://{upstream}/{uri}",
            ),
        };
        (!known).then(|| {
            format!("{what} `{pattern}` names no configured upstream (expected `{expected}`)")
        })
    }
}

pub(crate) fn validate(
    config: Config,
    text: &str,
    base: &Path,
) -> Result<ValidConfig, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let at = |s: &std::ops::Range<usize>| {
        if s.end == 0 {
            None
        } else {
            Some(line_of(text, s.start))
        }
    };
    let mut err = |line: Option<usize>, message: String| errors.push(ConfigError { line, message });

    let listen = match config.server.listen.get_ref().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            err(
                at(&config.server.listen.span()),
                format!(
                    "`{}` is not an address and port such as `127.0.0.1:8080`",
                    config.server.listen.get_ref()
                ),
            );
            None
        }
    };
    if let Some(s) = &config.server.shards {
        if *s.get_ref() == 0 || *s.get_ref() > 1024 {
            err(
                at(&s.span()),
                format!("`shards = {}` must be between 1 and 1024", s.get_ref()),
            );
        }
    }
    if config.server.max_header_bytes < 1024 {
        err(
            None,
            "`server.max_header_bytes` must be at least 1024".to_owned(),
        );
    }
    if config.server.max_headers == 0 {
        err(None, "`server.max_headers` must be at least 1".to_owned());
    }

    let mut resolved = Vec::new();
    let mut namer = ToolNamer::default();
    for u in &config.upstream_entries {
        let name = u.name.get_ref();
        if config
            .upstream_entries
            .iter()
            .filter(|o| o.name.get_ref() == name)
            .count()
            > 1
        {
            err(
                at(&u.name.span()),
                format!("upstream name `{name}` is used more than once"),
            );
        }
        let mut checked = check_upstream_entry(u, base, &mut err, &at);
        checked.identity = assertions::check_identity(u, &config, base, &mut err, &at);
        resolved.push(checked);
        let (prefix, pspan) = match &u.prefix {
            Some(p) => (p.get_ref().clone(), p.span()),
            None => (name.clone(), u.name.span()),
        };
        if let Err(e) = namer.add(&prefix) {
            err(at(&pspan), e);
        }
    }

    for a in &config.agents {
        let id = a.id.get_ref();
        if id.is_empty() {
            err(at(&a.id.span()), "agent id must not be empty".to_owned());
        }
        if let Some(why) = a
            .customer
            .as_deref()
            .and_then(|c| crate::identity::check_customer(c).err())
        {
            err(at(&a.id.span()), format!("agent `{id}`: `customer`: {why}"));
        }
        if config
            .agents
            .iter()
            .filter(|o| o.id.get_ref() == id)
            .count()
            > 1
        {
            err(
                at(&a.id.span()),
                format!("agent id `{id}` is used more than once"),
            );
        }
        if let Some(key) = &a.api_key_sha256 {
            let h = key.get_ref();
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                err(
                    at(&key.span()),
                    format!("agent `{id}`: `api_key_sha256` must be 64 hex digits (`toolgate key new` prints one)"),
                );
            } else if config
                .agents
                .iter()
                .filter_map(|o| o.api_key_sha256.as_ref())
                .filter(|o| o.get_ref().eq_ignore_ascii_case(h))
                .count()
                > 1
            {
                err(
                    at(&key.span()),
                    format!("agent `{id}`: the same API key hash is given to another agent"),
                );
            }
        } else if a.client_cert_names.is_empty()
            && config.auth.jwt.is_none()
            && config.auth.subtokens.is_none()
        {
            err(
                at(&a.id.span()),
                format!("agent `{id}` has no way to prove itself: give it `api_key_sha256`, `client_cert_names` (with `server.tls.client_ca_file`), or configure `[auth.jwt]` or `[auth.subtokens]`"),
            );
        }
        let mtls = config
            .server
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca_file.is_some());
        for n in &a.client_cert_names {
            if !mtls {
                err(
                    at(&n.span()),
                    format!("agent `{id}`: `client_cert_names` needs `server.tls.client_ca_file` (client certificates are not verified otherwise)"),
                );
                break;
            }
            if n.get_ref().is_empty() {
                err(
                    at(&n.span()),
                    format!("agent `{id}`: empty client certificate name"),
                );
            } else if config
                .agents
                .iter()
                .flat_map(|o| &o.client_cert_names)
                .filter(|o| o.get_ref() == n.get_ref())
                .count()
                > 1
            {
                err(
                    at(&n.span()),
                    format!("agent `{id}`: client certificate name `{}` is given to more than one agent", n.get_ref()),
                );
            }
        }
        if let Some(r) = &a.rate_limit {
            if !(r.calls_per_s.is_finite() && r.calls_per_s > 0.0) || r.burst == Some(0) {
                err(
                    at(&a.id.span()),
                    format!("agent `{id}`: `rate_limit` needs `calls_per_s` above 0 and `burst` of at least 1"),
                );
            }
        }
        let has_upstream = |u: &str| {
            config
                .upstream_entries
                .iter()
                .any(|x| x.name.get_ref() == u)
        };
        for (kind, patterns) in [
            (Attachment::Tool, &a.tools),
            (Attachment::Prompt, &a.prompts),
            (Attachment::Resource, &a.resources),
        ] {
            for p in patterns {
                if let Some(why) = kind.problem(p.get_ref(), &namer, has_upstream) {
                    err(at(&p.span()), format!("agent `{id}`: {why}"));
                }
            }
        }
    }

    let mut policy_files = Vec::new();
    for f in &config.policies.files {
        let p = Path::new(f.get_ref());
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        };
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(&p)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|x| x.extension().is_some_and(|e| e == "cedar"))
                .collect();
            found.sort();
            if found.is_empty() {
                err(
                    at(&f.span()),
                    format!("policy directory `{}` has no `.cedar` files", f.get_ref()),
                );
            }
            policy_files.extend(found);
        } else if p.is_file() {
            policy_files.push(p);
        } else {
            err(
                at(&f.span()),
                format!("policy file `{}` does not exist", f.get_ref()),
            );
        }
    }
    let mut judge_ca_file = None;
    let judge_url = match &config.policies.judge {
        Some(j) => match UpstreamUrl::parse(j.url.get_ref()) {
            Ok(u) => {
                judge_ca_file = ca_file(&j.ca_file, u.tls, base, &mut err, &at);
                Some(u)
            }
            Err(e) => {
                err(at(&j.url.span()), format!("judge: {e}"));
                None
            }
        },
        None => None,
    };
    for u in &config.users {
        if u.id.get_ref().is_empty() {
            err(at(&u.id.span()), "user id must not be empty".to_owned());
        }
        if config
            .users
            .iter()
            .filter(|o| o.id.get_ref() == u.id.get_ref())
            .count()
            > 1
        {
            err(
                at(&u.id.span()),
                format!("user id `{}` is used more than once", u.id.get_ref()),
            );
        }
    }
    let jwt = config
        .auth
        .jwt
        .as_ref()
        .and_then(|j| validate_jwt(j, base, &mut err, &at));
    let mut jwks_ca_file = None;
    let jwks_url = match config
        .auth
        .jwt
        .as_ref()
        .and_then(|j| j.jwks_url.as_ref().map(|u| (j, u)))
    {
        Some((j, u)) => match UpstreamUrl::parse(u.get_ref()) {
            Ok(url) if !url.tls && !is_loopback(url.server_name()) => {
                err(
                    at(&u.span()),
                    "`jwks_url` must be https:// (plain http only to a loopback address): keys fetched in the clear could be replaced".to_owned(),
                );
                None
            }
            Ok(url) => {
                jwks_ca_file = ca_file(&j.jwks_ca_file, url.tls, base, &mut err, &at);
                Some(url)
            }
            Err(e) => {
                err(at(&u.span()), format!("`jwks_url`: {e}"));
                None
            }
        },
        None => None,
    };
    let output_rules = validate_output_rules(&config, &namer, &mut |l, m| err(l, m), &at);
    let limits_redis = validate_limits(&config, &namer, base, &mut |l, m| err(l, m), &at);
    validate_sessions(&config, &mut |l, m| err(l, m));

    if config.audit.ring_capacity < 16 {
        err(None, "`audit.ring_capacity` must be at least 16".to_owned());
    }
    if config.audit.segment_bytes < 1024 {
        err(
            None,
            "`audit.segment_bytes` must be at least 1024".to_owned(),
        );
    }
    if config.audit.segment_max_age_s == Some(0) {
        err(
            None,
            "`audit.segment_max_age_s` must be above 0 (leave it out to rotate by size only)"
                .to_owned(),
        );
    }
    if config.audit.retain_days == Some(0) || config.audit.retain_bytes == Some(0) {
        err(
            None,
            "`audit.retain_days` and `audit.retain_bytes` must be above 0 (leave them out to keep everything)".to_owned(),
        );
    }
    if let (Some(e), Some(_)) = (
        &config.audit.checkpoint_key_env,
        &config.audit.checkpoint_key_file,
    ) {
        err(
            at(&e.span()),
            "set at most one of `checkpoint_key_env` and `checkpoint_key_file`".to_owned(),
        );
    }
    let mut sink_targets = Vec::new();
    for (i, s) in config.audit.sinks.iter().enumerate() {
        let name = s.name.get_ref();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
            || name.starts_with('.')
        {
            err(
                at(&s.name.span()),
                format!("sink name `{name}` must be letters, digits, `_`, `-` or `.`, not starting with `.`"),
            );
        }
        if config.audit.sinks[..i]
            .iter()
            .any(|o| o.name.get_ref() == name)
        {
            err(
                at(&s.name.span()),
                format!("sink name `{name}` is used more than once"),
            );
        }
        sink_targets.push(validate_sink(s, base, &mut err, &at));
    }
    match config.log.format.as_str() {
        "pretty" | "json" => {}
        other => err(
            None,
            format!("`log.format = \"{other}\"` must be `pretty` or `json`"),
        ),
    }

    if let Some(t) = &config.server.tls {
        check_tls(t, base, &mut err, &at);
    }
    let metrics_listen = match &config.metrics.listen {
        Some(l) => match l.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                err(
                    at(&l.span()),
                    format!(
                        "`{}` is not an address and port such as `127.0.0.1:9464`",
                        l.get_ref()
                    ),
                );
                None
            }
        },
        None => None,
    };
    let assertion_keys = assertions::check_assertions(&config, base, &mut err, &at);
    let connected_accounts = assertions::check_connected_accounts(&config, base, &mut err, &at);
    let admin_listen = validate_admin(&config.admin, base, &mut err, &at);
    let admin_postgres_password = validate_admin_backend(&config.admin, base, &mut err, &at);
    errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    match listen {
        Some(listen) if errors.is_empty() => {
            let audit_dir = if config.audit.dir.is_absolute() {
                config.audit.dir.clone()
            } else {
                base.join(&config.audit.dir)
            };
            let checkpoint_key_file = config.audit.checkpoint_key_file.as_ref().map(|f| {
                let f = f.get_ref();
                if f.is_absolute() {
                    f.clone()
                } else {
                    base.join(f)
                }
            });
            let config_admin_state_file = config.admin.state_file.get_ref().clone();
            let jwks_file = config
                .auth
                .jwt
                .as_ref()
                .and_then(|j| j.jwks_file.as_ref())
                .map(|f| base.join(f.get_ref()));
            let subtoken_dir = config.auth.subtokens.as_ref().map(|s| base.join(&s.dir));
            let pins_file = config.tool_pins.as_ref().map(|p| base.join(&p.file));
            let tls = config.server.tls.as_ref().map(|t| tls_files(t, base));
            let admin_tls = config.admin.tls.as_ref().map(|t| tls_files(t, base));
            let mut config = config;
            let upstreams = std::mem::take(&mut config.upstream_entries)
                .into_iter()
                .zip(resolved)
                .filter_map(|(entry, c)| c.resolve(entry))
                .collect();
            Ok(ValidConfig {
                config,
                listen,
                upstreams,
                audit_dir,
                checkpoint_key_file,
                sink_targets,
                namer,
                policy_files,
                judge_url,
                path: None,
                output_rules,
                metrics_listen,
                jwt,
                jwks_file,
                jwks_url,
                jwks_ca_file,
                tls,
                judge_ca_file,
                subtoken_dir,
                base: base.to_path_buf(),
                pins_file,
                admin_listen,
                admin_tls,
                admin_state_file: resolve(base, config_admin_state_file),
                admin_postgres_password,
                limits_redis,
                assertion_keys,
                connected_accounts,
            })
        }
        _ => Err(errors),
    }
}
