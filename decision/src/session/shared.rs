//! Session state shared by replicas: its form in the shared store (Redis)
//! and the script that records one call there.
//!
//! A session is one key, `toolgate:session:<digest>`, holding its state as
//! JSON: when it started and was last seen, its calls, calls per label and
//! per tool (by name, so replicas agree whatever bits they gave labels),
//! the labels of its last call, its last [`RING`] calls with their time and
//! labels, and per counted argument the digests of the values seen in the
//! last hour with when. [`RECORD`] adds one call atomically (a Lua script,
//! so calls from several replicas never lose each other) and sets the
//! key to expire after the idle timeout. This module holds no I/O: the
//! sync thread in ingress sends these.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{DISTINCT, RING};

/// Records one call in a session's state (see the module doc). `KEYS[1]`
/// the session; `ARGV`: now (Unix s), idle timeout (s), tool, labels (JSON
/// array of names), counted values (JSON array of `[argument, digest]`).
/// Returns the session's calls.
pub const RECORD: &str = r#"
local now = tonumber(ARGV[1])
local idle = tonumber(ARGV[2])
local tool = ARGV[3]
local labels = cjson.decode(ARGV[4])
local values = cjson.decode(ARGV[5])
local raw = redis.call('GET', KEYS[1])
local st = nil
if raw then st = cjson.decode(raw) end
if (not st) or (now - st.seen > idle) then
  st = {started = now, seen = now, calls = 0, labels = {}, last = {}, tools = {}, ring = {}, distinct = {}}
end
st.calls = st.calls + 1
st.seen = now
for _, l in ipairs(labels) do st.labels[l] = (st.labels[l] or 0) + 1 end
st.last = labels
st.tools[tool] = (st.tools[tool] or 0) + 1
local ring = st.ring
table.insert(ring, {now, labels})
while #ring > RING do table.remove(ring, 1) end
st.ring = ring
for _, d in ipairs(values) do
  local arg, h = d[1], d[2]
  local fresh, n = {}, 0
  for k, t in pairs(st.distinct[arg] or {}) do
    if now - t < 3600 then fresh[k] = t; n = n + 1 end
  end
  if fresh[h] or n < DISTINCT then fresh[h] = now end
  st.distinct[arg] = fresh
end
redis.call('SET', KEYS[1], cjson.encode(st), 'EX', idle)
return st.calls
"#;

/// [`RECORD`] with its bounds filled in.
pub fn record_script() -> String {
    RECORD
        .replace("RING", &RING.to_string())
        .replace("DISTINCT", &DISTINCT.to_string())
}

/// The shared store's key of the session whose key parts are `parts`
/// (the same parts give the same key on every replica).
pub fn shared_key(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    format!("toolgate:session:{}", hex::encode(&h.finalize()[..16]))
}

/// The digest of a counted argument's value (its JSON text), the same on
/// every replica.
pub fn value_digest(text: &[u8]) -> u32 {
    let d = Sha256::digest(text);
    u32::from_le_bytes([d[0], d[1], d[2], d[3]]).max(1)
}

/// A session's state as read from the shared store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedState {
    /// When it started (Unix s).
    pub started: u64,
    /// Its calls.
    pub calls: u32,
    /// Calls per label name.
    pub labels: Vec<(String, u32)>,
    /// The labels of its last call.
    pub last: Vec<String>,
    /// Calls per tool name.
    pub tools: Vec<(String, u32)>,
    /// Its last calls: time (Unix s) and labels, oldest first.
    pub ring: Vec<(u64, Vec<String>)>,
    /// Per counted argument: value digests and when each was last seen.
    pub distinct: Vec<(String, Vec<(u32, u64)>)>,
}

fn names(v: &Value) -> Vec<String> {
    // An empty list comes back from Lua as `{}`.
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn counts(v: &Value) -> Vec<(String, u32)> {
    v.as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, n)| Some((k.clone(), u32::try_from(n.as_u64()?).ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

impl SharedState {
    /// Parses the stored JSON; anything that is not a session's state is
    /// an error (the session is then unknown, never empty).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let num = |k: &str| v.get(k).and_then(Value::as_u64).ok_or(format!("no `{k}`"));
        let ring = v
            .get("ring")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(|e| Some((e.get(0)?.as_u64()?, names(e.get(1)?))))
                    .collect()
            })
            .unwrap_or_default();
        let distinct = v
            .get("distinct")
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .map(|(arg, seen)| {
                        let mut values: Vec<(u32, u64)> = seen
                            .as_object()
                            .map(|s| {
                                s.iter()
                                    .filter_map(|(h, t)| Some((h.parse().ok()?, t.as_u64()?)))
                                    .collect()
                            })
                            .unwrap_or_default();
                        values.truncate(DISTINCT);
                        (arg.clone(), values)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            started: num("started")?,
            calls: u32::try_from(num("calls")?).map_err(|e| e.to_string())?,
            labels: v.get("labels").map(counts).unwrap_or_default(),
            last: v.get("last").map(names).unwrap_or_default(),
            tools: v.get("tools").map(counts).unwrap_or_default(),
            ring,
            distinct,
        })
    }
}

/// [`RECORD`]'s `ARGV` for one call at `now` of tool `tool` with label
/// names `labels` and counted values `values` (argument, digest).
pub fn record_args(
    now: u64,
    idle_s: u64,
    tool: &str,
    labels: &[impl AsRef<str>],
    values: &[(impl AsRef<str>, u32)],
) -> [String; 5] {
    let labels: Vec<&str> = labels.iter().map(AsRef::as_ref).collect();
    let values: Vec<(&str, String)> = values
        .iter()
        .map(|(a, h)| (a.as_ref(), h.to_string()))
        .collect();
    [
        now.to_string(),
        idle_s.to_string(),
        tool.to_owned(),
        serde_json::to_string(&labels).unwrap_or_else(|_| "[]".into()),
        serde_json::to_string(&values).unwrap_or_else(|_| "[]".into()),
    ]
}
