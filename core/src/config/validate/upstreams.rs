//! One `[[upstreams]]` entry by itself, and its credential.

use std::path::{Path, PathBuf};

use crate::upstream_url::UpstreamUrl;

use super::super::*;
use super::*;

/// Headers toolgate writes itself: a credential may not replace them.
pub(crate) const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-type",
    "content-length",
    "accept",
    "transfer-encoding",
    "connection",
    "mcp-protocol-version",
    "mcp-session-id",
    "mcp-method",
    "mcp-name",
];

/// One `[[upstreams]]` entry, checked on its own: its parsed URL (when it
/// parses) and resolved files.
#[derive(Debug, Clone)]
pub struct CheckedUpstream {
    /// The endpoint, `None` when the URL does not parse.
    pub url: Option<UpstreamUrl>,
    /// `ca_file`, resolved.
    pub ca_file: Option<PathBuf>,
    /// `credential.file`, resolved.
    pub credential_file: Option<PathBuf>,
    /// `spec` of an `openapi` upstream, resolved.
    pub spec: Option<SpecSource>,
    /// A `stdio` upstream's process, resolved.
    pub stdio: Option<StdioSpec>,
    /// Where its end-user assertions go.
    pub identity: Option<IdentityTarget>,
}

impl CheckedUpstream {
    /// `entry` as resolved by this check; `None` when its URL did not parse.
    pub fn resolve(self, entry: UpstreamConfig) -> Option<ResolvedUpstream> {
        Some(ResolvedUpstream {
            entry,
            url: self.url?,
            ca_file: self.ca_file,
            credential_file: self.credential_file,
            spec: self.spec,
            stdio: self.stdio,
            identity: self.identity,
        })
    }
}

/// What the configuration requires of one upstream entry by itself (name
/// syntax, URL, `ca_file`, prefix, limits, credential); clashes with other
/// upstreams are checked by the caller.
pub(crate) fn check_upstream_entry(
    u: &UpstreamConfig,
    base: &Path,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) -> CheckedUpstream {
    let name = u.name.get_ref();
    if !is_upstream_name(name) {
        err(
            at(&u.name.span()),
            format!("upstream name `{name}` must be non-empty letters, digits, `_`, `-` or `.`"),
        );
    }
    let mut checked = CheckedUpstream {
        url: None,
        ca_file: None,
        credential_file: None,
        spec: None,
        stdio: None,
        identity: None,
    };
    if u.kind != UpstreamKind::Stdio {
        for key in super::stdio::keys_set(u) {
            err(
                at(&u.name.span()),
                format!("upstream `{name}`: `{key}` is for `kind = \"stdio\"` upstreams"),
            );
        }
    }
    let endpoint = match u.kind {
        UpstreamKind::Stdio => {
            checked.stdio = super::stdio::check(u, base, err, at);
            // Not dialed: the name stands for the process in what compares
            // upstreams by endpoint (catalogs, reloads).
            checked.url = Some(UpstreamUrl::process(name));
            None
        }
        UpstreamKind::Mcp => {
            for (key, set) in [
                ("spec", u.spec.is_some()),
                ("base_url", u.base_url.is_some()),
                ("include", !u.include.is_empty()),
                ("exclude", !u.exclude.is_empty()),
            ] {
                if set {
                    err(
                        at(&u.name.span()),
                        format!("upstream `{name}`: `{key}` is for `kind = \"openapi\"` upstreams"),
                    );
                }
            }
            for why in check_routes(&u.routes) {
                err(at(&u.name.span()), format!("upstream `{name}`: {why}"));
            }
            Some((u.url.get_ref().clone(), u.url.span()))
        }
        UpstreamKind::Openapi => {
            if !u.routes.is_empty() {
                err(
                    at(&u.name.span()),
                    format!("upstream `{name}`: an `openapi` upstream's REST routes are its operations; `routes` is for `mcp` upstreams"),
                );
            }
            openapi_endpoint(u, base, &mut checked, err, at)
        }
    };
    if let Some((text, span)) = endpoint {
        match UpstreamUrl::parse(&text) {
            Ok(url) => {
                checked.ca_file = ca_file(&u.ca_file, url.tls, base, err, at);
                checked.url = Some(url);
            }
            Err(e) => err(at(&span), format!("upstream `{name}`: {e}")),
        }
    }
    let (prefix, pspan) = match &u.prefix {
        Some(p) => (p.get_ref().as_str(), p.span()),
        None => (name.as_str(), u.name.span()),
    };
    if prefix.contains("__") {
        err(
            at(&pspan),
            format!("prefix `{prefix}` must not contain `__`"),
        );
    }
    if u.catalog_refresh_s == 0 {
        err(
            at(&u.name.span()),
            format!("upstream `{name}`: `catalog_refresh_s` must be above 0"),
        );
    }
    if u.timeout_ms == 0 {
        err(
            at(&u.name.span()),
            format!("upstream `{name}`: `timeout_ms` must be above 0"),
        );
    }
    checked.credential_file = validate_credential(u, base, err, at);
    checked
}

/// What is wrong with an MCP upstream's `[[upstreams.routes]]`: a method
/// the REST door does not serve, a path that is not a template it can
/// match (starting with `/`, no empty segment, at most one `{name}` per
/// segment, names unique), no tool, or two routes one request could take.
pub fn check_routes(routes: &[RestRouteConfig]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut shapes: Vec<(String, String)> = Vec::new();
    for r in routes {
        let at = format!("route `{} {}`", r.method, r.path);
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&r.method.as_str()) {
            problems.push(format!(
                "{at}: method must be GET, POST, PUT, PATCH or DELETE"
            ));
        }
        if r.tool.is_empty() {
            problems.push(format!("{at}: `tool` is empty"));
        }
        match template_shape(&r.path) {
            Ok(shape) => {
                if shapes.contains(&(r.method.clone(), shape.clone())) {
                    problems.push(format!("{at}: another route takes the same requests"));
                }
                shapes.push((r.method.clone(), shape));
            }
            Err(why) => problems.push(format!("{at}: {why}")),
        }
    }
    problems
}

/// A path template with its parameter names left out (`/a/{}`), or why
/// it is not one.
fn template_shape(path: &str) -> Result<String, String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("the path must start with `/`".into());
    };
    let mut names: Vec<&str> = Vec::new();
    let mut shape = String::new();
    for seg in rest.split('/').filter(|_| !rest.is_empty()) {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err("empty, `.` and `..` segments cannot be matched".into());
        }
        shape.push('/');
        match (seg.find('{'), seg.find('}')) {
            (None, None) => shape.push_str(seg),
            (Some(open), Some(close)) if open < close => {
                let name = &seg[open + 1..close];
                let rest = &seg[close + 1..];
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    || rest.contains(['{', '}'])
                {
                    return Err(format!(
                        "`{seg}`: one `{{name}}` per segment, the name letters, digits, `_` or `-`"
                    ));
                }
                if names.contains(&name) {
                    return Err(format!("`{{{name}}}` appears twice"));
                }
                names.push(name);
                shape.push_str(&seg[..open]);
                shape.push_str("{}");
                shape.push_str(rest);
            }
            _ => return Err(format!("`{seg}`: unbalanced braces")),
        }
    }
    Ok(if shape.is_empty() { "/".into() } else { shape })
}

/// Whether `name` is a valid upstream name: letters, digits, `_`, `-`, `.`.
pub fn is_upstream_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Checks one upstream entry that does not come from the file (the admin
/// API's), exactly as the configuration loader checks a `[[upstreams]]`
/// entry, relative paths resolving against `base`. Errors: one message per
/// problem.
pub fn check_upstream(
    u: &UpstreamConfig,
    config: &Config,
    base: &Path,
) -> Result<CheckedUpstream, Vec<String>> {
    let mut errors = Vec::new();
    let mut checked = check_upstream_entry(
        u,
        base,
        &mut |_, m| errors.push(m),
        &|_: &std::ops::Range<usize>| None,
    );
    checked.identity = super::assertions::check_identity(
        u,
        config,
        base,
        &mut |_, m| errors.push(m),
        &|_: &std::ops::Range<usize>| None,
    );
    if errors.is_empty() {
        Ok(checked)
    } else {
        Err(errors)
    }
}

/// The endpoint of an `openapi` upstream: `base_url`, else the document's
/// first `servers` URL (for a file) or the origin the document is served
/// from (for a URL, which is fetched when the upstream is loaded, not
/// here); resolves `spec` into `checked`. A file must be a readable JSON or
/// YAML document (its operations are checked when it is loaded).
fn openapi_endpoint(
    u: &UpstreamConfig,
    base: &Path,
    checked: &mut CheckedUpstream,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) -> Option<(String, std::ops::Range<usize>)> {
    let name = u.name.get_ref();
    if !u.url.get_ref().is_empty() {
        err(
            at(&u.url.span()),
            format!("upstream `{name}`: an `openapi` upstream is reached at `base_url`, not `url`"),
        );
    }
    let Some(spec) = &u.spec else {
        err(
            at(&u.name.span()),
            format!("upstream `{name}`: `kind = \"openapi\"` needs `spec`, the OpenAPI document"),
        );
        return None;
    };
    let text = spec.get_ref();
    if text.starts_with("http://") || text.starts_with("https://") {
        let url = match UpstreamUrl::parse(text) {
            Ok(url) => url,
            Err(e) => {
                err(at(&spec.span()), format!("upstream `{name}`: `spec`: {e}"));
                return None;
            }
        };
        let origin = format!(
            "{}://{}",
            if url.tls { "https" } else { "http" },
            url.authority
        );
        checked.spec = Some(SpecSource::Url(url));
        return Some(match &u.base_url {
            Some(b) => (b.get_ref().clone(), b.span()),
            None => (origin, spec.span()),
        });
    }
    let path = base.join(text);
    let doc = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            err(
                at(&spec.span()),
                format!(
                    "upstream `{name}`: cannot read `spec` `{}`: {e}",
                    path.display()
                ),
            );
            return None;
        }
    };
    checked.spec = Some(SpecSource::File(path.clone()));
    if let Some(b) = &u.base_url {
        return Some((b.get_ref().clone(), b.span()));
    }
    let server = crate::document::parse(&doc).ok().and_then(|d| {
        d.pointer("/servers/0/url")
            .and_then(|s| s.as_str())
            .map(str::to_owned)
    });
    match server {
        Some(s) => Some((s, spec.span())),
        None => {
            err(
                at(&spec.span()),
                format!(
                    "upstream `{name}`: `{}` names no server: set `base_url`",
                    path.display()
                ),
            );
            None
        }
    }
}

/// Checks an upstream's `[upstreams.credential]`; returns its resolved file.
pub(crate) fn validate_credential(
    u: &UpstreamConfig,
    base: &Path,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) -> Option<PathBuf> {
    let c = u.credential.as_ref()?;
    let name = u.name.get_ref();
    let header = c.header.get_ref();
    let line = at(&c.header.span()).or(at(&u.name.span()));
    if header.is_empty()
        || !header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        err(
            line,
            format!("upstream `{name}`: credential header `{header}` is not a header name"),
        );
    } else if RESERVED_HEADERS.contains(&header.to_ascii_lowercase().as_str()) {
        err(
            line,
            format!("upstream `{name}`: credential header `{header}` is one toolgate sets itself"),
        );
    }
    if c.value_prefix.bytes().any(|b| b.is_ascii_control()) {
        err(
            line,
            format!(
                "upstream `{name}`: credential `value_prefix` must not hold control characters"
            ),
        );
    }
    let sources = c.env.is_some() as usize
        + c.file.is_some() as usize
        + c.command.is_some() as usize
        + c.oauth.is_some() as usize;
    if sources != 1 {
        err(
            at(&u.name.span()),
            format!(
                "upstream `{name}`: credential needs exactly one of `env`, `file`, `command` and `oauth`"
            ),
        );
    }
    if let Some(o) = &c.oauth {
        if !c.value_prefix.is_empty() {
            err(
                line,
                format!("upstream `{name}`: an `oauth` credential is always sent as `Bearer <token>`; drop `value_prefix`"),
            );
        }
        check_token_endpoint(o, &format!("upstream `{name}`"), "oauth", base, err, at);
    }
    if let Some(cmd) = &c.command {
        if cmd.get_ref().first().is_none_or(|p| p.is_empty()) {
            err(
                at(&cmd.span()),
                format!("upstream `{name}`: credential `command` must name a program"),
            );
        }
    }
    c.file.as_ref().map(|f| base.join(f.get_ref()))
}

/// Checks a token endpoint toolgate authenticates to with a client secret
/// (`[upstreams.credential.oauth]`, `[upstreams.identity.exchange]`):
/// `https://` (plain http to loopback only), a client id, exactly one
/// secret source. `table` names the table in messages. Returns the URL and
/// its CA bundle, resolved, when they are usable.
pub(crate) fn check_token_endpoint(
    o: &OAuthConfig,
    whose: &str,
    table: &str,
    base: &Path,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) -> Option<(UpstreamUrl, Option<PathBuf>)> {
    let span = at(&o.token_url.span());
    if o.client_id.is_empty() {
        err(
            span,
            format!("{whose}: `{table}.client_id` must not be empty"),
        );
    }
    if o.client_secret_env.is_some() == o.client_secret_file.is_some() {
        err(
            span,
            format!("{whose}: `{table}` needs exactly one of `client_secret_env` and `client_secret_file`"),
        );
    }
    match UpstreamUrl::parse(o.token_url.get_ref()) {
        Ok(url) if !url.tls && !is_loopback(url.server_name()) => {
            err(
                span,
                format!("{whose}: `token_url` must be https:// (plain http only to a loopback address): the client secret would travel in the clear"),
            );
            None
        }
        Ok(url) => {
            let ca = ca_file(&o.ca_file, url.tls, base, err, at);
            Some((url, ca))
        }
        Err(e) => {
            err(span, format!("{whose}: `token_url`: {e}"));
            None
        }
    }
}
