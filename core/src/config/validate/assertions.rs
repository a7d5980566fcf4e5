//! `[identity_assertions]` and each upstream's `[upstreams.identity]`.

use std::path::Path;

use crate::secret::SecretSource;

use super::super::*;
use super::upstreams::{check_token_endpoint, RESERVED_HEADERS};

/// Checks `[identity_assertions]` (exactly one key source, a lifetime in
/// range) and resolves it; `None` when absent or wrong.
pub(crate) fn check_assertions(
    config: &Config,
    base: &Path,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) -> Option<AssertionKeys> {
    let a = config.identity_assertions.as_ref()?;
    let current = match (&a.key_file, &a.key_env) {
        (Some(f), None) => SecretSource::File(base.join(f.get_ref())),
        (None, Some(e)) => SecretSource::Env(e.get_ref().clone()),
        (f, e) => {
            let span = f.as_ref().or(e.as_ref()).map(|s| s.span());
            err(
                span.and_then(|s| at(&s)),
                "[identity_assertions]: give exactly one of `key_file` and `key_env`".into(),
            );
            return None;
        }
    };
    if !(1..=3600).contains(&a.lifetime_s) {
        err(
            None,
            "[identity_assertions]: `lifetime_s` must be 1 to 3600".into(),
        );
    }
    if a.issuer.is_empty() {
        err(
            None,
            "[identity_assertions]: `issuer` must not be empty".into(),
        );
    }
    Some(AssertionKeys {
        current,
        previous: a
            .previous_key_files
            .iter()
            .map(|f| base.join(f.get_ref()))
            .collect(),
        issuer: a.issuer.clone(),
        lifetime_s: a.lifetime_s,
    })
}

/// Checks one upstream's `[upstreams.identity]` and resolves how its end
/// users reach it; `None` when it has none.
pub(crate) fn check_identity(
    u: &UpstreamConfig,
    config: &Config,
    base: &Path,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) -> Option<IdentityTarget> {
    let id = u.identity.as_ref()?;
    let name = u.name.get_ref();
    let here = at(&u.name.span());
    let exchanging = id.mode == IdentityMode::TokenExchange;
    let signs = !exchanging || id.actor;
    if signs && config.identity_assertions.is_none() {
        let what = if exchanging {
            "`actor = true` needs `[identity_assertions]`, the key toolgate signs the actor token with"
        } else {
            "`[upstreams.identity]` needs `[identity_assertions]`, the key toolgate signs them with"
        };
        err(here, format!("upstream `{name}`: {what}"));
    }
    if u.kind == UpstreamKind::Stdio {
        err(
            here,
            format!("upstream `{name}`: `[upstreams.identity]` is for upstreams reached over HTTP (a stdio process has no per-call headers; use `instances = \"per_user\"`)"),
        );
    }
    let default_header = if exchanging {
        "Authorization"
    } else {
        "Toolgate-User-Assertion"
    };
    let header = id.header.as_deref().unwrap_or(default_header).trim();
    let token = !header.is_empty()
        && header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token || RESERVED_HEADERS.contains(&header.to_ascii_lowercase().as_str()) {
        err(
            here,
            format!(
                "upstream `{name}`: identity header `{header}` is not a header toolgate may set"
            ),
        );
    }
    let upstream_url = match u.kind {
        UpstreamKind::Openapi => u
            .base_url
            .as_ref()
            .or(u.spec.as_ref())
            .map(|s| s.get_ref().clone())
            .unwrap_or_default(),
        _ => u.url.get_ref().clone(),
    };
    let exchange = match (&id.exchange, exchanging) {
        (Some(o), true) => {
            let whose = format!("upstream `{name}`");
            check_token_endpoint(o, &whose, "identity.exchange", base, err, at).map(
                |(token_url, ca_file)| ExchangeTarget {
                    token_url,
                    ca_file,
                    client_id: o.client_id.clone(),
                    client_secret: match (&o.client_secret_env, &o.client_secret_file) {
                        (Some(v), _) => SecretSource::Env(v.get_ref().clone()),
                        (None, Some(f)) => SecretSource::File(base.join(f.get_ref())),
                        (None, None) => SecretSource::Env(String::new()),
                    },
                    audience: id.audience.clone(),
                    scope: o.scope.clone(),
                    actor: id.actor,
                    fallback: id.fallback,
                },
            )
        }
        (None, true) => {
            err(
                here,
                format!("upstream `{name}`: `mode = \"token_exchange\"` needs `[upstreams.identity.exchange]`: the IdP's `token_url`, toolgate's `client_id` and its secret"),
            );
            None
        }
        (_, false) => {
            if id.exchange.is_some()
                || id.actor
                || id.fallback != crate::config::ExchangeFallback::Refuse
            {
                err(
                    here,
                    format!("upstream `{name}`: `exchange`, `actor` and `fallback` are for `mode = \"token_exchange\"`"),
                );
            }
            None
        }
    };
    let audience = if exchanging {
        id.exchange
            .as_ref()
            .and_then(|o| o.resource.clone())
            .unwrap_or(upstream_url)
    } else {
        id.audience.clone().unwrap_or(upstream_url)
    };
    Some(IdentityTarget {
        mode: id.mode,
        header: header.to_owned(),
        audience,
        exchange,
    })
}
