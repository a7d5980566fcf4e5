//! Exposed resource URIs: `toolgate://{upstream}/{uri}`, and the route back.
//!
//! Every upstream's resources are shown to agents under one namespace per
//! upstream: the upstream's configured name as the authority, the URI the
//! upstream gave as the rest, unchanged. Reversing is a string split at the
//! first `/` after the authority, so it is exact; upstream names cannot
//! hold `/`, so a URI names exactly one upstream, and what follows the
//! authority goes to that upstream and no other. The same holds for
//! resource templates (`uriTemplate`).
//!
//! A URI an agent asks to read is checked before it goes anywhere: it must
//! be in toolgate's scheme, name a configured upstream, and carry an
//! absolute URI with its own scheme; dot segments, backslashes, control
//! characters and percent-encoded separators or dots are refused, so a
//! template variable cannot walk out of the path it was given.

/// The scheme and separator every exposed resource URI starts with.
pub const SCHEME: &str = "toolgate://";

/// Longest exposed URI accepted (bytes).
pub const MAX_URI_LEN: usize = 2048;

/// Why an exposed resource URI was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// Not in the `toolgate://` scheme.
    #[error("resource URIs are `toolgate://{{upstream}}/{{uri}}`")]
    UnknownScheme,
    /// No `/` after the authority, or nothing after it.
    #[error("the resource URI names no upstream URI after `toolgate://{{upstream}}/`")]
    Incomplete,
    /// The upstream's part is not an absolute URI (`scheme:…`).
    #[error("the upstream's part of the resource URI has no scheme")]
    NotAbsolute,
    /// A `.` or `..` path segment, plain or percent-encoded.
    #[error("the resource URI has a dot segment")]
    DotSegment,
    /// A percent-encoded `/` or `\`, a backslash, or a control character.
    #[error("the resource URI has an encoded separator, a backslash or a control character")]
    Smuggled,
    /// Longer than [`MAX_URI_LEN`].
    #[error("the resource URI is too long")]
    TooLong,
}

/// The URI agents see for `uri` of upstream `upstream`.
pub fn expose(upstream: &str, uri: &str) -> String {
    let mut s = String::with_capacity(SCHEME.len() + upstream.len() + 1 + uri.len());
    s.push_str(SCHEME);
    s.push_str(upstream);
    s.push('/');
    s.push_str(uri);
    s
}

/// The upstream name and the upstream's own URI that `exposed` stands for,
/// without checks on the upstream's part (for listings and templates).
pub fn split(exposed: &str) -> Result<(&str, &str), UriError> {
    let rest = exposed
        .strip_prefix(SCHEME)
        .ok_or(UriError::UnknownScheme)?;
    let (upstream, uri) = rest.split_once('/').ok_or(UriError::Incomplete)?;
    if upstream.is_empty() || uri.is_empty() {
        return Err(UriError::Incomplete);
    }
    Ok((upstream, uri))
}

/// The upstream name and the URI to read there, for a URI an agent sent:
/// [`split`] and the checks of the module doc.
pub fn route(exposed: &str) -> Result<(&str, &str), UriError> {
    if exposed.len() > MAX_URI_LEN {
        return Err(UriError::TooLong);
    }
    let (upstream, uri) = split(exposed)?;
    check(uri)?;
    Ok((upstream, uri))
}

/// Whether `uri` starts with a URI scheme (RFC 3986: a letter, then
/// letters, digits, `+`, `-`, `.`, then `:`).
fn has_scheme(uri: &str) -> bool {
    let Some((scheme, _)) = uri.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn check(uri: &str) -> Result<(), UriError> {
    if !has_scheme(uri) {
        return Err(UriError::NotAbsolute);
    }
    if uri.chars().any(|c| c.is_control() || c == '\\') {
        return Err(UriError::Smuggled);
    }
    // Percent-decoded view of what matters: `/`, `\` and `.`.
    let lower = uri.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || lower.contains("%00") {
        return Err(UriError::Smuggled);
    }
    let path = uri.split(['?', '#']).next().unwrap_or(uri);
    let dotted = path.replace("%2e", ".").replace("%2E", ".");
    if dotted.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(UriError::DotSegment);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposing_and_routing_are_exact_inverses() {
        for (up, uri) in [
            ("docs", "file:///public/readme.md"),
            ("crm", "https://crm.example/c/42?fields=a,b#top"),
            ("a.b-c_d", "greeting://alice"),
        ] {
            let e = expose(up, uri);
            assert_eq!(route(&e), Ok((up, uri)), "{e}");
        }
    }

    #[test]
    fn a_uri_names_one_upstream_whatever_follows() {
        // Another upstream's namespace inside the path stays the first's.
        let e = "toolgate://docs/toolgate://crm/file:///x";
        assert_eq!(split(e), Ok(("docs", "toolgate://crm/file:///x")));
    }

    #[test]
    fn foreign_schemes_and_incomplete_uris_are_refused() {
        assert_eq!(route("file:///etc/passwd"), Err(UriError::UnknownScheme));
        assert_eq!(route("toolgate://docs"), Err(UriError::Incomplete));
        assert_eq!(route("toolgate:///file:///x"), Err(UriError::Incomplete));
        assert_eq!(route("toolgate://docs/"), Err(UriError::Incomplete));
        assert_eq!(
            route("toolgate://docs/etc/passwd"),
            Err(UriError::NotAbsolute)
        );
    }

    #[test]
    fn smuggled_segments_are_refused() {
        for bad in [
            "toolgate://docs/file:///public/../etc/passwd",
            "toolgate://docs/file:///public/%2e%2e/etc/passwd",
            "toolgate://docs/file:///public/%2E./x",
            "toolgate://docs/file:///public/./x",
        ] {
            assert_eq!(route(bad), Err(UriError::DotSegment), "{bad}");
        }
        for bad in [
            "toolgate://docs/file:///public/..%2fetc",
            "toolgate://docs/file:///public/a%5Cb",
            "toolgate://docs/file:///public/a\\b",
            "toolgate://docs/file:///public/a\nb",
            "toolgate://docs/file:///public/a%00",
        ] {
            assert_eq!(route(bad), Err(UriError::Smuggled), "{bad}");
        }
        // Dots inside names, and `..` in a query, are not segments.
        assert!(route("toolgate://docs/file:///public/a..b/v1.2").is_ok());
        assert!(route("toolgate://docs/https://x/y?q=../z").is_ok());
        let long = format!("toolgate://docs/file:///{}", "a".repeat(MAX_URI_LEN));
        assert_eq!(route(&long), Err(UriError::TooLong));
    }
}
