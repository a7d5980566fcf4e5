//! Quotas shared by replicas through Redis, with no network round trip on
//! the request path.
//!
//! Each replica spends units from a local allowance (`granted`, per
//! counter and window) and a sync thread tops it up from Redis, `lease`
//! units at a time, with `INCRBY` on one key per counter and window: the
//! key counts what every replica took, and a replica keeps only the part of
//! a lease that fits under the quota. The first lease of a window is
//! granted before Redis confirms it, so a call never waits for Redis; that
//! is the whole overshoot: at most `lease` units per replica per window.
//! An allowance is topped up when it runs under half a lease, so a replica
//! whose traffic outruns one Redis round trip may refuse a call early
//! (retry in a second) rather than let one through unpaid.
//!
//! While Redis cannot be reached, a replica grants itself at most its
//! share of each quota (`units / replicas`) — never unlimited — logs it,
//! and remembers what it granted; when Redis is back, those units are
//! added to the shared counts before anything else.
//!
//! Rates are shared the same way, in calls rather than units: one GCRA
//! bucket per counter lives in Redis (`toolgate:rate:{rule}:{values}`,
//! the theoretical arrival time in Redis's own clock, moved by a short Lua
//! script). A replica reserves up to a lease of calls from it at a time (at
//! most `burst / (2 × replicas)` calls), spends them within the next
//! second, and reserves more when it holds under half a lease. With none
//! reserved, a call passes if this replica's share of the rate lets it
//! (`calls_per_s / replicas` with a burst of `burst / replicas`, a local
//! GCRA) and is paid for in the shared bucket afterwards, whatever the
//! bucket says: so a call never waits for Redis, and every call let
//! through is counted where the other replicas see it. A bucket pushed
//! into debt by such payments refuses everyone's reservations until it is
//! paid off, which leaves each replica its share. That is the whole
//! overshoot: the shares' bursts (about one `burst`) over `rate × t +
//! burst` for any stretch of time `t`. Without Redis a replica holds each
//! rate to its share.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use toolgate_core::config::RedisSetup;

use crate::redis::{Client, Reply};
use crate::table::{RateShare, Slot, Table};
use crate::USED_MASK;

/// Bits of `granted` holding units; the rest hold the window's tag.
const BITS: u32 = crate::USED_BITS;
/// `flags`: more units are asked for.
pub(crate) const REQUESTED: u64 = 1;
/// `flags`: Redis has none left for this window.
pub(crate) const EXHAUSTED: u64 = 2;

/// A request to the sync thread: top up (or pay for) one counter's
/// allowance.
#[derive(Debug)]
pub(crate) struct Refill {
    /// The counter's index in the table.
    pub slot: usize,
    /// Its Redis key (the same on every replica).
    pub key: String,
    /// What is asked for.
    pub ask: Ask,
}

/// What a [`Refill`] asks for.
#[derive(Debug)]
pub(crate) enum Ask {
    /// Units of a quota, for one window.
    Quota(QuotaAsk),
    /// Calls of a rate.
    Rate(RateAsk),
}

/// Units of a quota, for one window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QuotaAsk {
    /// The quota's units per window.
    pub units: u64,
    /// Units asked for.
    pub amount: u64,
    /// The window's tag, as in the counter.
    pub tag: u64,
    /// The window's end (Unix seconds).
    pub window_end: u64,
    /// The first lease of the window, already granted: pay for it.
    pub pay: bool,
}

/// Calls of a rate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateAsk {
    /// Microseconds per call.
    pub interval_us: u64,
    /// How far ahead of now the bucket may run (µs): `(burst - 1) ×
    /// interval`.
    pub tolerance_us: u64,
    /// Calls asked for (a payment: what the counter owes by then).
    pub amount: u64,
    /// Pay for the calls already let through, whatever the bucket says.
    pub pay: bool,
}

impl Refill {
    /// The tag its counter's flags carry: the quota's window, or 0.
    fn tag(&self) -> u64 {
        match self.ask {
            Ask::Quota(QuotaAsk { tag, .. }) => tag,
            Ask::Rate(_) => 0,
        }
    }
}

/// Reserves up to ARGV[3] calls from the GCRA bucket at KEYS[1] (its
/// theoretical arrival time, µs of Redis's clock), each call ARGV[1] µs,
/// the bucket allowed ARGV[2] µs ahead of now; ARGV[4] = "1" takes them
/// all whatever the bucket says (calls already let through). Returns the
/// calls reserved × 2^32 + the µs until the bucket has room for one more
/// (0 when it has room now), capped at 2^32 - 1.
const RESERVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local inc = tonumber(ARGV[1])
local tol = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local k = n
if ARGV[4] ~= '1' then
  if tat > now + tol then k = 0 else k = math.min(n, math.floor((now + tol - tat) / inc) + 1) end
end
if k > 0 then
  tat = tat + k * inc
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
end
local wait = tat - now - tol
if wait < 0 then wait = 0 end
if wait > 4294967295 then wait = 4294967295 end
return k * 4294967296 + wait
";

/// The link from the request path to the sync thread.
pub struct Sharing {
    tx: SyncSender<Refill>,
    pub(crate) lease: u64,
    /// Replicas sharing the limits.
    pub(crate) replicas: u64,
    up: Arc<AtomicBool>,
}

impl std::fmt::Debug for Sharing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sharing")
            .field("lease", &self.lease)
            .field("replicas", &self.replicas)
            .field("redis_up", &self.redis_up())
            .finish()
    }
}

impl Sharing {
    /// Whether Redis answered the last exchange.
    pub fn redis_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Calls a rate with `burst` reserves at a time: at most half its
    /// burst split among the replicas, at most `lease`, at least one.
    pub(crate) fn rate_lease(&self, burst: u64) -> u64 {
        (burst / (2 * self.replicas.max(1))).clamp(1, self.lease.max(1))
    }

    /// Asks for `r` unless a request for this counter and window is in
    /// flight, or Redis said there is none left.
    pub(crate) fn ask(&self, slot: &Slot, r: Refill) {
        let tag = r.tag();
        let mut f = slot.flags.load(Ordering::Acquire);
        loop {
            let current = if f >> 2 == tag { f & 3 } else { 0 };
            if current & (REQUESTED | EXHAUSTED) != 0 {
                return;
            }
            match slot.flags.compare_exchange_weak(
                f,
                (tag << 2) | REQUESTED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(seen) => f = seen,
            }
        }
        if let Err(TrySendError::Full(r) | TrySendError::Disconnected(r)) = self.tx.try_send(r) {
            // Not queued: let a later call ask again.
            clear(slot, r.tag(), REQUESTED);
        }
    }

    /// Sends the payment for the calls a shared rate's counter owes (the
    /// sync thread pays what is owed when it gets to it, so payments for
    /// many calls go in one exchange): never held back by a request in
    /// flight.
    pub(crate) fn pay(&self, share: &RateShare, r: Refill) {
        if let Err(TrySendError::Full(r) | TrySendError::Disconnected(r)) = self.tx.try_send(r) {
            let unpaid = share.owed.swap(0, Ordering::AcqRel);
            tracing::warn!(key = %r.key, unpaid, "the Redis sync is behind; calls let through go unpaid");
        }
    }
}

#[cfg(test)]
impl Sharing {
    /// A link whose requests the test reads itself, Redis reachable or not.
    pub(crate) fn detached(lease: u64, replicas: u64, up: bool) -> (Self, Receiver<Refill>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        let up = Arc::new(AtomicBool::new(up));
        (
            Self {
                tx,
                lease,
                replicas,
                up,
            },
            rx,
        )
    }
}

/// Whether `flag` is set for window `tag`.
pub(crate) fn has(slot: &Slot, tag: u64, flag: u64) -> bool {
    let f = slot.flags.load(Ordering::Acquire);
    f >> 2 == tag && f & flag != 0
}

fn set(slot: &Slot, tag: u64, flag: u64) {
    let _ = slot
        .flags
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| {
            Some(if f >> 2 == tag {
                f | flag
            } else {
                (tag << 2) | flag
            })
        });
}

fn clear(slot: &Slot, tag: u64, flag: u64) {
    let _ = slot
        .flags
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| {
            (f >> 2 == tag).then_some(f & !flag)
        });
}

/// Changes the allowance of `slot` for window `tag` by `f` (nothing when
/// the counter moved on to another window).
fn adjust(slot: &Slot, tag: u64, f: impl Fn(u64) -> u64) {
    let _ = slot
        .granted
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |g| {
            (g >> BITS == tag).then(|| (tag << BITS) | (f(g & USED_MASK) & USED_MASK))
        });
}

/// Starts the sync thread for `setup` over `table`.
pub fn start(setup: RedisSetup, table: Arc<Table>) -> std::io::Result<Sharing> {
    let (tx, rx) = std::sync::mpsc::sync_channel(8192);
    let up = Arc::new(AtomicBool::new(false));
    let sharing = Sharing {
        tx,
        lease: setup.lease,
        replicas: setup.replicas,
        up: Arc::clone(&up),
    };
    std::thread::Builder::new()
        .name("limits-redis".into())
        .spawn(move || Sync::new(setup, table, up).run(rx))?;
    Ok(sharing)
}

/// The sync thread's state.
struct Sync {
    setup: RedisSetup,
    table: Arc<Table>,
    up: Arc<AtomicBool>,
    client: Option<Client>,
    /// When a connection was last tried.
    tried: Option<Instant>,
    /// Units granted while Redis was unreachable, by key: (units, window end).
    owed: HashMap<String, (u64, u64)>,
    /// Whether the current outage was logged.
    told_down: bool,
}

impl Sync {
    fn new(setup: RedisSetup, table: Arc<Table>, up: Arc<AtomicBool>) -> Self {
        Self {
            setup,
            table,
            up,
            client: None,
            tried: None,
            owed: HashMap::new(),
            told_down: false,
        }
    }

    fn run(mut self, rx: Receiver<Refill>) {
        self.reconnect();
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(r) => self.refill(r),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if self.client.is_none() {
                self.reconnect();
            }
        }
    }

    /// Connects (at most once a second), then pays what was granted while
    /// Redis was away.
    fn reconnect(&mut self) {
        if self
            .tried
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.tried = Some(Instant::now());
        match Client::open(&self.setup) {
            Err(crate::redis::RedisError::Password(e)) => {
                tracing::error!(error = %e, "cannot read the Redis password; quotas stay local");
            }
            Ok(mut c) => {
                let now = now_s();
                let owed = std::mem::take(&mut self.owed);
                let n = owed.len();
                for (key, (units, end)) in owed {
                    if end <= now {
                        continue;
                    }
                    if let Err(e) = c
                        .incr_by(&key, units)
                        .and_then(|_| c.expire_at(&key, end + 3_600))
                    {
                        tracing::warn!(error = %e, "Redis failed while resynchronising quota counts");
                        self.owed.insert(key, (units, end));
                        self.mark_down();
                        return;
                    }
                }
                self.told_down = false;
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        resynchronised = n,
                        "Redis reachable: quotas are shared across replicas"
                    );
                }
                self.client = Some(c);
            }
            Err(e) => {
                self.up.store(false, Ordering::Relaxed);
                // Once per outage, not once per retry.
                if !self.told_down {
                    self.told_down = true;
                    tracing::warn!(error = %e, "Redis unreachable: each quota is held to this replica's share");
                }
            }
        }
    }

    fn mark_down(&mut self) {
        self.client = None;
        if self.up.swap(false, Ordering::Relaxed) {
            self.told_down = true;
            tracing::error!(
                "lost Redis: each quota is held to this replica's share until it is back"
            );
        }
    }

    fn refill(&mut self, r: Refill) {
        let table = Arc::clone(&self.table);
        let Some(slot) = table.at(r.slot) else {
            return;
        };
        match &r.ask {
            Ask::Quota(q) => self.refill_quota(slot, &r.key, q),
            Ask::Rate(rate) => {
                if let Some(share) = table.share(r.slot) {
                    self.refill_rate(slot, share, &r.key, rate);
                }
            }
        }
        clear(slot, r.tag(), REQUESTED);
    }

    fn refill_quota(&mut self, slot: &Slot, key: &str, q: &QuotaAsk) {
        let QuotaAsk {
            units,
            amount,
            tag,
            window_end,
            pay,
        } = *q;
        let shared = match self.client.as_mut() {
            Some(c) => match c.incr_by(key, amount) {
                Ok(total) => {
                    if pay {
                        let _ = c.expire_at(key, window_end + 3_600);
                    }
                    Some(u64::try_from(total).unwrap_or(0))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Redis exchange failed");
                    self.mark_down();
                    None
                }
            },
            None => None,
        };
        match shared {
            Some(total) => {
                let before = total.saturating_sub(amount);
                let fit = units.saturating_sub(before).min(amount);
                if pay {
                    adjust(slot, tag, |g| g.saturating_sub(amount - fit));
                } else {
                    adjust(slot, tag, |g| g + fit);
                }
                if fit < amount {
                    set(slot, tag, EXHAUSTED);
                }
            }
            None => self.grant_offline(slot, key, q),
        }
    }

    /// Reserves calls of a rate in its shared bucket. Without Redis there
    /// is nothing to do: the replica holds the rate to its share until
    /// Redis is back, and a rate's bucket drains within its burst anyway.
    fn refill_rate(&mut self, slot: &Slot, share: &RateShare, key: &str, rate: &RateAsk) {
        let RateAsk {
            interval_us,
            tolerance_us,
            amount,
            pay,
        } = *rate;
        let amount = if pay {
            share.owed.swap(0, Ordering::AcqRel)
        } else {
            amount
        };
        let Some(c) = self.client.as_mut().filter(|_| amount > 0) else {
            return;
        };
        let (interval, tolerance, n) = (
            interval_us.to_string(),
            tolerance_us.to_string(),
            amount.to_string(),
        );
        let args: [&[u8]; 4] = [
            interval.as_bytes(),
            tolerance.as_bytes(),
            n.as_bytes(),
            if pay { b"1" } else { b"0" },
        ];
        match c.eval(RESERVE, &[key.as_bytes()], &args) {
            Ok(Reply::Int(v)) => {
                let v = u64::try_from(v).unwrap_or(0);
                let (k, wait_us) = (v >> 32, v & 0xFFFF_FFFF);
                let now = now_ns();
                if !pay && k > 0 {
                    grant_calls(slot, k, now / 1_000_000_000);
                }
                share.hold.store(now + wait_us * 1_000, Ordering::Release);
            }
            Ok(other) => {
                tracing::warn!(reply = ?other, "unexpected reply from Redis to a rate reservation");
            }
            Err(e) => {
                tracing::warn!(error = %e, "Redis exchange failed");
                self.mark_down();
            }
        }
    }

    /// Without Redis: at most this replica's share of the window.
    fn grant_offline(&mut self, slot: &Slot, key: &str, q: &QuotaAsk) {
        let share = (q.units / self.setup.replicas.max(1)).max(1);
        let g = slot.granted.load(Ordering::Acquire);
        if g >> BITS != q.tag {
            return;
        }
        let granted = g & USED_MASK;
        let extra = if q.pay {
            // The optimistic first lease: keep what fits in the share.
            let keep = q.amount.min(share);
            adjust(slot, q.tag, |g| g.saturating_sub(q.amount - keep));
            keep
        } else {
            let extra = q.amount.min(share.saturating_sub(granted));
            adjust(slot, q.tag, |g| g + extra);
            extra
        };
        if extra > 0 {
            let owed = self.owed.entry(key.to_owned()).or_insert((0, q.window_end));
            owed.0 += extra;
        }
    }
}

/// Bits of a shared rate's `granted` holding the calls; the rest hold the
/// second until which they may be made (its low bits).
const SECOND_MASK: u64 = (1 << (64 - BITS)) - 1;

/// Whether calls granted until second `until` (as stored) may still be
/// made in second `now_s`.
pub(crate) fn calls_live(until: u64, now_s: u64) -> bool {
    until.wrapping_sub(now_s) & SECOND_MASK <= 1
}

/// `granted` holding `calls` that may be made until the end of the second
/// after `now_s`.
pub(crate) fn calls_until_next_second(calls: u64, now_s: u64) -> u64 {
    (((now_s + 1) & SECOND_MASK) << BITS) | (calls & USED_MASK)
}

/// Adds `k` reserved calls to a shared rate's counter, to be made within
/// the next second (calls it still holds from before are kept if live).
pub(crate) fn grant_calls(slot: &Slot, k: u64, now_s: u64) {
    let _ = slot
        .granted
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |g| {
            let held = if calls_live(g >> BITS, now_s) {
                g & USED_MASK
            } else {
                0
            };
            Some(calls_until_next_second(held + k, now_s))
        });
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn now_s() -> u64 {
    now_ns() / 1_000_000_000
}
