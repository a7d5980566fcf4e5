//! `Mcp-Param-*` headers: arguments a tool's schema asks to be mirrored in
//! headers (`x-mcp-header`), checked on the way in and produced on the way
//! out to stateless-era upstreams.

use simd_json::prelude::*;
use simd_json::tape::Value;
use toolgate_core::protocol::{decode_header_value, encode_header_value};
use toolgate_core::refusal::{Refusal, RefusalKind};
use toolgate_decision::catalog::{HeaderParam, ParamType};
use toolgate_decision::ToolDef;

use crate::http::head::Head;

fn value_at<'t>(args: Option<Value<'t, 't>>, path: &[String]) -> Option<Value<'t, 't>> {
    let mut v = args?;
    for key in path {
        v = v.get(key.as_str())?;
    }
    (!v.is_null()).then_some(v)
}

/// How the argument is written in its header, or `None` when it has no
/// header form (objects, arrays, non-integral numbers).
fn render(v: Value<'_, '_>) -> Option<String> {
    if let Some(s) = v.into_string() {
        return Some(s.to_owned());
    }
    if let Some(b) = v.as_bool() {
        return Some(if b { "true" } else { "false" }.to_owned());
    }
    if let Some(i) = v.as_i64() {
        return Some(i.to_string());
    }
    v.as_u64().map(|u| u.to_string())
}

fn matches(p: &HeaderParam, v: Value<'_, '_>, rendered: &str, decoded: &str) -> bool {
    if p.ty == ParamType::Integer && (v.is_i64() || v.is_u64()) {
        // `42` and `42.0` name the same integer.
        let (whole, frac) = decoded.split_once('.').unwrap_or((decoded, ""));
        let canonical = !whole.is_empty()
            && whole
                .trim_start_matches('-')
                .bytes()
                .all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b == b'0');
        return canonical && whole == rendered;
    }
    decoded == rendered
}

/// Checks the agent's `Mcp-Param-*` headers against the body's arguments.
pub fn check(
    def: &ToolDef,
    args: Option<Value<'_, '_>>,
    head: &Head,
    buf: &[u8],
) -> Result<(), Refusal> {
    for p in &def.header_params {
        let name = p.header.to_ascii_lowercase();
        let mismatch = |why: &str| {
            Err(Refusal::with(
                RefusalKind::HeaderMismatch,
                format!("{} {why}", p.header),
            ))
        };
        if head.count(buf, &name) > 1 {
            return mismatch("appears more than once");
        }
        let raw = head
            .header(buf, &name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim);
        let value = value_at(args, &p.path);
        match (raw, value) {
            (None, None) => {}
            (Some(_), None) => return mismatch("is present but the argument is absent"),
            (raw, Some(v)) => match (raw, render(v)) {
                (None, None) => {}
                (Some(_), None) => return mismatch("does not match the argument"),
                (None, Some(_)) => return mismatch("is missing but the argument is present"),
                (Some(raw), Some(rendered)) => match decode_header_value(raw) {
                    Some(decoded) if matches(p, v, &rendered, &decoded) => {}
                    _ => return mismatch("does not match the argument"),
                },
            },
        }
    }
    Ok(())
}

/// The `Mcp-Param-*` headers to send a stateless-era upstream.
pub fn for_upstream(def: &ToolDef, args: Option<Value<'_, '_>>) -> Vec<(String, String)> {
    def.header_params
        .iter()
        .filter_map(|p| {
            let rendered = render(value_at(args, &p.path)?)?;
            Some((
                p.header.clone(),
                encode_header_value(&rendered).into_owned(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{parse_head, Limits};
    use toolgate_core::jsonrpc::JsonParser;

    fn def() -> ToolDef {
        ToolDef {
            name: "t".into(),
            exposed: Some("u__t".into()),
            json: String::new(),
            sha256: String::new(),
            quarantined: false,
            header_params: vec![
                HeaderParam {
                    path: vec!["region".into()],
                    header: "Mcp-Param-Region".into(),
                    ty: ParamType::String,
                },
                HeaderParam {
                    path: vec!["n".into()],
                    header: "Mcp-Param-N".into(),
                    ty: ParamType::Integer,
                },
            ],
        }
    }

    fn run(headers: &str, args: &str) -> Result<Vec<(String, String)>, RefusalKind> {
        let raw = format!("POST /mcp HTTP/1.1\r\n{headers}\r\n");
        let limits = Limits {
            max_header_bytes: 4096,
            max_headers: 32,
            max_body_bytes: 10,
        };
        let head = parse_head(raw.as_bytes(), &limits).ok().flatten().unwrap();
        let mut p = JsonParser::new();
        let tape = p.parse(args.as_bytes()).unwrap();
        let d = def();
        check(&d, Some(tape.as_value()), &head, raw.as_bytes()).map_err(|r| r.kind)?;
        Ok(for_upstream(&d, Some(tape.as_value())))
    }

    #[test]
    fn agreeing_headers_pass_and_are_forwarded() {
        let out = run(
            "Mcp-Param-Region: eu\r\nMcp-Param-N: 42.0\r\n",
            r#"{"region":"eu","n":42}"#,
        );
        assert_eq!(
            out,
            Ok(vec![
                ("Mcp-Param-Region".into(), "eu".into()),
                ("Mcp-Param-N".into(), "42".into())
            ])
        );
    }

    #[test]
    fn header_disagreeing_with_argument_is_refused() {
        assert_eq!(
            run(
                "Mcp-Param-Region: us\r\nMcp-Param-N: 42\r\n",
                r#"{"region":"eu","n":42}"#
            )
            .err(),
            Some(RefusalKind::HeaderMismatch)
        );
        assert_eq!(
            run(
                "Mcp-Param-Region: eu\r\nMcp-Param-N: 42.5\r\n",
                r#"{"region":"eu","n":42}"#
            )
            .err(),
            Some(RefusalKind::HeaderMismatch)
        );
    }

    #[test]
    fn header_without_argument_and_argument_without_header_are_refused() {
        assert_eq!(
            run("Mcp-Param-Region: eu\r\n", r#"{}"#).err(),
            Some(RefusalKind::HeaderMismatch)
        );
        assert_eq!(
            run("", r#"{"region":"eu"}"#).err(),
            Some(RefusalKind::HeaderMismatch)
        );
        assert_eq!(run("", r#"{}"#), Ok(vec![]));
    }
}
