//! Waiting, per shard, for audit records to reach the log.
//!
//! A call is answered only once its record is in the log. A call whose
//! shard could not write it itself ([`toolgate_sinks::InlineWriter`])
//! parks here; one shard task (the poller) waits for the audit thread to
//! move this shard's progress mark — the thread wakes it (a glommio foreign
//! wake) — and then wakes each call whose record has landed. No timer polls the
//! mark: a short poll interval costs the shard a timer wake-up every few
//! microseconds under load, a long one adds it to every answer. A slow
//! fallback timer only guards against a lost wake.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use toolgate_sinks::AuditHealth;

/// Longest the poller waits for a wake before it looks at the mark anyway.
const FALLBACK: Duration = Duration::from_millis(2);

/// A shard's waiters on the audit log.
pub struct Acks {
    shard: u16,
    health: Arc<AuditHealth>,
    waiting: RefCell<VecDeque<(u64, Waker)>>,
    polling: Cell<bool>,
}

impl Acks {
    /// Waiters of shard `shard`, on the marks `health` holds.
    pub fn new(shard: u16, health: Arc<AuditHealth>) -> Self {
        Self {
            shard,
            health,
            waiting: RefCell::default(),
            polling: Cell::new(false),
        }
    }

    /// Whether this shard's record `seq` is in the log as durably as
    /// configured.
    pub fn recorded(&self, seq: u64) -> bool {
        self.health.recorded(self.shard, seq)
    }

    /// Waits until record `seq` is in the log.
    pub async fn wait(self: &Rc<Self>, seq: u64) {
        poll_fn(|cx| {
            if self.recorded(seq) {
                return Poll::Ready(());
            }
            self.waiting
                .borrow_mut()
                .push_back((seq, cx.waker().clone()));
            if !self.polling.replace(true) {
                glommio::spawn_local(Rc::clone(self).poll()).detach();
            }
            Poll::Pending
        })
        .await;
    }

    /// Whether the oldest waiter's record is in the log.
    fn front_recorded(&self) -> bool {
        self.waiting
            .borrow()
            .front()
            .is_none_or(|(seq, _)| self.recorded(*seq))
    }

    async fn poll(self: Rc<Self>) {
        loop {
            let landed = poll_fn(|cx| {
                // Register first, then look: a mark moved in between is seen
                // here, or wakes us.
                self.health.register_ack(self.shard, cx.waker());
                if self.front_recorded() {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                }
            });
            let _ = glommio::timer::timeout(FALLBACK, landed).await;
            let mut ready = Vec::new();
            {
                let mut w = self.waiting.borrow_mut();
                // Records land in shard order: wake the prefix that is in.
                while w.front().is_some_and(|(seq, _)| self.recorded(*seq)) {
                    if let Some((_, waker)) = w.pop_front() {
                        ready.push(waker);
                    }
                }
                // Out-of-order registrations (a waiter re-polled) are rare; sweep them too.
                w.retain(|(seq, waker)| {
                    if self.recorded(*seq) {
                        ready.push(waker.clone());
                        false
                    } else {
                        true
                    }
                });
                if w.is_empty() {
                    self.polling.set(false);
                }
            }
            for waker in ready {
                waker.wake();
            }
            if !self.polling.get() {
                return;
            }
        }
    }
}
