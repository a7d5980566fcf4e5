//! Messages sent ahead of an answer: an agent that takes event streams
//! gets its call's progress while the call runs, as events of a chunked
//! `text/event-stream` response whose last event is the answer.
//!
//! The handler queues messages ([`Early::send`]); the connection loop
//! writes them while the handler still runs, opening the stream with the
//! first. Before it writes its answer the handler closes the queue
//! ([`Early::close`]), which says whether the stream was opened: the
//! answer is then the stream's last event ([`last_event`]), else an
//! ordinary response. Only messages go early, never the answer: the
//! answer still leaves only once its audit record is in the log.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::Write;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Messages queued and not yet written, at most; more are dropped (a
/// progress message says no more than the one after it).
const MAX_QUEUED: usize = 32;

/// Where one request stands on its early messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing may go early (the default for every request).
    Shut,
    /// Nothing may go early, but the client leaving matters (its call is
    /// cancelled by it).
    Watched,
    /// Messages may go; the stream is not open yet.
    Allowed,
    /// The stream is open: its head and at least one event are written.
    Open,
}

/// One connection's early messages, for the request it is serving.
pub struct Early {
    state: Cell<State>,
    /// The handler closed the queue: its answer is being written.
    closed: Cell<bool>,
    queue: RefCell<VecDeque<Vec<u8>>>,
    waker: Cell<Option<Waker>>,
    /// The client closed the connection while the request ran.
    gone: Cell<bool>,
    gone_waker: Cell<Option<Waker>>,
    /// The stream's head goes now, before any message (a long-lived
    /// stream whose first message may be a while coming).
    head_now: Cell<bool>,
    /// How often the connection loop looks whether the client left.
    check_every: Cell<Duration>,
}

/// How often the connection loop looks whether a watched request's client
/// left, unless the request says otherwise.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);

impl Default for Early {
    fn default() -> Self {
        Self {
            state: Cell::new(State::Shut),
            closed: Cell::new(false),
            queue: RefCell::new(VecDeque::new()),
            waker: Cell::new(None),
            gone: Cell::new(false),
            gone_waker: Cell::new(None),
            head_now: Cell::new(false),
            check_every: Cell::new(CHECK_EVERY),
        }
    }
}

impl Early {
    /// Ready for the next request: shut, empty.
    pub(crate) fn reset(&self) {
        self.state.set(State::Shut);
        self.closed.set(false);
        self.queue.borrow_mut().clear();
        self.waker.set(None);
        self.gone.set(false);
        self.gone_waker.set(None);
        self.head_now.set(false);
        self.check_every.set(CHECK_EVERY);
    }

    /// Opens the stream at once (its head goes before any message), and
    /// looks whether the client left every `check_every`: for a long-lived
    /// stream of notifications.
    pub fn open_now(&self, check_every: Duration) {
        self.allow();
        self.head_now.set(true);
        self.check_every.set(check_every);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Queues an SSE comment, which keeps an idle stream alive through
    /// proxies and shows whether the client is still there.
    pub fn heartbeat(&self) -> bool {
        self.send(Vec::new())
    }

    /// How often the connection loop looks whether the client left.
    pub(crate) fn check_every(&self) -> Duration {
        self.check_every.get()
    }

    /// Whether the connection loop should look out for the client leaving:
    /// the request is watched (or may send early) and its answer is not
    /// written yet.
    pub(crate) fn watching(&self) -> bool {
        self.state.get() != State::Shut && !self.closed.get() && !self.gone.get()
    }

    /// The client left while the request ran.
    pub(crate) fn mark_gone(&self) {
        if !self.gone.replace(true) {
            if let Some(w) = self.gone_waker.take() {
                w.wake();
            }
        }
    }

    /// Waits until the client leaves while the request runs (noticed only
    /// while it is watched).
    pub async fn gone(&self) {
        std::future::poll_fn(|cx| {
            if self.gone.get() {
                return Poll::Ready(());
            }
            self.gone_waker.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    /// Lets messages go ahead of this request's answer (its agent takes an
    /// event stream); the client leaving is looked out for too.
    pub fn allow(&self) {
        if matches!(self.state.get(), State::Shut | State::Watched) && !self.closed.get() {
            self.state.set(State::Allowed);
        }
    }

    /// Looks out for the client leaving while the request runs, without
    /// letting anything go early.
    pub fn watch(&self) {
        if self.state.get() == State::Shut && !self.closed.get() {
            self.state.set(State::Watched);
        }
    }

    /// Whether messages may go early.
    fn sends(&self) -> bool {
        matches!(self.state.get(), State::Allowed | State::Open) && !self.closed.get()
    }

    /// Queues one JSON-RPC message to go ahead of the answer; false when it
    /// cannot (not allowed, closed, or the queue is full).
    pub fn send(&self, message: Vec<u8>) -> bool {
        if !self.sends() {
            return false;
        }
        {
            let mut q = self.queue.borrow_mut();
            if q.len() >= MAX_QUEUED {
                return false;
            }
            q.push_back(message);
        }
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        true
    }

    /// Ends the early messages: nothing more goes. When messages went or
    /// are queued, the stream's head (if not yet written) and the queued
    /// messages are written into `out`, and true is returned: the answer
    /// must follow as the stream's last event. Otherwise nothing is written.
    pub fn close(&self, out: &mut Vec<u8>) -> bool {
        self.closed.set(true);
        let queued = std::mem::take(&mut *self.queue.borrow_mut());
        match self.state.get() {
            State::Shut | State::Watched => return false,
            State::Allowed if queued.is_empty() => return false,
            State::Allowed => {
                head(out);
                self.state.set(State::Open);
            }
            State::Open => {}
        }
        for message in queued {
            event(out, &message);
        }
        true
    }

    /// The next message to write, for the connection loop; the stream's
    /// head comes with the first.
    pub(crate) fn poll_next(&self, cx: &mut Context<'_>, out: &mut Vec<u8>) -> Poll<()> {
        if !self.sends() {
            self.waker.set(Some(cx.waker().clone()));
            return Poll::Pending;
        }
        let next = self.queue.borrow_mut().pop_front();
        if next.is_none() && !(self.head_now.get() && self.state.get() == State::Allowed) {
            self.waker.set(Some(cx.waker().clone()));
            return Poll::Pending;
        }
        if self.state.get() == State::Allowed {
            head(out);
            self.state.set(State::Open);
        }
        if let Some(message) = next {
            event(out, &message);
        }
        Poll::Ready(())
    }
}

/// Appends the head of the event stream.
fn head(out: &mut Vec<u8>) {
    out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
}

/// Appends one `message` event carrying `json`, as one chunk (an empty
/// `json` is a heartbeat: an SSE comment).
fn event(out: &mut Vec<u8>, json: &[u8]) {
    if json.is_empty() {
        out.extend_from_slice(b"3\r\n:\n\n\r\n");
        return;
    }
    const PRE: &[u8] = b"event: message\ndata: ";
    const POST: &[u8] = b"\n\n";
    let _ = write!(out, "{:x}\r\n", PRE.len() + json.len() + POST.len());
    out.extend_from_slice(PRE);
    out.extend_from_slice(json);
    out.extend_from_slice(POST);
    out.extend_from_slice(b"\r\n");
}

/// Appends the answer `json` as the last event of an open stream, and the
/// stream's end.
pub fn last_event(out: &mut Vec<u8>, json: &[u8]) {
    event(out, json);
    end(out);
}

/// Appends the end of an open stream, with no answer in it.
pub fn end(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next(e: &Early) -> Option<Vec<u8>> {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        match e.poll_next(&mut cx, &mut out) {
            Poll::Ready(()) => Some(out),
            Poll::Pending => None,
        }
    }

    #[test]
    fn nothing_goes_early_unless_allowed() {
        let e = Early::default();
        assert!(!e.send(b"{}".to_vec()));
        assert_eq!(next(&e), None);
        let mut out = Vec::new();
        assert!(!e.close(&mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn the_first_message_opens_a_chunked_stream_and_the_answer_ends_it() {
        let e = Early::default();
        e.allow();
        assert!(e.send(br#"{"a":1}"#.to_vec()));
        assert!(e.send(br#"{"a":2}"#.to_vec()));
        let first = String::from_utf8(next(&e).unwrap()).unwrap();
        assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
        assert!(
            first.contains("Transfer-Encoding: chunked\r\n\r\n"),
            "{first}"
        );
        assert!(
            first.ends_with("event: message\ndata: {\"a\":1}\n\n\r\n"),
            "{first}"
        );
        // The second was queued, not written: the answer carries it first.
        let mut out = Vec::new();
        assert!(e.close(&mut out));
        last_event(&mut out, b"{}");
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "1e\r\nevent: message\ndata: {\"a\":2}\n\n\r\n19\r\nevent: message\ndata: {}\n\n\r\n0\r\n\r\n"
        );
        assert!(!e.send(b"{}".to_vec()), "closed");
    }

    #[test]
    fn an_allowed_request_that_sent_nothing_answers_as_usual_and_reset_shuts() {
        let e = Early::default();
        e.allow();
        let mut out = Vec::new();
        assert!(!e.close(&mut out), "nothing sent: an ordinary answer");
        assert!(out.is_empty());
        e.reset();
        assert!(!e.send(b"{}".to_vec()));
    }

    #[test]
    fn messages_queued_but_not_yet_written_open_the_stream_at_the_answer() {
        let e = Early::default();
        e.allow();
        e.send(br#"{"p":1}"#.to_vec());
        let mut out = Vec::new();
        assert!(e.close(&mut out));
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.ends_with("data: {\"p\":1}\n\n\r\n"), "{text}");
    }

    #[test]
    fn a_watched_request_sends_nothing_early_until_allowed() {
        let e = Early::default();
        e.watch();
        assert!(e.watching());
        assert!(!e.send(b"{}".to_vec()));
        e.mark_gone();
        assert!(!e.watching(), "gone once is enough");
        e.reset();
        assert!(!e.watching());
        e.watch();
        e.allow();
        assert!(e.send(b"{}".to_vec()));
    }

    #[test]
    fn a_stream_opened_now_writes_its_head_before_any_message_and_heartbeats_are_comments() {
        let e = Early::default();
        e.open_now(Duration::from_secs(2));
        assert_eq!(e.check_every(), Duration::from_secs(2));
        let head = String::from_utf8(next(&e).unwrap()).unwrap();
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        assert_eq!(next(&e), None, "nothing more until something is sent");
        assert!(e.heartbeat());
        assert_eq!(next(&e).unwrap(), b"3\r\n:\n\n\r\n");
        e.reset();
        assert_eq!(e.check_every(), CHECK_EVERY);
    }

    #[test]
    fn the_queue_is_bounded() {
        let e = Early::default();
        e.allow();
        let sent = (0..100).filter(|_| e.send(b"{}".to_vec())).count();
        assert_eq!(sent, MAX_QUEUED);
    }
}
