//! Handshake-era sessions: issuing `Mcp-Session-Id`, checking it on every
//! later request, and ending it on `DELETE /mcp`.
//!
//! A session id is an HMAC-tagged nonce bound to the agent it was issued
//! to ([`crate::session`]): unguessable, useless to another agent, and
//! never an authentication on its own (the agent is identified first).

use toolgate_core::protocol;
use toolgate_core::refusal::{Refusal, RefusalKind};
use toolgate_decision::Agent;

use super::ctx::{now_secs, now_us, Answer};
use super::Gateway;
use crate::http::server::Request;
use crate::session::Nonce;
use crate::shared::SESSION_MAX_AGE;

impl Gateway {
    /// A new session id for `agent`, whose client offers the requests
    /// toward it in `offers` ([`super::ask::client_offers`]): kept in the
    /// nonce's first byte, under the tag like the rest, so every shard
    /// reads them from the id alone.
    pub(super) fn new_session(&self, agent: &Agent, offers: u8) -> String {
        let mut nonce = [0u8; 16];
        if getrandom::fill(&mut nonce).is_err() {
            // Unique even without the OS generator: the tag is what makes it unforgeable.
            let n = self.nonce_counter.get() + 1;
            self.nonce_counter.set(n);
            nonce[..8].copy_from_slice(&n.to_be_bytes());
            nonce[8..10].copy_from_slice(&self.shard.to_be_bytes());
            nonce[10..].copy_from_slice(&now_us().to_be_bytes()[2..]);
        }
        nonce[0] = offers;
        self.shared.session_key.issue(&agent.id, now_secs(), nonce)
    }

    /// The nonce of the request's live session of `agent`.
    pub(super) fn check_session(&self, agent: &Agent, req: &Request<'_>) -> Result<Nonce, Refusal> {
        let nonce = self.session_of(agent, req)?;
        if self.terminated.borrow_mut().current().contains_key(&nonce) {
            return Err(Refusal::new(RefusalKind::SessionNotFound));
        }
        Ok(nonce)
    }

    /// The session the request names, issued to `agent` and not expired,
    /// whether or not it has been ended since.
    pub(super) fn session_of(&self, agent: &Agent, req: &Request<'_>) -> Result<Nonce, Refusal> {
        let Some(sid) = req.head.header(req.buf, protocol::HEADER_SESSION_ID) else {
            return Err(Refusal::new(RefusalKind::MissingSession));
        };
        self.shared
            .session_key
            .verify(&agent.id, sid.trim_ascii(), now_secs(), SESSION_MAX_AGE)
            .map_err(|_| Refusal::new(RefusalKind::SessionNotFound))
    }

    /// Ends the request's session (`DELETE /mcp`) on every shard.
    pub(super) fn end_session(&self, agent: &Agent, req: &Request<'_>) -> Result<Answer, Refusal> {
        let nonce = self.check_session(agent, req)?;
        self.shared.terminate(nonce, now_secs());
        Ok(Answer::Done)
    }
}

#[cfg(test)]
mod tests {
    use toolgate_core::refusal::RefusalKind;

    use super::super::testing::{gateway, with_request};

    #[test]
    fn a_session_is_live_for_its_agent_until_ended_and_only_then() {
        let gw = gateway("", &[]);
        let (snap, _) = gw.current();
        let bot = snap.agent_by_id("bot").unwrap();
        let proxy = snap.agent_by_id("proxy").unwrap();
        let sid = gw.new_session(bot, 0);
        let head = format!("POST /mcp HTTP/1.1\r\nMcp-Session-Id: {sid}");
        with_request(&head, "", |req| {
            assert!(gw.check_session(bot, req).is_ok());
            // Another agent holding the id gets nothing from it.
            assert_eq!(
                gw.check_session(proxy, req).map(|_| ()).unwrap_err().kind,
                RefusalKind::SessionNotFound
            );
            assert!(gw.end_session(bot, req).is_ok());
            assert_eq!(
                gw.check_session(bot, req).map(|_| ()).unwrap_err().kind,
                RefusalKind::SessionNotFound
            );
        });
        with_request("POST /mcp HTTP/1.1", "", |req| {
            assert_eq!(
                gw.check_session(bot, req).map(|_| ()).unwrap_err().kind,
                RefusalKind::MissingSession
            );
        });
    }
}
