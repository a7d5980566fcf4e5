//! What an agent's call hands its upstream request besides the request
//! itself: where the upstream's progress goes while the call runs, who
//! relays the requests the upstream sends toward the agent's client, and
//! the signal that the agent cancelled it.
//!
//! Both are the shard's own (a call runs on one shard from start to
//! finish): no lock, no atomic, nothing shared with another thread.

use std::cell::Cell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// Takes each progress message of an upstream request, as the upstream
/// wrote it.
pub type Progress<'a> = &'a dyn Fn(&[u8]);

/// The agent's answer to a request its upstream sent toward its client:
/// the answer's `"result":…` or `"error":…` member, as JSON text.
pub type Answered = Vec<u8>;

/// Relays a request the upstream sends toward the agent's client during a
/// call (elicitation, sampling, roots) and waits for the agent's answer.
pub trait Ask {
    /// Relays `message` (the upstream's request as it wrote it), of kind
    /// `kind` when it is one the upstream may send (`None`: another
    /// method, or a kind it may not send: only noted). The agent's answer,
    /// or why there is none (empty: not relayed), sent to the upstream as
    /// the request's error.
    fn ask<'s>(
        &'s self,
        method: &'s str,
        kind: Option<toolgate_core::config::ClientRequest>,
        message: &'s [u8],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Answered, String>> + 's>>;
}

/// What one upstream request reports to, and listens to, while it runs.
#[derive(Clone, Copy, Default)]
pub struct Watch<'a> {
    /// Takes each `notifications/progress` the upstream sends for this
    /// request (the message as the upstream wrote it). With none, toolgate
    /// asks the upstream for no progress.
    pub progress: Option<Progress<'a>>,
    /// Fired when the agent cancels the call.
    pub cancel: Option<&'a Cancel>,
    /// Relays the upstream's requests toward the agent's client; with
    /// none, each is refused.
    pub ask: Option<&'a dyn Ask>,
}

impl Watch<'_> {
    /// Nothing to report to, nothing to listen to (catalog fetches).
    pub const NONE: Watch<'static> = Watch {
        progress: None,
        cancel: None,
        ask: None,
    };

    /// Waits until the call is cancelled; never, without a [`Cancel`].
    pub(crate) async fn cancelled(&self) {
        match self.cancel {
            Some(c) => c.fired().await,
            None => std::future::pending().await,
        }
    }
}

/// A call's cancellation: fired once, by whoever holds it, and awaited by
/// the call's upstream request.
#[derive(Default)]
pub struct Cancel {
    fired: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Cancel {
    /// Cancels the call (again: nothing more happens).
    pub fn fire(&self) {
        if !self.fired.replace(true) {
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
    }

    /// Whether the call was cancelled.
    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    /// Waits until the call is cancelled.
    pub async fn fired(&self) {
        poll_fn(|cx| {
            if self.fired.get() {
                return Poll::Ready(());
            }
            self.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }
}

/// The token of `message` (a parsed JSON-RPC message) when it is a
/// `notifications/progress` under an integer token: toolgate asks every
/// upstream for progress under its own request ids, so any other token is
/// not one of toolgate's.
pub(crate) fn progress_token(message: simd_json::tape::Value<'_, '_>) -> Option<u64> {
    use simd_json::prelude::*;
    if message.get("id").is_some()
        || message.get("method").and_then(|m| m.into_string()) != Some("notifications/progress")
    {
        return None;
    }
    message.get("params")?.get("progressToken")?.as_u64()
}

/// Runs `work` unless the call is cancelled first (`None`).
pub(crate) async fn unless_cancelled<T>(
    watch: &Watch<'_>,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    futures_lite::future::or(async { Some(work.await) }, async {
        watch.cancelled().await;
        None
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fired_cancel_ends_the_wait_and_the_work_is_dropped() {
        let cancel = Cancel::default();
        let watch = Watch {
            progress: None,
            cancel: Some(&cancel),
            ask: None,
        };
        let done = futures_lite::future::block_on(async {
            let work = unless_cancelled(&watch, std::future::pending::<()>());
            futures_lite::future::or(work, async {
                cancel.fire();
                cancel.fire();
                // The work above is polled first and waits; firing wakes it.
                std::future::pending().await
            })
            .await
        });
        assert_eq!(done, None);
        assert!(cancel.is_fired());
    }

    #[test]
    fn only_a_progress_notification_under_an_integer_token_has_one() {
        let token = |json: &str| {
            let mut p = toolgate_core::jsonrpc::JsonParser::new();
            let tape = p.parse(json.as_bytes()).unwrap();
            progress_token(tape.as_value())
        };
        let note = |params: &str| {
            format!(r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{params}}}"#)
        };
        assert_eq!(
            token(&note(r#"{"progressToken":12,"progress":1}"#)),
            Some(12)
        );
        assert_eq!(token(&note(r#"{"progressToken":"12","progress":1}"#)), None);
        assert_eq!(token(&note(r#"{"progress":1}"#)), None);
        assert_eq!(
            token(
                r#"{"jsonrpc":"2.0","id":1,"method":"notifications/progress","params":{"progressToken":12}}"#
            ),
            None,
            "a request is not a notification"
        );
        assert_eq!(
            token(
                r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"progressToken":12}}"#
            ),
            None
        );
    }

    #[test]
    fn without_a_cancel_the_work_finishes() {
        let done = futures_lite::future::block_on(unless_cancelled(&Watch::NONE, async { 7 }));
        assert_eq!(done, Some(7));
    }
}
