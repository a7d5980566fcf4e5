//! toolgate-limits: per-customer rates and quotas.
//!
//! Where it sits: `ingress` asks [`Limits::take`] once per `tools/call` (or
//! REST call) that attachment, policy and the judge allowed, just before
//! it is forwarded; a call over any limit is refused with 429 and costs
//! nothing. Handshakes, listings and calls refused earlier never count.
//!
//! A rule (`[[limits.rules]]`) is a rate (GCRA: calls per second with a
//! burst) or a quota (units per UTC calendar window, with per-tool costs),
//! with selectors on customer, agent, user, tool and upstream. Rules of the
//! same kind, window and selected dimensions form a family, and a call
//! takes the most specific rule of each family that matches it (a literal
//! value beats `*`), so `customer = "acme"` overrides a `customer = "*"`
//! default. Every rule taken must let the call pass; units taken from the
//! others are given back when one does not.
//!
//! Counters live in one lock-free [`table::Table`] for the whole process:
//! exact across shards, kept across reloads (a counter's key is the rule's
//! id and the call's values, so a reload that keeps a rule keeps its
//! counts), bounded in number. With `backend = "redis"`, quotas and
//! rates are shared with the other replicas ([`shared`]) without a network
//! round trip on the request path.
//!
//! Here: the rules and [`Limits::take`]; one rule's counter taken and given
//! back is `take.rs`, the rates' arithmetic (GCRA, a shared rate) `rate.rs`,
//! the keyed hash that places a counter `hash.rs`.

#![warn(missing_docs)]

mod hash;
mod rate;
pub mod redis;
pub mod shared;
pub mod table;
mod take;
pub mod window;

use std::hash::BuildHasher;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use toolgate_core::config::{LimitsConfig, Window};

use hash::{keyed_hash, mix};
use rate::{gcra, take_shared_rate};
pub use shared::Sharing;
pub use table::Table;
use take::{give_back, take_one, At};

/// Bits of a quota counter's value holding the units used; the rest hold
/// the window's number.
pub(crate) const USED_BITS: u32 = 40;
pub(crate) const USED_MASK: u64 = (1 << USED_BITS) - 1;

/// One call, as the limits see it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The customer it is attributed to.
    pub customer: &'a str,
    /// The agent.
    pub agent: &'a str,
    /// The end user, when known.
    pub user: Option<&'a str>,
    /// The tool, by exposed name.
    pub tool: &'a str,
    /// The upstream.
    pub upstream: &'a str,
}

/// Where a call stands under its tightest limit after it passed: what the
/// `RateLimit` headers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// The rule's id.
    pub id: Arc<str>,
    /// Units (or calls) per window.
    pub limit: u64,
    /// The window, seconds.
    pub window_s: u64,
    /// Units left in this window.
    pub remaining: u64,
    /// Seconds until the window (or the bucket) is full again.
    pub reset_s: u64,
}

/// What a call that passed took.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Passed {
    /// Where it stands under its tightest limit (`None`: no rule applies).
    pub tightest: Option<Standing>,
    /// The units its quotas charged it: the tool's cost (1 unless a rule
    /// weighs it), the largest where its quotas weigh the tool differently;
    /// 0 when no quota applies.
    pub units: u64,
}

/// One quota counter as usage reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaCounter {
    /// The rule's id.
    pub rule: Arc<str>,
    /// The selectors and values it counts (`customer` = `acme`…).
    pub key: Vec<(&'static str, String)>,
    /// The window.
    pub per: Window,
    /// Units per window.
    pub units: u64,
    /// Units taken in the current window.
    pub used: u64,
    /// Units left in it.
    pub remaining: u64,
    /// When the current window started (Unix seconds).
    pub window_start_s: u64,
    /// Seconds until it ends.
    pub reset_s: u64,
    /// Shared with other replicas on Redis (`used` and `remaining` are
    /// this replica's).
    pub shared: bool,
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// A rule does not let it pass.
    Exceeded {
        /// Where it stands under that rule (nothing remaining for it).
        standing: Standing,
        /// A quota (else a rate).
        quota: bool,
        /// Seconds until the call could pass.
        retry_after_s: u64,
    },
    /// No counter could be placed for it (`limits.max_counters` reached).
    TableFull,
}

enum Sel {
    /// Not part of the key: every call, one counter.
    Absent,
    /// Every call with a value, one counter per value.
    Any,
    /// Only this value.
    Is(Box<str>),
}

enum Kind {
    Rate {
        interval_ns: u64,
        tolerance_ns: u64,
        burst: u64,
    },
    Quota {
        units: u64,
        per: Window,
        /// UTC, or the rule's time zone.
        calendar: window::Calendar,
    },
}

struct Rule {
    id: Arc<str>,
    id_hash: u64,
    /// customer, agent, user, tool, upstream.
    sel: [Sel; 5],
    specificity: u8,
    kind: Kind,
    cost: Vec<(Box<str>, u64)>,
}

/// The selectors' names, in the order of [`Rule::sel`] and of a call's
/// values.
pub const SELECTORS: [&str; 5] = ["customer", "agent", "user", "tool", "upstream"];

impl Rule {
    /// What this rule's counter for a call with `values` counts.
    fn counter_name(&self, values: &[Option<&str>; 5]) -> table::CounterName {
        table::CounterName {
            rule: Arc::clone(&self.id),
            key: self
                .sel
                .iter()
                .zip(SELECTORS.iter().zip(values))
                .filter(|(s, _)| !matches!(s, Sel::Absent))
                .map(|(_, (name, v))| (*name, v.unwrap_or("").to_owned()))
                .collect(),
        }
    }

    fn matches(&self, values: &[Option<&str>; 5]) -> bool {
        self.sel.iter().zip(values).all(|(s, v)| match s {
            Sel::Absent => true,
            Sel::Any => v.is_some(),
            Sel::Is(want) => *v == Some(&**want),
        })
    }
}

/// The compiled rules over the process's counters.
pub struct Limits {
    rules: Vec<Rule>,
    /// Rule indexes per family, in configuration order.
    families: Vec<Vec<usize>>,
    table: Arc<Table>,
    /// Keys of the values' hash (from the process's random state), so a
    /// caller cannot choose values whose counters collide.
    seed: (u64, u64),
    /// With `backend = "redis"`: quotas and rates shared with the other
    /// replicas.
    sharing: Option<Arc<Sharing>>,
}

impl Limits {
    /// The counters for `cfg` (one table for the process's life).
    pub fn table(cfg: &LimitsConfig) -> Arc<Table> {
        Arc::new(Table::new(
            if cfg.rules.is_empty() {
                16
            } else {
                cfg.max_counters
            },
            cfg.backend == toolgate_core::config::LimitsBackend::Redis,
        ))
    }

    /// `cfg`'s rules over `table` (checked by the configuration loader),
    /// quotas and rates shared through `sharing` when given.
    pub fn new(
        cfg: &LimitsConfig,
        table: Arc<Table>,
        hasher: std::hash::RandomState,
        sharing: Option<Arc<Sharing>>,
    ) -> Self {
        let sel = |v: &Option<String>| match v.as_deref() {
            None => Sel::Absent,
            Some("*") => Sel::Any,
            Some(x) => Sel::Is(Box::from(x)),
        };
        let mut rules = Vec::with_capacity(cfg.rules.len());
        let mut shapes: Vec<(String, Vec<usize>)> = Vec::new();
        for r in &cfg.rules {
            let sel = [
                sel(&r.customer),
                sel(&r.agent),
                sel(&r.user),
                sel(&r.tool),
                sel(&r.upstream),
            ];
            let kind = match (&r.rate, &r.quota) {
                (Some(rate), _) => {
                    let interval_ns = (1e9 / rate.calls_per_s).max(1.0) as u64;
                    let burst = u64::from(
                        rate.burst
                            .unwrap_or(rate.calls_per_s.ceil().max(1.0) as u32),
                    );
                    Kind::Rate {
                        interval_ns,
                        tolerance_ns: interval_ns.saturating_mul(burst.saturating_sub(1)),
                        burst,
                    }
                }
                (None, Some(q)) => Kind::Quota {
                    units: q.units.min(USED_MASK),
                    per: q.per,
                    calendar: window::Calendar::new(zone(
                        q.time_zone.as_deref().or(cfg.time_zone.as_deref()),
                    )),
                },
                (None, None) => continue,
            };
            let mut shape = match &kind {
                Kind::Rate { .. } => String::from("rate"),
                Kind::Quota { per, .. } => format!("quota/{}", per.as_str()),
            };
            for (name, s) in SELECTORS.iter().zip(&sel) {
                if !matches!(s, Sel::Absent) {
                    shape.push('/');
                    shape.push_str(name);
                }
            }
            let index = rules.len();
            match shapes.iter_mut().find(|(s, _)| *s == shape) {
                Some((_, members)) => members.push(index),
                None => shapes.push((shape, vec![index])),
            }
            let id: Arc<str> = Arc::from(r.id.get_ref().as_str());
            rules.push(Rule {
                id_hash: hasher.hash_one(&*id) | 1,
                id,
                specificity: sel.iter().filter(|s| matches!(s, Sel::Is(_))).count() as u8,
                sel,
                kind,
                cost: r
                    .cost
                    .iter()
                    .map(|(t, c)| (Box::from(t.as_str()), *c))
                    .collect(),
            });
        }
        Self {
            rules,
            families: shapes.into_iter().map(|(_, m)| m).collect(),
            table,
            seed: (hasher.hash_one(0u64), hasher.hash_one(1u64) | 1),
            sharing,
        }
    }

    /// Whether there is any rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every quota counter this process has placed, where it stands at
    /// `now_ns` under its rule as configured now (counters of rules since
    /// removed or turned into rates are left out), in rule then key order.
    /// With quotas shared on Redis, `used` and `remaining` are this
    /// replica's: the calls it let through and the units it holds.
    pub fn quota_counters(&self, now_ns: u64) -> Vec<QuotaCounter> {
        let now_s = now_ns / 1_000_000_000;
        let mut out: Vec<QuotaCounter> = self
            .table
            .named()
            .into_iter()
            .filter_map(|(name, slot)| {
                let rule = self.rules.iter().find(|r| r.id == name.rule)?;
                let Kind::Quota {
                    units,
                    per,
                    ref calendar,
                } = rule.kind
                else {
                    return None;
                };
                let w = calendar.window(per, now_s);
                let tag = w.id & ((1 << (64 - USED_BITS)) - 1);
                let v = slot.value.load(Ordering::Acquire);
                let used = if v >> USED_BITS == tag {
                    v & USED_MASK
                } else {
                    0
                };
                let limit = match &self.sharing {
                    None => units,
                    Some(_) => {
                        let g = slot.granted.load(Ordering::Acquire);
                        if g >> USED_BITS == tag {
                            (g & USED_MASK).min(units)
                        } else {
                            0
                        }
                    }
                };
                Some(QuotaCounter {
                    rule: name.rule,
                    key: name.key,
                    per,
                    units,
                    used,
                    remaining: limit.saturating_sub(used),
                    window_start_s: w.start,
                    reset_s: w.end.saturating_sub(now_s).max(1),
                    shared: self.sharing.is_some(),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.rule, &a.key).cmp(&(&b.rule, &b.key)));
        out
    }

    /// Takes `call` from every rule that applies to it at `now_ns` (Unix
    /// nanoseconds): `Ok` with where it stands under the tightest one and
    /// the units it was charged, or why it is refused — and then it took
    /// nothing.
    pub fn take(&self, call: &Call<'_>, now_ns: u64) -> Result<Passed, Refused> {
        if self.rules.is_empty() {
            return Ok(Passed::default());
        }
        let values = [
            Some(call.customer),
            Some(call.agent),
            call.user,
            Some(call.tool),
            Some(call.upstream),
        ];
        let mut hashes: [Option<u64>; 5] = [None; 5];
        // What was taken, to give back if a later rule refuses: on the
        // stack for the usual few families, spilling over beyond eight.
        let mut taken: [Option<(usize, &table::Slot, u64)>; 8] = [None; 8];
        let mut spilled: Vec<(usize, &table::Slot, u64)> = Vec::new();
        let mut n_taken = 0;
        let mut tightest: Option<(usize, Left)> = None;
        let mut units = 0;
        for family in &self.families {
            let Some(&rule_i) = family
                .iter()
                .filter(|&&i| self.rules[i].matches(&values))
                .max_by_key(|&&i| (self.rules[i].specificity, std::cmp::Reverse(i)))
            else {
                continue;
            };
            let rule = &self.rules[rule_i];
            let mut key = rule.id_hash;
            for (d, s) in rule.sel.iter().enumerate() {
                if matches!(s, Sel::Absent) {
                    continue;
                }
                let h = *hashes[d].get_or_insert_with(|| {
                    keyed_hash(self.seed, values[d].unwrap_or("").as_bytes())
                });
                key = mix(key, h);
            }
            let result =
                self.table
                    .slot(key)
                    .ok_or(Refused::TableFull)
                    .and_then(|(index, slot, fresh)| {
                        if fresh && matches!(rule.kind, Kind::Quota { .. }) {
                            self.table.name(key, rule.counter_name(&values));
                        }
                        let at = At {
                            table: &self.table,
                            index,
                            slot,
                            sharing: self.sharing.as_deref(),
                            values: &values,
                        };
                        take_one(rule, &at, call.tool, now_ns).map(|s| (slot, s))
                    });
            match result {
                Ok((slot, left)) => {
                    if matches!(rule.kind, Kind::Quota { .. }) {
                        units = units.max(left.amount);
                    }
                    if n_taken < taken.len() {
                        taken[n_taken] = Some((rule_i, slot, left.amount));
                        n_taken += 1;
                    } else {
                        spilled.push((rule_i, slot, left.amount));
                    }
                    if tightest
                        .as_ref()
                        .is_none_or(|(_, t)| left.remaining < t.remaining)
                    {
                        tightest = Some((rule_i, left));
                    }
                }
                Err(refused) => {
                    for (i, slot, amount) in taken.iter().flatten().chain(&spilled) {
                        give_back(&self.rules[*i], slot, *amount, now_ns);
                    }
                    return Err(refused);
                }
            }
        }
        Ok(Passed {
            tightest: tightest.map(|(i, left)| left.standing(&self.rules[i])),
            units,
        })
    }
}

/// What a rule's counter says after a call was taken from it.
#[derive(Debug, Clone, Copy)]
struct Left {
    limit: u64,
    window_s: u64,
    remaining: u64,
    reset_s: u64,
    /// What was taken (units, or the arrival time's advance).
    amount: u64,
}

impl Left {
    fn standing(self, rule: &Rule) -> Standing {
        Standing {
            id: Arc::clone(&rule.id),
            limit: self.limit,
            window_s: self.window_s,
            remaining: self.remaining,
            reset_s: self.reset_s,
        }
    }
}

/// The time zone named `name` (checked by the configuration loader; UTC
/// when absent, `UTC`, or — should the host's tz database have changed
/// since — not found, which is logged).
fn zone(name: Option<&str>) -> Option<jiff::tz::TimeZone> {
    let name = name.filter(|n| *n != "UTC")?;
    match jiff::tz::TimeZone::get(name) {
        Ok(z) => Some(z),
        Err(e) => {
            tracing::error!(time_zone = name, error = %e, "quota time zone not found; counting its windows in UTC");
            None
        }
    }
}

#[cfg(test)]
mod tests;
