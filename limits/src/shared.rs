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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use toolgate_core::config::RedisSetup;

use crate::redis::Client;
use crate::table::{Slot, Table};
use crate::USED_MASK;

/// Bits of `granted` holding units; the rest hold the window's tag.
const BITS: u32 = crate::USED_BITS;
/// `flags`: more units are asked for.
pub(crate) const REQUESTED: u64 = 1;
/// `flags`: Redis has none left for this window.
pub(crate) const EXHAUSTED: u64 = 2;

/// A request to the sync thread: top up (or pay for) one counter's
/// allowance for one window.
#[derive(Debug)]
pub(crate) struct Refill {
    /// The counter's index in the table.
    pub slot: usize,
    /// Its Redis key (the same on every replica).
    pub key: String,
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

/// The link from the request path to the sync thread.
pub struct Sharing {
    tx: SyncSender<Refill>,
    pub(crate) lease: u64,
    up: Arc<AtomicBool>,
}

impl std::fmt::Debug for Sharing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sharing")
            .field("lease", &self.lease)
            .field("redis_up", &self.redis_up())
            .finish()
    }
}

impl Sharing {
    /// Whether Redis answered the last exchange.
    pub fn redis_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Asks for `r` unless a request for this counter and window is in
    /// flight, or Redis said there is none left.
    pub(crate) fn ask(&self, slot: &Slot, r: Refill) {
        let tag = r.tag;
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
            clear(slot, r.tag, REQUESTED);
        }
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
        let shared = match self.client.as_mut() {
            Some(c) => match c.incr_by(&r.key, r.amount) {
                Ok(total) => {
                    if r.pay {
                        let _ = c.expire_at(&r.key, r.window_end + 3_600);
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
                let before = total.saturating_sub(r.amount);
                let fit = r.units.saturating_sub(before).min(r.amount);
                if r.pay {
                    adjust(slot, r.tag, |g| g.saturating_sub(r.amount - fit));
                } else {
                    adjust(slot, r.tag, |g| g + fit);
                }
                if fit < r.amount {
                    set(slot, r.tag, EXHAUSTED);
                }
            }
            None => self.grant_offline(slot, &r),
        }
        clear(slot, r.tag, REQUESTED);
    }

    /// Without Redis: at most this replica's share of the window.
    fn grant_offline(&mut self, slot: &Slot, r: &Refill) {
        let share = (r.units / self.setup.replicas.max(1)).max(1);
        let g = slot.granted.load(Ordering::Acquire);
        if g >> BITS != r.tag {
            return;
        }
        let granted = g & USED_MASK;
        let extra = if r.pay {
            // The optimistic first lease: keep what fits in the share.
            let keep = r.amount.min(share);
            adjust(slot, r.tag, |g| g.saturating_sub(r.amount - keep));
            keep
        } else {
            let extra = r.amount.min(share.saturating_sub(granted));
            adjust(slot, r.tag, |g| g + extra);
            extra
        };
        if extra > 0 {
            let owed = self.owed.entry(r.key.clone()).or_insert((0, r.window_end));
            owed.0 += extra;
        }
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
