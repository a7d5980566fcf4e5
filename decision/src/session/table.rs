//! The session table: a fixed-size open-addressing table of atomics,
//! shared by every shard, so a session whose calls land on several shards
//! (several connections) is one session. A session is found by its 64-bit
//! key and claimed with one compare-and-swap; a call reads its facts with
//! plain atomic loads and records itself with atomic adds and stores.
//!
//! Bounds: the table never grows and never evicts a live session. Only a
//! session idle past the timeout gives up its slot (it is over); a new
//! session that finds no room is *unknown* to policy, so a full table can
//! make decisions stricter, never looser. Each session keeps fixed-size
//! state: a ring of its last [`RING`] calls (time and labels) for the
//! sliding windows, counts for up to [`TOOLS`] tools, one counter per
//! label, and per counted argument the hashes of up to [`DISTINCT`] values
//! seen in the last hour.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

use super::{Recorded, SessionFacts, MAX_DISTINCT, MAX_LABELS};

/// Calls a session remembers with their time (the sliding windows count
/// at most this many).
pub const RING: usize = 64;
/// Tools a session counts calls of; a session calling more is unknown.
pub const TOOLS: usize = 16;
/// Distinct values a session tells apart per counted argument in an hour.
pub const DISTINCT: usize = 64;
/// Slots probed before a new session counts as unplaceable.
const PROBE: usize = 32;
/// A slot being claimed or reset.
const BUSY: u64 = u64::MAX;

struct Slot {
    /// Its session's key; 0: free; [`BUSY`]: being claimed.
    key: AtomicU64,
    started: AtomicU32,
    last: AtomicU32,
    in_flight: AtomicU32,
    calls: AtomicU32,
    labels: AtomicU32,
    last_labels: AtomicU32,
    /// Some per-session state did not fit: the session is unknown.
    overflow: AtomicBool,
    /// Shared sessions: the state was read from the shared store since the
    /// slot was claimed (else the session is unknown).
    hydrated: AtomicBool,
    label_calls: [AtomicU32; MAX_LABELS],
    /// `tool hash << 32 | calls`.
    tools: [AtomicU64; TOOLS],
    /// `unix seconds << 32 | label bits`; 0: empty.
    ring: [AtomicU64; RING],
    ring_at: AtomicU32,
    /// Per counted argument, [`DISTINCT`] entries of `unix seconds << 32 | value hash`.
    distinct: Box<[AtomicU64]>,
}

impl Slot {
    fn new(distinct: usize) -> Self {
        Self {
            key: AtomicU64::new(0),
            started: AtomicU32::new(0),
            last: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
            calls: AtomicU32::new(0),
            labels: AtomicU32::new(0),
            last_labels: AtomicU32::new(0),
            overflow: AtomicBool::new(false),
            hydrated: AtomicBool::new(false),
            label_calls: std::array::from_fn(|_| AtomicU32::new(0)),
            tools: std::array::from_fn(|_| AtomicU64::new(0)),
            ring: std::array::from_fn(|_| AtomicU64::new(0)),
            ring_at: AtomicU32::new(0),
            distinct: (0..distinct * DISTINCT)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    fn clear(&self, now: u32) {
        self.started.store(now, SeqCst);
        self.last.store(now, SeqCst);
        self.calls.store(0, SeqCst);
        self.labels.store(0, SeqCst);
        self.last_labels.store(0, SeqCst);
        self.overflow.store(false, SeqCst);
        self.hydrated.store(false, SeqCst);
        self.ring_at.store(0, SeqCst);
        for a in &self.label_calls {
            a.store(0, SeqCst);
        }
        for a in self
            .tools
            .iter()
            .chain(&self.ring)
            .chain(self.distinct.iter())
        {
            a.store(0, SeqCst);
        }
    }
}

/// Every session of the process.
pub struct Sessions {
    slots: Box<[Slot]>,
    mask: usize,
    idle_s: u32,
    distinct: usize,
    hasher: std::collections::hash_map::RandomState,
    /// State is shared with other replicas: a session is known only once
    /// read from the shared store.
    shared: bool,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl Sessions {
    /// A table for `max_sessions` sessions idle out after `idle_s`
    /// seconds, counting the distinct values of `distinct` arguments.
    pub fn new(max_sessions: usize, idle_s: u64, distinct: usize) -> Self {
        let n = max_sessions.clamp(1, 1 << 20).next_power_of_two();
        let distinct = distinct.min(MAX_DISTINCT);
        Self {
            slots: (0..n).map(|_| Slot::new(distinct)).collect(),
            mask: n - 1,
            idle_s: u32::try_from(idle_s.max(1)).unwrap_or(u32::MAX),
            distinct,
            hasher: Default::default(),
            shared: false,
        }
    }

    /// The same table for state shared with other replicas: a session's
    /// calls are unknown until [`Sessions::install`] has read it in.
    pub fn shared(mut self) -> Self {
        self.shared = true;
        self
    }

    /// Whether the table's state is shared with other replicas.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    fn find(&self, key: u64) -> Option<usize> {
        let start = (key as usize) & self.mask;
        (0..PROBE.min(self.slots.len()))
            .map(|step| (start + step) & self.mask)
            .find(|&i| self.slots[i].key.load(SeqCst) == key)
    }

    /// Shared sessions: whether session `key` must be read from the shared
    /// store before a call at `now` is decided (not here, idle, or marked
    /// stale).
    pub fn needs_state(&self, key: u64, now: u64) -> bool {
        if !self.shared {
            return false;
        }
        let now = now_u32(now);
        match self.find(key) {
            None => true,
            Some(i) => {
                let s = &self.slots[i];
                !s.hydrated.load(SeqCst) || now.saturating_sub(s.last.load(SeqCst)) > self.idle_s
            }
        }
    }

    /// Marks session `key` stale: another replica recorded calls in it, so
    /// its next call reads it from the shared store again.
    pub fn mark_stale(&self, key: u64) {
        if let Some(i) = self.find(key) {
            self.slots[i].hydrated.store(false, SeqCst);
        }
    }

    /// The calls recorded in session `key` here, if it is here.
    pub fn calls(&self, key: u64) -> Option<u32> {
        self.find(key).map(|i| self.slots[i].calls.load(SeqCst))
    }

    /// Sets session `key` to `state`, as read from the shared store at
    /// `now`; `distinct` names the counted arguments in order. False when
    /// the session finds no room.
    pub fn install(
        &self,
        key: u64,
        now: u64,
        state: &super::shared::SharedState,
        distinct: &[Arc<str>],
    ) -> bool {
        let now = now_u32(now);
        let Some(i) = self.place(key, now) else {
            return false;
        };
        let s = &self.slots[i];
        let bits = |names: &[String]| {
            names
                .iter()
                .filter_map(|n| super::labels::bit(n))
                .fold(0u32, |b, x| b | x)
        };
        s.started.store(now_u32(state.started), SeqCst);
        s.calls.store(state.calls, SeqCst);
        let mut touched = 0;
        for c in &s.label_calls {
            c.store(0, SeqCst);
        }
        for (name, n) in &state.labels {
            if let Some(b) = super::labels::bit(name) {
                touched |= b;
                if let Some(c) = s.label_calls.get(b.trailing_zeros() as usize) {
                    c.store(*n, SeqCst);
                }
            }
        }
        s.labels.store(touched, SeqCst);
        s.last_labels.store(bits(&state.last), SeqCst);
        let overflow = state.tools.len() > TOOLS;
        for (slot, (name, n)) in s.tools.iter().zip(
            state
                .tools
                .iter()
                .map(|(t, n)| (self.value_hash(t.as_bytes()), *n))
                .chain(std::iter::repeat((0, 0))),
        ) {
            slot.store(
                if name == 0 {
                    0
                } else {
                    u64::from(name) << 32 | u64::from(n)
                },
                SeqCst,
            );
        }
        let ring = &state.ring[state.ring.len().saturating_sub(RING)..];
        for (slot, at) in s.ring.iter().zip(0..) {
            let v = ring.get(at).map_or(0, |(t, names)| {
                u64::from(now_u32(*t)) << 32 | u64::from(bits(names))
            });
            slot.store(v, SeqCst);
        }
        s.ring_at.store(ring.len() as u32 % RING as u32, SeqCst);
        for (a, name) in distinct.iter().enumerate().take(self.distinct) {
            let entries = &s.distinct[a * DISTINCT..(a + 1) * DISTINCT];
            let values = state
                .distinct
                .iter()
                .find(|(n, _)| **n == **name)
                .map(|(_, v)| v.as_slice())
                .unwrap_or(&[]);
            for (e, at) in entries.iter().zip(0..) {
                let v = values
                    .get(at)
                    .map_or(0, |(h, t)| u64::from(now_u32(*t)) << 32 | u64::from(*h));
                e.store(v, SeqCst);
            }
        }
        s.overflow.store(overflow, SeqCst);
        s.hydrated.store(true, SeqCst);
        true
    }

    /// The session key of `parts` (each length-prefixed, so no two lists
    /// collide by concatenation), hashed with a key of this process: a
    /// caller cannot aim at another session's slot.
    pub fn key(&self, parts: &[&[u8]]) -> u64 {
        let mut h = self.hasher.build_hasher();
        for p in parts {
            h.write_usize(p.len());
            h.write(p);
        }
        match h.finish() {
            0 | BUSY => 1,
            k => k,
        }
    }

    /// Hash of a value (a tool name, an argument's value) as sessions keep it.
    pub fn value_hash(&self, bytes: &[u8]) -> u32 {
        let mut h = self.hasher.build_hasher();
        h.write(bytes);
        (h.finish() as u32).max(1)
    }

    /// Enters a call of session `key` at `now` (unix seconds): the
    /// session's slot (claimed if new or idle past the timeout), counted as
    /// in flight until the returned [`Entry`] is committed or dropped.
    /// No room: an entry whose facts are unknown.
    pub fn enter(self: &Arc<Self>, key: u64, now: u64) -> Entry {
        let now = now_u32(now);
        let slot = self.place(key, now);
        let in_flight = match slot {
            Some(i) => self.slots[i].in_flight.fetch_add(1, SeqCst),
            None => 0,
        };
        Entry {
            table: Arc::clone(self),
            slot,
            key,
            now,
            in_flight,
        }
    }

    fn place(&self, key: u64, now: u32) -> Option<usize> {
        let start = (key as usize) & self.mask;
        let mut free = None;
        let mut busy = false;
        for step in 0..PROBE.min(self.slots.len()) {
            let i = (start + step) & self.mask;
            let s = &self.slots[i];
            match s.key.load(SeqCst) {
                k if k == key => {
                    let last = s.last.load(SeqCst);
                    if now.saturating_sub(last) > self.idle_s {
                        // Over: it starts again, as a new session would.
                        if s.key.compare_exchange(key, BUSY, SeqCst, SeqCst).is_ok() {
                            s.clear(now);
                            s.key.store(key, SeqCst);
                            return Some(i);
                        }
                        return None;
                    }
                    s.last.fetch_max(now, SeqCst);
                    // A reset that raced this call sees `last` fresh and
                    // backs off; if it won first, the key is gone: unknown.
                    return (s.key.load(SeqCst) == key).then_some(i);
                }
                0 if free.is_none() => free = Some(i),
                BUSY => busy = true,
                k if free.is_none() && k != 0 => {
                    let last = s.last.load(SeqCst);
                    if now.saturating_sub(last) > self.idle_s
                        && s.in_flight.load(SeqCst) == 0
                        && s.key.compare_exchange(k, BUSY, SeqCst, SeqCst).is_ok()
                    {
                        if now.saturating_sub(s.last.load(SeqCst)) > self.idle_s {
                            s.key.store(0, SeqCst);
                            free = Some(i);
                        } else {
                            // A call of that session touched it meanwhile.
                            s.key.store(k, SeqCst);
                        }
                    }
                }
                _ => {}
            }
        }
        // A slot being claimed may be this session's first call on another
        // shard: a second slot would split the session, so this call is
        // unknown instead.
        if busy {
            return None;
        }
        let i = free?;
        let s = &self.slots[i];
        if s.key.compare_exchange(0, BUSY, SeqCst, SeqCst).is_err() {
            return None;
        }
        s.clear(now);
        s.key.store(key, SeqCst);
        Some(i)
    }

    fn read(&self, i: usize, key: u64, tool: u32, now: u32, in_flight: u32) -> SessionFacts {
        let s = &self.slots[i];
        let mut f = SessionFacts::unknown(key);
        f.known = !s.overflow.load(SeqCst) && (!self.shared || s.hydrated.load(SeqCst));
        f.in_flight = in_flight;
        f.calls = s.calls.load(SeqCst);
        f.labels = s.labels.load(SeqCst);
        f.last_labels = s.last_labels.load(SeqCst);
        f.age_s = now.saturating_sub(s.started.load(SeqCst));
        for (to, from) in f.label_calls.iter_mut().zip(&s.label_calls) {
            *to = from.load(SeqCst);
        }
        f.tool_calls = s
            .tools
            .iter()
            .map(|t| t.load(SeqCst))
            .find(|t| (t >> 32) as u32 == tool)
            .map_or(0, |t| t as u32);
        for e in &s.ring {
            let e = e.load(SeqCst);
            let at = (e >> 32) as u32;
            if at == 0 {
                continue;
            }
            let age = now.saturating_sub(at);
            let bits = e as u32;
            if age < 3600 {
                f.calls_last_hour += 1;
                count_bits(bits, &mut f.label_calls_last_hour);
            }
            if age < 60 {
                f.calls_last_minute += 1;
                count_bits(bits, &mut f.label_calls_last_minute);
            }
        }
        for (a, n) in f
            .distinct_last_hour
            .iter_mut()
            .enumerate()
            .take(self.distinct)
        {
            *n = s.distinct[a * DISTINCT..(a + 1) * DISTINCT]
                .iter()
                .filter(|e| {
                    let at = (e.load(SeqCst) >> 32) as u32;
                    at != 0 && now.saturating_sub(at) < 3600
                })
                .count() as u32;
        }
        f
    }

    fn record(&self, i: usize, call: &Recorded, now: u32) {
        let s = &self.slots[i];
        s.calls.fetch_add(1, SeqCst);
        s.labels.fetch_or(call.labels, SeqCst);
        s.last_labels.store(call.labels, SeqCst);
        s.last.fetch_max(now, SeqCst);
        let mut bits = call.labels;
        while bits != 0 {
            let b = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if let Some(c) = s.label_calls.get(b) {
                c.fetch_add(1, SeqCst);
            }
        }
        if !bump_tool(&s.tools, call.tool) {
            s.overflow.store(true, SeqCst);
        }
        let at = s.ring_at.fetch_add(1, SeqCst) as usize % RING;
        s.ring[at].store(u64::from(now) << 32 | u64::from(call.labels), SeqCst);
        for (a, &v) in call.distinct.iter().enumerate().take(self.distinct) {
            if v != 0 {
                note_value(&s.distinct[a * DISTINCT..(a + 1) * DISTINCT], v, now);
            }
        }
    }
}

fn count_bits(mut bits: u32, into: &mut [u32; MAX_LABELS]) {
    while bits != 0 {
        let b = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        if let Some(c) = into.get_mut(b) {
            *c += 1;
        }
    }
}

/// Counts a call of `tool`; false when the session counts too many tools.
fn bump_tool(tools: &[AtomicU64; TOOLS], tool: u32) -> bool {
    for t in tools {
        let mut cur = t.load(SeqCst);
        loop {
            if cur == 0 {
                match t.compare_exchange(0, u64::from(tool) << 32 | 1, SeqCst, SeqCst) {
                    Ok(_) => return true,
                    Err(now) => cur = now,
                }
                continue;
            }
            if (cur >> 32) as u32 == tool {
                t.fetch_add(1, SeqCst);
                return true;
            }
            break;
        }
    }
    false
}

/// Notes `value` seen at `now` among an argument's recent values; when
/// all are taken by values of the last hour the count stays at its cap.
fn note_value(entries: &[AtomicU64], value: u32, now: u32) {
    let fresh = u64::from(now) << 32 | u64::from(value);
    for e in entries {
        let cur = e.load(SeqCst);
        if cur != 0 && cur as u32 == value {
            e.fetch_max(fresh, SeqCst);
            return;
        }
    }
    for e in entries {
        let cur = e.load(SeqCst);
        let at = (cur >> 32) as u32;
        if (cur == 0 || now.saturating_sub(at) >= 3600)
            && e.compare_exchange(cur, fresh, SeqCst, SeqCst).is_ok()
        {
            return;
        }
    }
}

fn now_u32(now: u64) -> u32 {
    u32::try_from(now).unwrap_or(u32::MAX).max(1)
}

/// One call's place in its session, from before its decision until it is
/// recorded or refused. While it lives the call counts in the session's
/// `in_flight` for every other call.
pub struct Entry {
    table: Arc<Sessions>,
    slot: Option<usize>,
    key: u64,
    now: u32,
    in_flight: u32,
}

impl Entry {
    /// The session's facts as this call's decision sees them (`tool`: the
    /// called tool's [`Sessions::value_hash`]). Unknown when the session
    /// found no room or outgrew its state.
    pub fn facts(&self, tool: u32) -> SessionFacts {
        match self.slot {
            Some(i) => self.table.read(i, self.key, tool, self.now, self.in_flight),
            None => SessionFacts::unknown(self.key),
        }
    }

    /// The session key.
    pub fn key(&self) -> u64 {
        self.key
    }

    /// Records the admitted call in its session and leaves it; the
    /// session's calls recorded here after it.
    pub fn commit(mut self, call: &Recorded) -> u32 {
        let mut calls = 0;
        if let Some(i) = self.slot.take() {
            let s = &self.table.slots[i];
            if s.key.load(SeqCst) == self.key {
                self.table.record(i, call, self.now);
                calls = s.calls.load(SeqCst);
            }
            s.in_flight.fetch_sub(1, SeqCst);
        }
        calls
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            self.table.slots[i].in_flight.fetch_sub(1, SeqCst);
        }
    }
}
