//! A shard's cache of per-call decisions.
//!
//! Owned by one shard, never shared: no lock, no cross-core traffic. Keyed
//! by the exact bytes the outcome depends on (snapshot generation, agent,
//! tool, user, arguments), compared in full on a hit, so two calls can only
//! share an entry if they are the same call. Bounded: when full it is
//! cleared, which keeps the worst case simple and memory fixed.

use std::collections::HashMap;

use super::{CallFacts, Engine, Slice, Verdict};
use toolgate_core::jsonrpc::write_value;

/// Per-shard decision cache.
pub struct DecisionCache {
    map: HashMap<Vec<u8>, Verdict>,
    capacity: usize,
    key: Vec<u8>,
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that evaluated.
    pub misses: u64,
}

impl DecisionCache {
    /// A cache of at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::with_capacity(capacity.min(1024)),
            capacity,
            key: Vec::new(),
            hits: 0,
            misses: 0,
        }
    }

    /// Looks up the call described by `parts`, or computes and stores it.
    /// Judge verdicts are never cached: each escalation asks the judge.
    pub fn get_or_insert(&mut self, parts: &[&[u8]], compute: impl FnOnce() -> Verdict) -> Verdict {
        self.key.clear();
        for p in parts {
            self.key.extend_from_slice(&(p.len() as u64).to_le_bytes());
            self.key.extend_from_slice(p);
        }
        if let Some(v) = self.map.get(self.key.as_slice()) {
            self.hits += 1;
            return v.clone();
        }
        self.misses += 1;
        let v = compute();
        if !matches!(v, Verdict::Judge { .. }) {
            if self.map.len() >= self.capacity {
                self.map.clear();
            }
            self.map.insert(self.key.clone(), v.clone());
        }
        v
    }

    /// The verdict of `slice` for the call `facts` describes: from the
    /// cache when the same call was decided before, else evaluated by
    /// `engine`. The key is `prefix` (what else the caller's verdicts
    /// depend on) and everything the evaluation reads: agent, tool, end
    /// user, customer, the token's groups (two tokens of one user with
    /// different groups never share a verdict), the arguments, and the
    /// session facts the slice's policies read. `args_json` holds the
    /// arguments' JSON once written (empty: not yet), so a second decision
    /// of the same call does not write them again.
    pub fn decide(
        &mut self,
        prefix: &[u8],
        engine: &Engine,
        slice: &Slice,
        facts: &CallFacts<'_, '_>,
        args_json: &mut Vec<u8>,
    ) -> Verdict {
        if args_json.is_empty() {
            if let Some(a) = facts.args {
                write_value(a, args_json);
            }
        }
        let mut session = Vec::new();
        if let Some(view) = &facts.session {
            let (fields, labels) = slice.session_fields();
            view.facts.cache_key(fields, labels, &mut session);
        }
        let mut groups = Vec::new();
        for g in facts.groups.unwrap_or(&[]) {
            groups.extend_from_slice(&(g.len() as u32).to_le_bytes());
            groups.extend_from_slice(g.as_bytes());
        }
        self.get_or_insert(
            &[
                prefix,
                facts.agent.as_bytes(),
                facts.tool.as_bytes(),
                facts.user.unwrap_or("").as_bytes(),
                &[u8::from(facts.user.is_some())],
                facts.customer.as_bytes(),
                &groups,
                &[u8::from(facts.groups.is_some())],
                args_json,
                &session,
            ],
            || engine.evaluate(slice, facts),
        )
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
