//! `[admin]`.

use std::net::SocketAddr;
use std::path::Path;

use super::super::*;
use super::*;

/// Checks `[admin]`: a loopback listener unless `[admin.tls]` is set (an
/// admin token must never cross a network in clear), and well-formed,
/// distinct credentials whenever it is on.
pub(crate) fn validate_admin(
    admin: &AdminConfig,
    base: &Path,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) -> Option<SocketAddr> {
    if let Some(t) = &admin.tls {
        check_tls(t, base, err, at);
    }
    let Some(listen) = admin.listen.as_ref() else {
        if admin.tls.is_some() {
            err(
                None,
                "`[admin.tls]` is set but `admin.listen` is not: the admin API is off".to_owned(),
            );
        }
        return None;
    };
    let addr = match listen.get_ref().parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            err(
                at(&listen.span()),
                format!(
                    "`{}` is not an address and port such as `127.0.0.1:9091`",
                    listen.get_ref()
                ),
            );
            return None;
        }
    };
    if !addr.ip().is_loopback() && admin.tls.is_none() {
        err(
            at(&listen.span()),
            format!(
                "`admin.listen = \"{}\"` is not a loopback address: that needs `[admin.tls]` (`cert_file`, `key_file`), so admin tokens never cross the network in clear; or listen on `127.0.0.1`",
                listen.get_ref()
            ),
        );
    }
    if admin.tokens.is_empty() {
        err(
            at(&listen.span()),
            "`admin.listen` is set but no `[[admin.tokens]]` is configured: the admin API needs a credential".to_owned(),
        );
    }
    if admin.max_body_bytes < 1024 {
        err(
            None,
            "`admin.max_body_bytes` must be at least 1024".to_owned(),
        );
    }
    for (i, t) in admin.tokens.iter().enumerate() {
        let name = t.name.get_ref();
        if name.is_empty() {
            err(
                at(&t.name.span()),
                "admin token name must not be empty".to_owned(),
            );
        }
        if admin.tokens[..i].iter().any(|o| o.name.get_ref() == name) {
            err(
                at(&t.name.span()),
                format!("admin token name `{name}` is used more than once"),
            );
        }
        let h = t.token_sha256.get_ref();
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            err(
                at(&t.token_sha256.span()),
                format!("admin token `{name}`: `token_sha256` must be 64 hex digits (`toolgate key new` prints one)"),
            );
        } else if admin.tokens[..i]
            .iter()
            .any(|o| o.token_sha256.get_ref().eq_ignore_ascii_case(h))
        {
            err(
                at(&t.token_sha256.span()),
                format!(
                    "admin token `{name}`: the same token hash is given to another admin token"
                ),
            );
        }
    }
    Some(addr)
}

/// Checks the control-state backend keys of `[admin]`; returns the
/// Postgres password's source.
pub(crate) fn validate_admin_backend(
    admin: &AdminConfig,
    base: &Path,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) -> Option<crate::secret::SecretSource> {
    let backend = &admin.backend;
    if *backend.get_ref() == StateBackend::Embedded {
        if let Some(u) = &admin.postgres_url {
            err(
                at(&u.span()),
                "`admin.postgres_url` is set but `admin.backend` is not `\"postgres\"`".to_owned(),
            );
        }
        if admin.postgres_password.is_some() {
            err(
                None,
                "`[admin.postgres_password]` is set but `admin.backend` is not `\"postgres\"`"
                    .to_owned(),
            );
        }
        return None;
    }
    if admin.listen.is_none() {
        err(
            at(&backend.span()),
            "`admin.backend = \"postgres\"` needs `admin.listen`: the control state applies only with the admin API on".to_owned(),
        );
    }
    match &admin.postgres_url {
        None => err(
            at(&backend.span()),
            "`admin.backend = \"postgres\"` needs `admin.postgres_url`, such as `postgres://toolgate@127.0.0.1:5432/toolgate`".to_owned(),
        ),
        Some(u) => {
            let url = u.get_ref();
            let rest = url
                .strip_prefix("postgres://")
                .or_else(|| url.strip_prefix("postgresql://"));
            match rest {
                None => err(
                    at(&u.span()),
                    "`admin.postgres_url` must start with `postgres://`, such as `postgres://toolgate@127.0.0.1:5432/toolgate`".to_owned(),
                ),
                Some(rest) => {
                    let authority = rest.split(['/', '?']).next().unwrap_or("");
                    let has_password = authority
                        .rsplit_once('@')
                        .is_some_and(|(user, _)| user.contains(':'));
                    let query_password = rest
                        .split_once('?')
                        .is_some_and(|(_, q)| q.split('&').any(|kv| kv.starts_with("password=")));
                    if has_password || query_password {
                        err(
                            at(&u.span()),
                            "`admin.postgres_url` must not hold a password: give it with `[admin.postgres_password]` (`env`, `file` or `command`)".to_owned(),
                        );
                    }
                }
            }
        }
    }
    let poll = *admin.poll_interval_ms.get_ref();
    if !(10..=1000).contains(&poll) {
        err(
            at(&admin.poll_interval_ms.span()),
            format!("`admin.poll_interval_ms = {poll}` must be between 10 and 1000"),
        );
    }
    let p = admin.postgres_password.as_ref()?;
    secret_source(p, base, "admin.postgres_password", err)
}

/// The source a `[… = { env | file | command }]` table names (`section`
/// in the message when it names none or several).
pub(crate) fn secret_source(
    p: &SecretSourceConfig,
    base: &Path,
    section: &str,
    err: &mut dyn FnMut(Option<usize>, String),
) -> Option<crate::secret::SecretSource> {
    match (&p.env, &p.file, &p.command) {
        (Some(v), None, None) => Some(crate::secret::SecretSource::Env(v.get_ref().clone())),
        (None, Some(f), None) => Some(crate::secret::SecretSource::File(base.join(f.get_ref()))),
        (None, None, Some(c)) if !c.get_ref().is_empty() => {
            Some(crate::secret::SecretSource::Command(c.get_ref().clone()))
        }
        _ => {
            err(
                None,
                format!(
                    "`[{section}]` needs exactly one of `env`, `file` or a non-empty `command`"
                ),
            );
            None
        }
    }
}
