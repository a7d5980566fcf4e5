//! Waiting, per shard, for audit records to reach the log.
//!
//! A call is answered only once its record is in the log. Rather than every
//! waiting call polling with its own timer, waiters park here and one shard
//! task polls the audit thread's progress mark for all of them, waking each
//! call whose record has landed. Only one timer runs per shard, and none
//! while nothing waits.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use toolgate_sinks::AuditHealth;

/// How often the poller looks at the audit thread's mark.
const POLL: Duration = Duration::from_micros(25);

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

    async fn poll(self: Rc<Self>) {
        loop {
            glommio::timer::sleep(POLL).await;
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
