//! Output filtering: the step between the upstream's reply and the agent.
//!
//! The rules were compiled into the route's [`OutputFilter`] by `decision`;
//! this step bounds the result's size, asks the filter whether the result
//! can hold anything a rule acts on, and only then walks it. A result with
//! nothing to act on is re-encoded exactly as without rules. JSON-RPC error
//! answers go through the same detectors and patterns. What fired is
//! kept in the call's audit record; a `refuse_when` hit becomes a refusal.

use simd_json::tape::Value;
use toolgate_core::audit::Redaction;
use toolgate_core::jsonrpc::{write_str, write_value, JsonParser};
use toolgate_core::protocol;
use toolgate_core::refusal::{Refusal, RefusalKind};
use toolgate_decision::filter::Verdict;
use toolgate_decision::OutputFilter;

/// Refuses a result larger than the filter's `max_result_bytes`.
pub(super) fn check_size(filter: &OutputFilter, message: &[u8]) -> Result<(), Refusal> {
    if message.len() > filter.max_result_bytes() {
        return Err(Refusal::new(RefusalKind::OutputTooLarge));
    }
    Ok(())
}

/// Writes the filtered `result` into `out`, or refuses it.
pub(super) fn apply(
    filter: &OutputFilter,
    message: &[u8],
    result: Value<'_, '_>,
    stateless: bool,
    inner: &mut JsonParser,
    out: &mut Vec<u8>,
    redactions: &mut Vec<Redaction>,
) -> Result<(), Refusal> {
    if !filter.needs_walk(message) {
        rewrite_result(result, stateless, out, &mut |_, v, o| write_value(v, o));
        return Ok(());
    }
    let mut walker = filter.walker(inner);
    rewrite_result(result, stateless, out, &mut |k, v, o| {
        walker.write_member(k, v, o)
    });
    settle(
        walker.finish(),
        redactions,
        out,
        0,
        RefusalKind::OutputRefused,
    )
}

/// Writes a REST API's JSON answer `body` (parsed as `value`) filtered by
/// the rules, or refuses it. A body with nothing to act on is written as
/// it came.
pub(super) fn apply_body(
    filter: &OutputFilter,
    body: &[u8],
    value: Value<'_, '_>,
    inner: &mut JsonParser,
    out: &mut Vec<u8>,
    redactions: &mut Vec<Redaction>,
) -> Result<(), Refusal> {
    if !filter.needs_walk(body) {
        out.extend_from_slice(body);
        return Ok(());
    }
    let mut walker = filter.walker(inner);
    walker.write_body(value, out);
    settle(
        walker.finish(),
        redactions,
        out,
        0,
        RefusalKind::OutputRefused,
    )
}

/// Writes the upstream's JSON-RPC `error` object with what the detectors
/// and patterns of the rules find masked, or refuses it (a `refuse_when`
/// on a detector). An error with nothing to act on is written as it came.
pub(super) fn apply_error(
    filter: &OutputFilter,
    message: &[u8],
    error: Value<'_, '_>,
    inner: &mut JsonParser,
    out: &mut Vec<u8>,
    redactions: &mut Vec<Redaction>,
) -> Result<(), Refusal> {
    if !filter.needs_walk(message) {
        write_value(error, out);
        return Ok(());
    }
    let mut walker = filter.walker(inner);
    walker.write_error(error, out);
    settle(
        walker.finish(),
        redactions,
        out,
        0,
        RefusalKind::OutputRefused,
    )
}

/// Writes the outgoing call's `arguments` filtered by the rules that apply
/// to arguments, or refuses the call. Arguments with nothing to act on are
/// written exactly as without rules.
pub(super) fn apply_arguments(
    filter: &OutputFilter,
    arguments: Value<'_, '_>,
    inner: &mut JsonParser,
    out: &mut Vec<u8>,
    redactions: &mut Vec<Redaction>,
) -> Result<(), Refusal> {
    let start = out.len();
    write_value(arguments, out);
    if !filter.needs_walk(&out[start..]) {
        return Ok(());
    }
    out.truncate(start);
    let mut walker = filter.walker(inner);
    walker.write_arguments(arguments, out);
    settle(
        walker.finish(),
        redactions,
        out,
        start,
        RefusalKind::ArgumentsRefused,
    )
}

/// Keeps for the record what the rules did; a `refuse_when` that held
/// takes back what was written from `start` and refuses with `kind`.
fn settle(
    verdict: Verdict,
    redactions: &mut Vec<Redaction>,
    out: &mut Vec<u8>,
    start: usize,
    kind: RefusalKind,
) -> Result<(), Refusal> {
    redactions.extend(verdict.redactions);
    if verdict.refused {
        out.truncate(start);
        return Err(Refusal::new(kind));
    }
    Ok(())
}

/// Writes an upstream's result for the agent: the upstream's own
/// `serverInfo` is dropped from `_meta` (the agent talks to toolgate, and
/// upstream identities are internal), and a stateless-era agent gets the
/// `resultType` its era requires when a handshake-era upstream left it out.
/// Member values are written by `write` (given the member's key), which is
/// where output rules apply.
pub(super) fn rewrite_result(
    result: Value<'_, '_>,
    stateless: bool,
    out: &mut Vec<u8>,
    write: &mut dyn FnMut(&str, Value<'_, '_>, &mut Vec<u8>),
) {
    out.push(b'{');
    let mut first = true;
    let mut has_type = false;
    if let Some(obj) = result.as_object() {
        for (k, v) in obj.iter() {
            if k == "_meta" {
                if let Some(meta) = v.as_object() {
                    let kept: Vec<_> = meta
                        .iter()
                        .filter(|(mk, _)| *mk != protocol::META_SERVER_INFO)
                        .collect();
                    if kept.is_empty() {
                        continue;
                    }
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    out.extend_from_slice(br#""_meta":{"#);
                    for (i, (mk, mv)) in kept.into_iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        write_str(mk, out);
                        out.push(b':');
                        write(mk, mv, out);
                    }
                    out.push(b'}');
                    continue;
                }
            }
            has_type |= k == "resultType";
            if !first {
                out.push(b',');
            }
            first = false;
            write_str(k, out);
            out.push(b':');
            write(k, v, out);
        }
    }
    if stateless && !has_type {
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(br#""resultType":"complete""#);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(json: &str, stateless: bool) -> String {
        let mut p = JsonParser::new();
        let tape = p.parse(json.as_bytes()).unwrap();
        let mut out = Vec::new();
        rewrite_result(tape.as_value(), stateless, &mut out, &mut |_, v, out| {
            write_value(v, out)
        });
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn upstream_server_info_is_dropped_and_result_type_added_for_stateless_agents() {
        let r =
            r#"{"content":[],"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"crm"},"x":1}}"#;
        assert_eq!(
            rewrite(r, true),
            r#"{"content":[],"_meta":{"x":1},"resultType":"complete"}"#
        );
        let r = r#"{"_meta":{"io.modelcontextprotocol/serverInfo":{}},"resultType":"complete","isError":false}"#;
        assert_eq!(
            rewrite(r, false),
            r#"{"resultType":"complete","isError":false}"#
        );
        assert_eq!(rewrite("{}", false), "{}");
    }
}
