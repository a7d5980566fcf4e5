//! REST request paths, as the REST door takes them apart: the path checked
//! and split into percent-decoded segments, matched against path templates
//! (`/invoices/{id}`), the query string read as form pairs, and text values
//! typed by a JSON schema. Shared by the routes of OpenAPI operations and
//! the operator-declared routes of MCP upstreams, so every route of the
//! door refuses the same tricks the same way.
//!
//! The path is checked before it is matched: no empty segment (`//`, a
//! trailing `/`), no `.` or `..` segment, written plainly or
//! percent-encoded, no encoded `/` or control character in a segment, no
//! second `?` and no `#`. Among templates that match, a literal segment
//! wins over a `{parameter}` at the first segment where they differ.

use serde_json::Value;

/// Why a request does not resolve to an operation's arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The path is malformed or ambiguous (`..`, `%2f`, `//`, …).
    #[error("bad path: {0}")]
    BadPath(&'static str),
    /// No operation has this method and path.
    #[error("no operation at this path")]
    NotFound,
    /// The body is not what the operation takes.
    #[error("bad body: {0}")]
    BadBody(String),
    /// The query string is malformed.
    #[error("bad query: {0}")]
    BadQuery(&'static str),
}

/// The segments of a request path, each percent-decoded once.
fn segments(path: &str) -> Result<Vec<String>, RouteError> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(RouteError::BadPath("the path must start with `/`"));
    };
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    rest.split('/')
        .map(|raw| {
            if raw.is_empty() {
                return Err(RouteError::BadPath("empty path segment"));
            }
            let seg = decode(raw, false).ok_or(RouteError::BadPath("bad percent-encoding"))?;
            if seg == "." || seg == ".." {
                return Err(RouteError::BadPath("`.` and `..` segments are refused"));
            }
            if seg.contains('/') {
                return Err(RouteError::BadPath(
                    "an encoded `/` in a segment is refused",
                ));
            }
            if seg.chars().any(char::is_control) {
                return Err(RouteError::BadPath("control characters are refused"));
            }
            Ok(seg)
        })
        .collect()
}

/// Percent-decodes `s` (with `plus`, `+` is a space: form encoding);
/// `None` when an escape is malformed or the result is not UTF-8.
fn decode(s: &str, plus: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                out.push(v);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// How one template segment matches one decoded segment: the value of its
/// parameter (`Some`), or a literal match (`None`); `Err` when it does not.
fn match_segment<'t>(template: &'t str, seg: &str) -> Result<Option<(&'t str, String)>, ()> {
    let Some(open) = template.find('{') else {
        return if template == seg { Ok(None) } else { Err(()) };
    };
    let close = template[open..].find('}').map(|c| open + c).ok_or(())?;
    let (pre, name, suf) = (
        &template[..open],
        &template[open + 1..close],
        &template[close + 1..],
    );
    if seg.len() > pre.len() + suf.len() && seg.starts_with(pre) && seg.ends_with(suf) {
        Ok(Some((
            name,
            seg[pre.len()..seg.len() - suf.len()].to_owned(),
        )))
    } else {
        Err(())
    }
}

/// Path parameters' values by name, as decoded from the request path.
pub type PathValues<'s> = Vec<(&'s str, String)>;

/// A value written as text, typed by `schema`'s `type`.
pub fn typed(text: &str, schema: &Value) -> Value {
    let ty = schema.get("type").and_then(Value::as_str);
    let parsed = match ty {
        Some("integer") => text.parse::<i64>().ok().map(Value::from),
        Some("number") => text
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        Some("boolean") => match text {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        _ => None,
    };
    parsed.unwrap_or_else(|| Value::String(text.to_owned()))
}

/// The path and query of a request target; refuses a fragment and a
/// second `?`.
pub fn split_target(target: &str) -> Result<(&str, Option<&str>), RouteError> {
    if target.contains('#') {
        return Err(RouteError::BadPath("a fragment is refused"));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    if query.is_some_and(|q| q.contains('?')) {
        return Err(RouteError::BadQuery("a second `?` is refused"));
    }
    Ok((path, query))
}

/// The candidate whose path template matches `path` (most specific
/// first), with its parameters' values; `NotFound` when none does.
pub fn matching<'c, T: Copy>(
    candidates: impl IntoIterator<Item = (&'c str, T)>,
    path: &str,
) -> Result<(T, PathValues<'c>), RouteError> {
    let segs = segments(path)?;
    let mut best: Option<(Vec<bool>, T, PathValues<'c>)> = None;
    for (template, candidate) in candidates {
        let trimmed = template.trim_start_matches('/');
        let parts: Vec<&str> = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed.split('/').collect()
        };
        if parts.len() != segs.len() {
            continue;
        }
        let mut shape = Vec::with_capacity(segs.len());
        let mut values = Vec::new();
        let matched = parts
            .iter()
            .zip(&segs)
            .all(|(t, s)| match match_segment(t, s) {
                Ok(None) => {
                    shape.push(true);
                    true
                }
                Ok(Some(v)) => {
                    shape.push(false);
                    values.push(v);
                    true
                }
                Err(()) => false,
            });
        if matched && best.as_ref().is_none_or(|(b, _, _)| shape > *b) {
            best = Some((shape, candidate, values));
        }
    }
    best.map(|(_, c, v)| (c, v)).ok_or(RouteError::NotFound)
}

/// The query string's pairs, form-decoded, values of a repeated key
/// together, in order of first appearance.
pub fn query_pairs(query: Option<&str>) -> Result<Vec<(String, Vec<String>)>, RouteError> {
    let mut written: Vec<(String, Vec<String>)> = Vec::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode(k, true).ok_or(RouteError::BadQuery("bad percent-encoding"))?;
        let v = decode(v, true).ok_or(RouteError::BadQuery("bad percent-encoding"))?;
        match written.iter_mut().find(|(n, _)| *n == k) {
            Some((_, vs)) => vs.push(v),
            None => written.push((k, vec![v])),
        }
    }
    Ok(written)
}

/// A query parameter's value from its `values` as written, shaped by its
/// `schema`: an `array` collects repeated keys (or, without `explode`,
/// splits on `,`); a scalar given twice takes the last, as most frameworks
/// do, and the schema decides on it.
pub fn query_value(schema: &Value, explode: bool, values: &[String]) -> Value {
    if schema.get("type").and_then(Value::as_str) == Some("array") {
        let items = schema.get("items").cloned().unwrap_or(Value::Null);
        let parts: Vec<&str> = if explode {
            values.iter().map(String::as_str).collect()
        } else {
            values.iter().flat_map(|v| v.split(',')).collect()
        };
        return Value::Array(parts.into_iter().map(|t| typed(t, &items)).collect());
    }
    values
        .last()
        .map(|v| typed(v, schema))
        .unwrap_or(Value::Null)
}

/// The JSON request body, `None` when there is none; refuses text that is
/// not JSON.
pub fn json_body(body: &[u8]) -> Result<Option<Value>, RouteError> {
    if body.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| RouteError::BadBody(format!("not JSON: {e}")))
}
