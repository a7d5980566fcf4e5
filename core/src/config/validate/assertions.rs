//! `[identity_assertions]` and each upstream's `[upstreams.identity]`.

use std::path::Path;

use crate::secret::SecretSource;

use super::super::*;
use super::upstreams::RESERVED_HEADERS;

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

/// Checks one upstream's `[upstreams.identity]` and resolves where its
/// assertions go; `None` when it has none.
pub(crate) fn check_identity(
    u: &UpstreamConfig,
    config: &Config,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) -> Option<AssertionTarget> {
    let id = u.identity.as_ref()?;
    let name = u.name.get_ref();
    let here = at(&u.name.span());
    if config.identity_assertions.is_none() {
        err(
            here,
            format!("upstream `{name}`: `[upstreams.identity]` needs `[identity_assertions]`, the key toolgate signs them with"),
        );
    }
    if u.kind == UpstreamKind::Stdio {
        err(
            here,
            format!("upstream `{name}`: `[upstreams.identity]` is for upstreams reached over HTTP (a stdio process has no per-call headers; use `instances = \"per_user\"`)"),
        );
    }
    let header = id.header.trim();
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
    let audience = match &id.audience {
        Some(a) => a.clone(),
        None => match u.kind {
            UpstreamKind::Openapi => u
                .base_url
                .as_ref()
                .or(u.spec.as_ref())
                .map(|s| s.get_ref().clone())
                .unwrap_or_default(),
            _ => u.url.get_ref().clone(),
        },
    };
    Some(AssertionTarget {
        mode: id.mode,
        header: header.to_owned(),
        audience,
    })
}
