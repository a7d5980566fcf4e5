//! `[identity_assertions]` and each upstream's `[upstreams.identity]`.

use std::path::Path;

use crate::secret::SecretSource;

use super::super::*;
use super::is_loopback;
use super::upstreams::{check_token_endpoint, RESERVED_HEADERS};
use crate::upstream_url::UpstreamUrl;

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

/// Checks `[connected_accounts]` (exactly one key source, a public URL,
/// a link lifetime in range) and resolves it; `None` when absent or wrong.
pub(crate) fn check_connected_accounts(
    config: &Config,
    base: &Path,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) -> Option<ConnectedAccounts> {
    let c = config.connected_accounts.as_ref()?;
    let here = at(&c.public_url.span());
    let key = match (&c.key_file, &c.key_env) {
        (Some(f), None) => SecretSource::File(base.join(f.get_ref())),
        (None, Some(e)) => SecretSource::Env(e.get_ref().clone()),
        _ => {
            err(
                here,
                "[connected_accounts]: give exactly one of `key_file` and `key_env`".into(),
            );
            return None;
        }
    };
    if !(60..=3600).contains(&c.link_lifetime_s) {
        err(
            here,
            "[connected_accounts]: `link_lifetime_s` must be 60 to 3600".into(),
        );
    }
    let public_url = c.public_url.get_ref().trim_end_matches('/');
    match UpstreamUrl::parse(public_url) {
        Ok(u) if !u.tls && !is_loopback(u.server_name()) => err(
            here,
            "[connected_accounts]: `public_url` must be https:// (plain http only on loopback): users' consent comes back to it".into(),
        ),
        Ok(_) => {}
        Err(e) => err(here, format!("[connected_accounts]: `public_url`: {e}")),
    }
    if public_url.contains(['?', '#']) {
        err(
            here,
            "[connected_accounts]: `public_url` must not have a query or fragment".into(),
        );
    }
    let user_header = c.user_header.as_deref().map(str::trim);
    if let Some(h) = user_header {
        let token = !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            err(
                here,
                format!("[connected_accounts]: `user_header` `{h}` is not a header name"),
            );
        }
    }
    Some(ConnectedAccounts {
        key,
        public_url: public_url.to_owned(),
        link_lifetime_s: c.link_lifetime_s,
        user_header: user_header.map(str::to_ascii_lowercase),
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
    let whose = format!("upstream `{name}`");
    let here = at(&u.name.span());
    let mode = id.mode;
    let signs = mode == IdentityMode::Assertion || id.actor;
    if signs && config.identity_assertions.is_none() {
        let what = if mode == IdentityMode::Assertion {
            "`[upstreams.identity]` needs `[identity_assertions]`, the key toolgate signs them with"
        } else {
            "`actor = true` needs `[identity_assertions]`, the key toolgate signs the actor token with"
        };
        err(here, format!("{whose}: {what}"));
    }
    if u.kind == UpstreamKind::Stdio {
        err(
            here,
            format!("{whose}: `[upstreams.identity]` is for upstreams reached over HTTP (a stdio process has no per-call headers; use `instances = \"per_user\"`)"),
        );
    }
    let default_header = match mode {
        IdentityMode::Assertion => "Toolgate-User-Assertion",
        IdentityMode::TokenExchange | IdentityMode::ConnectedAccount => "Authorization",
    };
    let header = id.header.as_deref().unwrap_or(default_header).trim();
    let token = !header.is_empty()
        && header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token || RESERVED_HEADERS.contains(&header.to_ascii_lowercase().as_str()) {
        err(
            here,
            format!("{whose}: identity header `{header}` is not a header toolgate may set"),
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
    let not_for = |key: &str, for_mode: &str, err: &mut dyn FnMut(Option<usize>, String)| {
        err(
            here,
            format!("{whose}: `{key}` is for `mode = \"{for_mode}\"`"),
        );
    };
    if mode != IdentityMode::TokenExchange {
        if id.exchange.is_some() {
            not_for("exchange", "token_exchange", err);
        }
        if id.actor {
            not_for("actor", "token_exchange", err);
        }
        if id.fallback != crate::config::ExchangeFallback::Refuse {
            not_for("fallback", "token_exchange", err);
        }
    }
    if mode != IdentityMode::ConnectedAccount && id.connect.is_some() {
        not_for("connect", "connected_account", err);
    }
    let mut target = IdentityTarget {
        mode,
        header: header.to_owned(),
        audience: id.audience.clone().unwrap_or_else(|| upstream_url.clone()),
        exchange: None,
        connect: None,
    };
    match mode {
        IdentityMode::Assertion => {}
        IdentityMode::TokenExchange => {
            let Some(o) = &id.exchange else {
                err(
                    here,
                    format!("{whose}: `mode = \"token_exchange\"` needs `[upstreams.identity.exchange]`: the IdP's `token_url`, toolgate's `client_id` and its secret"),
                );
                return Some(target);
            };
            target.audience = o.resource.clone().unwrap_or(upstream_url);
            target.exchange = check_token_endpoint(o, &whose, "identity.exchange", base, err, at)
                .map(|(token_url, ca_file)| ExchangeTarget {
                    token_url,
                    ca_file,
                    client_id: o.client_id.clone(),
                    client_secret: secret_source(&o.client_secret_env, &o.client_secret_file, base),
                    audience: id.audience.clone(),
                    scope: o.scope.clone(),
                    actor: id.actor,
                    fallback: id.fallback,
                });
        }
        IdentityMode::ConnectedAccount => {
            if config.connected_accounts.is_none() {
                err(
                    here,
                    format!("{whose}: `mode = \"connected_account\"` needs `[connected_accounts]`: the key users' grants are sealed with and the URL their browsers reach toolgate at"),
                );
            }
            let Some(c) = &id.connect else {
                err(
                    here,
                    format!("{whose}: `mode = \"connected_account\"` needs `[upstreams.identity.connect]`: the provider's `authorize_url` and `token_url`, toolgate's `client_id` and its secret"),
                );
                return Some(target);
            };
            let authorize_ok = match UpstreamUrl::parse(c.authorize_url.get_ref()) {
                Ok(url) if !url.tls && !is_loopback(url.server_name()) => {
                    err(
                        at(&c.authorize_url.span()),
                        format!("{whose}: `authorize_url` must be https:// (plain http only to a loopback address)"),
                    );
                    false
                }
                Ok(_) => true,
                Err(e) => {
                    err(
                        at(&c.authorize_url.span()),
                        format!("{whose}: `authorize_url`: {e}"),
                    );
                    false
                }
            };
            let endpoint = c.token_endpoint();
            target.connect =
                check_token_endpoint(&endpoint, &whose, "identity.connect", base, err, at)
                    .filter(|_| authorize_ok)
                    .map(|(token_url, ca_file)| ConnectTarget {
                        authorize_url: c.authorize_url.get_ref().clone(),
                        token_url,
                        ca_file,
                        client_id: c.client_id.clone(),
                        client_secret: secret_source(
                            &c.client_secret_env,
                            &c.client_secret_file,
                            base,
                        ),
                        scope: c.scope.clone(),
                        resource: c.resource.clone(),
                    });
        }
    }
    Some(target)
}

/// Where a client secret is read: the variable, else the file (the
/// endpoint check refuses neither or both).
fn secret_source(
    env: &Option<toml::Spanned<String>>,
    file: &Option<toml::Spanned<String>>,
    base: &Path,
) -> SecretSource {
    match (env, file) {
        (Some(v), _) => SecretSource::Env(v.get_ref().clone()),
        (None, Some(f)) => SecretSource::File(base.join(f.get_ref())),
        (None, None) => SecretSource::Env(String::new()),
    }
}
