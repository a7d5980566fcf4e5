//! Tool labels and their bits.
//!
//! A label's bit is given the first time any snapshot of the process uses
//! the label and never changes after: a session's label bits stay
//! meaningful across reloads that add or drop labels. At most
//! [`MAX_LABELS`] labels get a bit in a process's life; the configuration
//! check keeps one configuration within that.

use std::sync::{Arc, Mutex};

use super::MAX_LABELS;

static BITS: Mutex<Vec<Arc<str>>> = Mutex::new(Vec::new());

/// The bit of `label`, given now if it is new; `None` once every bit is
/// taken (the label is then a tool attribute but not counted in sessions).
/// Called while a snapshot is built, never on the request path.
pub fn bit(label: &str) -> Option<u32> {
    let mut bits = BITS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(i) = bits.iter().position(|l| &**l == label) {
        return Some(1 << i);
    }
    if bits.len() >= MAX_LABELS {
        tracing::warn!(
            label,
            "label not counted in sessions: all {MAX_LABELS} label bits are taken"
        );
        return None;
    }
    bits.push(Arc::from(label));
    Some(1 << (bits.len() - 1))
}

/// Every label with a bit, by bit.
pub fn names() -> Arc<[Arc<str>]> {
    let bits = BITS.lock().unwrap_or_else(|p| p.into_inner());
    Arc::from(bits.as_slice())
}

/// The labels an MCP tool definition's `annotations` imply:
/// `readOnlyHint` → `read_only`, `destructiveHint` → `destructive`,
/// `openWorldHint` → `open_world` (each when `true`).
pub fn from_annotations(definition: &serde_json::Value) -> Vec<&'static str> {
    let Some(a) = definition.get("annotations") else {
        return Vec::new();
    };
    [
        ("readOnlyHint", "read_only"),
        ("destructiveHint", "destructive"),
        ("openWorldHint", "open_world"),
    ]
    .into_iter()
    .filter(|(hint, _)| a.get(hint).and_then(serde_json::Value::as_bool) == Some(true))
    .map(|(_, label)| label)
    .collect()
}
