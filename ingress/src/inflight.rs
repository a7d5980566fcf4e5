//! Calls in flight, so an agent's `notifications/cancelled` reaches the
//! call it names on whichever shard runs it; and the requests toward the
//! agent's client that calls are waiting on, so the agent's answer reaches
//! the call that relayed the request (its id names the shard).
//!
//! A call forwarded to its upstream is entered in its shard's own table
//! (no lock: the shard's thread alone touches it) under a key made of who
//! sent it — agent, end user, MCP session — and its JSON-RPC id, so an
//! agent can only ever cancel its own calls. A cancellation is looked up
//! on the shard that received it first; when the call is not there, its
//! key goes to every other shard's inbox (a short lock, only on this rare
//! path) and wakes them.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::future::poll_fn;
use std::hash::BuildHasher;
use std::rc::Rc;
use std::sync::Mutex;
use std::task::Poll;

use futures_util::task::AtomicWaker;
use toolgate_upstream::Cancel;

use crate::session::Nonce;

/// Keys held in a shard's inbox before it takes them; more are dropped
/// (a cancellation is advice: the call still ends by its deadline).
const MAX_INBOX: usize = 1024;

/// Who sent a call and its id: what a cancellation must match.
#[derive(Hash)]
pub struct CallKey<'a> {
    /// The agent's id.
    pub agent: &'a str,
    /// The end user the call is for.
    pub user: Option<&'a str>,
    /// The handshake-era session it came in.
    pub session: Option<&'a Nonce>,
    /// Its JSON-RPC id, as JSON text.
    pub id: &'a str,
}

/// The cancellation inboxes of every shard, and the hash keying the
/// tables (random per process, so keys cannot be aimed at each other).
pub struct Cancels {
    hasher: RandomState,
    inboxes: Box<[Inbox]>,
}

#[derive(Default)]
struct Inbox {
    posted: Mutex<Posted>,
    waker: AtomicWaker,
}

/// What other shards handed one shard.
#[derive(Default)]
pub struct Posted {
    /// Keys of calls to cancel.
    pub cancels: Vec<u64>,
    /// Answers to requests toward an agent's client: the key the request
    /// waits under, and the answer's member.
    pub answers: Vec<(u64, Vec<u8>)>,
}

impl Posted {
    fn is_empty(&self) -> bool {
        self.cancels.is_empty() && self.answers.is_empty()
    }
}

impl Cancels {
    /// Inboxes for `shards` shards.
    pub fn new(shards: usize) -> Self {
        Self {
            hasher: RandomState::new(),
            inboxes: (0..shards).map(|_| Inbox::default()).collect(),
        }
    }

    /// The shards there are.
    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    /// The table key of a call.
    pub fn key(&self, call: &CallKey<'_>) -> u64 {
        self.hasher.hash_one(call)
    }

    /// Hands `key` to every shard but `from`.
    pub fn post(&self, from: usize, key: u64) {
        for (i, inbox) in self.inboxes.iter().enumerate() {
            if i == from {
                continue;
            }
            {
                let mut posted = inbox.posted.lock().unwrap_or_else(|p| p.into_inner());
                if posted.cancels.len() >= MAX_INBOX {
                    continue;
                }
                posted.cancels.push(key);
            }
            inbox.waker.wake();
        }
    }

    /// Hands the agent's `answer` to the request waiting under `key` on
    /// shard `shard` (dropped when that shard's inbox is full, or there is
    /// no such shard: the call then ends by its deadline).
    pub fn post_answer(&self, shard: usize, key: u64, answer: Vec<u8>) {
        let Some(inbox) = self.inboxes.get(shard) else {
            return;
        };
        {
            let mut posted = inbox.posted.lock().unwrap_or_else(|p| p.into_inner());
            if posted.answers.len() >= MAX_INBOX {
                return;
            }
            posted.answers.push((key, answer));
        }
        inbox.waker.wake();
    }

    /// Waits until something arrives for shard `shard`, and takes it.
    pub async fn next(&self, shard: usize) -> Posted {
        let Some(inbox) = self.inboxes.get(shard) else {
            return std::future::pending().await;
        };
        poll_fn(|cx| {
            inbox.waker.register(cx.waker());
            let mut posted = inbox.posted.lock().unwrap_or_else(|p| p.into_inner());
            if posted.is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(std::mem::take(&mut *posted))
            }
        })
        .await
    }
}

/// One shard's calls in flight, and the requests toward agents' clients
/// they wait on.
#[derive(Default)]
pub struct InFlight {
    calls: RefCell<HashMap<u64, Rc<Cancel>>>,
    asks: RefCell<HashMap<u64, Rc<Waiting>>>,
}

/// A request toward an agent's client, waiting for its answer.
#[derive(Default)]
pub struct Waiting {
    answer: RefCell<Option<Vec<u8>>>,
    waker: std::cell::Cell<Option<std::task::Waker>>,
}

/// A request entered in its shard's table until its answer comes (or the
/// guard drops with its call).
pub struct Expecting<'a> {
    table: &'a InFlight,
    key: u64,
    waiting: Rc<Waiting>,
}

impl Expecting<'_> {
    /// Waits for the answer.
    pub async fn answer(&self) -> Vec<u8> {
        poll_fn(|cx| match self.waiting.answer.borrow_mut().take() {
            Some(a) => Poll::Ready(a),
            None => {
                self.waiting.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

impl Drop for Expecting<'_> {
    fn drop(&mut self) {
        leave(&self.table.asks, self.key, &self.waiting);
    }
}

/// Takes `entry` out of `table` under `key`, unless a newer entry took the
/// key since.
fn leave<T>(table: &RefCell<HashMap<u64, Rc<T>>>, key: u64, entry: &Rc<T>) {
    let mut table = table.borrow_mut();
    if table.get(&key).is_some_and(|e| Rc::ptr_eq(e, entry)) {
        table.remove(&key);
    }
}

impl InFlight {
    /// Enters a call under `key` until the returned guard drops. A second
    /// call under the same key (an agent reusing an id while the first
    /// runs) takes the entry: a cancellation then reaches the newer one.
    pub fn enter(&self, key: u64) -> Entered<'_> {
        let cancel = Rc::new(Cancel::default());
        self.calls.borrow_mut().insert(key, Rc::clone(&cancel));
        Entered {
            table: self,
            key,
            cancel,
        }
    }

    /// Enters a request toward an agent's client under `key` until its
    /// answer comes or the returned guard drops.
    pub fn expect(&self, key: u64) -> Expecting<'_> {
        let waiting = Rc::new(Waiting::default());
        self.asks.borrow_mut().insert(key, Rc::clone(&waiting));
        Expecting {
            table: self,
            key,
            waiting,
        }
    }

    /// Hands `answer` to the request waiting under `key`, if this shard has
    /// it (the first answer only: the request then leaves the table).
    pub fn answer(&self, key: u64, answer: Vec<u8>) -> bool {
        let Some(waiting) = self.asks.borrow_mut().remove(&key) else {
            return false;
        };
        *waiting.answer.borrow_mut() = Some(answer);
        if let Some(w) = waiting.waker.take() {
            w.wake();
        }
        true
    }

    /// Cancels the call under `key`, if this shard runs it.
    pub fn cancel(&self, key: u64) -> bool {
        match self.calls.borrow().get(&key) {
            Some(c) => {
                c.fire();
                true
            }
            None => false,
        }
    }
}

/// A call entered in its shard's table.
pub struct Entered<'a> {
    table: &'a InFlight,
    key: u64,
    cancel: Rc<Cancel>,
}

impl Entered<'_> {
    /// Fired when the call is cancelled.
    pub fn cancel(&self) -> &Cancel {
        &self.cancel
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        leave(&self.table.calls, self.key, &self.cancel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(agent: &'a str, user: Option<&'a str>, id: &'a str) -> CallKey<'a> {
        CallKey {
            agent,
            user,
            session: None,
            id,
        }
    }

    #[test]
    fn a_cancel_reaches_only_the_call_of_the_same_agent_user_and_id() {
        let cancels = Cancels::new(1);
        let table = InFlight::default();
        let call = table.enter(cancels.key(&key("bot", Some("ada"), "7")));
        for other in [
            key("bot", Some("bob"), "7"),
            key("bot", None, "7"),
            key("other", Some("ada"), "7"),
            key("bot", Some("ada"), "\"7\""),
        ] {
            assert!(!table.cancel(cancels.key(&other)));
        }
        assert!(!call.cancel().is_fired());
        assert!(table.cancel(cancels.key(&key("bot", Some("ada"), "7"))));
        assert!(call.cancel().is_fired());
    }

    #[test]
    fn an_ended_call_leaves_the_table_and_a_newer_one_keeps_its_entry() {
        let cancels = Cancels::new(1);
        let table = InFlight::default();
        let k = cancels.key(&key("bot", None, "1"));
        let first = table.enter(k);
        let second = table.enter(k);
        drop(first);
        assert!(table.cancel(k), "the newer call is still entered");
        assert!(second.cancel().is_fired());
        drop(second);
        assert!(!table.cancel(k));
        assert!(table.calls.borrow().is_empty());
    }

    #[test]
    fn posted_keys_reach_every_other_shard() {
        let cancels = Cancels::new(3);
        cancels.post(1, 42);
        let got = |s| {
            futures_lite::future::block_on(futures_lite::future::or(cancels.next(s), async {
                Posted::default()
            }))
        };
        let got = |s| got(s).cancels;
        assert_eq!(got(0), vec![42]);
        assert_eq!(got(2), vec![42]);
        assert_eq!(got(1), Vec::<u64>::new());
        assert_eq!(got(0), Vec::<u64>::new(), "taken once");
    }

    #[test]
    fn an_answer_reaches_the_request_waiting_under_its_key_once() {
        let cancels = Cancels::new(2);
        let table = InFlight::default();
        let k = cancels.key(&key("bot", None, "\"tg-0-1\""));
        let expecting = table.expect(k);
        assert!(!table.answer(
            cancels.key(&key("other", None, "\"tg-0-1\"")),
            b"x".to_vec()
        ));
        assert!(table.answer(k, br#""result":{}"#.to_vec()));
        assert!(!table.answer(k, b"again".to_vec()), "answered once");
        let got = futures_lite::future::block_on(expecting.answer());
        assert_eq!(got, br#""result":{}"#);
        drop(expecting);
        assert!(table.asks.borrow().is_empty());
        // Handed to another shard.
        cancels.post_answer(1, k, b"y".to_vec());
        let posted = futures_lite::future::block_on(cancels.next(1));
        assert_eq!(posted.answers, vec![(k, b"y".to_vec())]);
    }
}
