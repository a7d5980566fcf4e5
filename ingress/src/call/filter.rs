//! Output filtering: the step between the upstream's reply and the agent.
//!
//! The rules were compiled into the route's [`OutputFilter`] by `decision`;
//! this step bounds the result's size, asks the filter whether the result
//! can hold anything a rule acts on, and only then walks it. A result with
//! nothing to act on is re-encoded exactly as without rules. JSON-RPC error
//! answers go through the same detectors and patterns. What fired is
//! kept in the call's audit record; a `refuse_when` hit becomes a refusal.

use simd_json::tape::Value;
use toolgate_core::jsonrpc::{write_value, JsonParser};
use toolgate_core::refusal::{Refusal, RefusalKind};
use toolgate_decision::OutputFilter;

use super::rewrite_result;
use toolgate_core::audit::Redaction;

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
    let verdict = walker.finish();
    redactions.extend(verdict.redactions);
    if verdict.refused {
        out.clear();
        return Err(Refusal::new(RefusalKind::OutputRefused));
    }
    Ok(())
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
    let verdict = walker.finish();
    redactions.extend(verdict.redactions);
    if verdict.refused {
        out.clear();
        return Err(Refusal::new(RefusalKind::OutputRefused));
    }
    Ok(())
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
    let verdict = walker.finish();
    redactions.extend(verdict.redactions);
    if verdict.refused {
        out.truncate(start);
        return Err(Refusal::new(RefusalKind::ArgumentsRefused));
    }
    Ok(())
}
