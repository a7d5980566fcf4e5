//! One rule's counter for one call: taking a call's cost from it (a quota's
//! units in their window, a rate's arrival time, a shared counter's
//! reserved units) and giving it back when a later rule refuses the call.

use std::sync::atomic::Ordering;

use super::*;

/// One rule's counter for one call, and what a shared quota needs to
/// name it in Redis.
pub(crate) struct At<'a> {
    pub(crate) table: &'a Table,
    pub(crate) index: usize,
    pub(crate) slot: &'a table::Slot,
    pub(crate) sharing: Option<&'a Sharing>,
    pub(crate) values: &'a [Option<&'a str>; 5],
}

impl At<'_> {
    /// The counter's Redis key (`kind` "quota" with its window's `tag`, or
    /// "rate"): the same on every replica.
    pub(crate) fn redis_key(&self, rule: &Rule, kind: &str, tag: Option<u64>) -> String {
        let mut key = format!("toolgate:{kind}:{}", rule.id);
        if let Some(tag) = tag {
            key.push(':');
            key.push_str(&tag.to_string());
        }
        for (s, v) in rule.sel.iter().zip(self.values) {
            if !matches!(s, Sel::Absent) {
                key.push(':');
                key.push_str(v.unwrap_or(""));
            }
        }
        key
    }
}

/// Takes `tool`'s cost from one rule's counter: where the call stands and
/// what was taken (units, or the arrival time advance).
pub(crate) fn take_one(rule: &Rule, at: &At<'_>, tool: &str, now_ns: u64) -> Result<Left, Refused> {
    let slot = at.slot;
    match rule.kind {
        Kind::Quota {
            units,
            per,
            ref calendar,
        } => {
            let cost = rule
                .cost
                .iter()
                .find(|(t, _)| &**t == tool)
                .map_or(1, |(_, c)| *c);
            let now_s = now_ns / 1_000_000_000;
            let w = calendar.window(per, now_s);
            let (end, window_s) = (w.end, w.end - w.start);
            let tag = w.id & ((1 << (64 - USED_BITS)) - 1);
            let reset_s = end.saturating_sub(now_s).max(1);
            // Shared: what this replica may use of the window, its first
            // lease granted now and paid for by the sync thread.
            let (limit, sharing) = match at.sharing {
                None => (units, None),
                Some(sh) => {
                    let first = sh.lease.min(units);
                    let g = slot.granted.load(Ordering::Acquire);
                    if g >> USED_BITS != tag
                        && slot
                            .granted
                            .compare_exchange(
                                g,
                                (tag << USED_BITS) | first,
                                Ordering::AcqRel,
                                Ordering::Acquire,
                            )
                            .is_ok()
                    {
                        sh.ask(
                            slot,
                            shared::Refill {
                                slot: at.index,
                                key: at.redis_key(rule, "quota", Some(tag)),
                                ask: shared::Ask::Quota(shared::QuotaAsk {
                                    units,
                                    amount: first,
                                    tag,
                                    window_end: end,
                                    pay: true,
                                }),
                            },
                        );
                    }
                    let granted = slot.granted.load(Ordering::Acquire) & USED_MASK;
                    (granted.min(units), Some(sh))
                }
            };
            let top_up = |sh: &Sharing| {
                sh.ask(
                    slot,
                    shared::Refill {
                        slot: at.index,
                        key: at.redis_key(rule, "quota", Some(tag)),
                        ask: shared::Ask::Quota(shared::QuotaAsk {
                            units,
                            amount: sh.lease,
                            tag,
                            window_end: end,
                            pay: false,
                        }),
                    },
                )
            };
            let mut v = slot.value.load(Ordering::Acquire);
            loop {
                let used = if v >> USED_BITS == tag {
                    v & USED_MASK
                } else {
                    0
                };
                let left = |remaining| Left {
                    limit: units,
                    window_s,
                    remaining,
                    reset_s,
                    amount: cost,
                };
                if used.saturating_add(cost) > limit {
                    // Under a shared quota that Redis may still have units
                    // of: ask for them, and refuse this call for a second.
                    let more = sharing
                        .filter(|_| limit < units && !shared::has(slot, tag, shared::EXHAUSTED));
                    if let Some(sh) = more {
                        top_up(sh);
                    }
                    return Err(Refused::Exceeded {
                        standing: left(limit.saturating_sub(used)).standing(rule),
                        quota: true,
                        retry_after_s: if more.is_some() { 1 } else { reset_s },
                    });
                }
                let next = (tag << USED_BITS) | (used + cost);
                match slot
                    .value
                    .compare_exchange_weak(v, next, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => {
                        let remaining = limit - used - cost;
                        if let Some(sh) = sharing {
                            if limit < units && remaining < sh.lease.div_ceil(2) + cost {
                                top_up(sh);
                            }
                        }
                        return Ok(left(remaining));
                    }
                    Err(seen) => v = seen,
                }
            }
        }
        Kind::Rate {
            interval_ns,
            tolerance_ns,
            burst,
        } => match at.sharing {
            None => gcra(rule, &slot.value, interval_ns, tolerance_ns, burst, now_ns),
            Some(sh) => match at.table.share(at.index) {
                Some(share) => take_shared_rate(
                    rule,
                    at,
                    (sh, share),
                    (interval_ns, tolerance_ns, burst),
                    now_ns,
                ),
                // A table made without room for shared rates: this process's.
                None => gcra(rule, &slot.value, interval_ns, tolerance_ns, burst, now_ns),
            },
        },
    }
}

/// Gives back what a call took from a rule whose counter it passed, when
/// a later rule refused it.
pub(crate) fn give_back(rule: &Rule, slot: &table::Slot, amount: u64, now_ns: u64) {
    let mut v = slot.value.load(Ordering::Acquire);
    loop {
        let next = match rule.kind {
            Kind::Quota {
                per, ref calendar, ..
            } => {
                let w = calendar.window(per, now_ns / 1_000_000_000);
                let tag = w.id & ((1 << (64 - USED_BITS)) - 1);
                if v >> USED_BITS != tag {
                    return;
                }
                (tag << USED_BITS) | (v & USED_MASK).saturating_sub(amount)
            }
            // A reserved call of a shared rate goes back to this
            // replica's reserve.
            Kind::Rate { .. } if amount == 0 => {
                let _ = slot
                    .granted
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |g| {
                        (g & USED_MASK < USED_MASK).then_some(g + 1)
                    });
                return;
            }
            Kind::Rate { .. } => v.saturating_sub(amount),
        };
        match slot
            .value
            .compare_exchange_weak(v, next, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return,
            Err(seen) => v = seen,
        }
    }
}
