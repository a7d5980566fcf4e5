//! Requests an upstream sends toward the agent's client during a call —
//! elicitation, sampling, roots — relayed to the agent on the call's event
//! stream, and the agent's answer carried back to the call.
//!
//! A request is relayed only when the upstream may send its kind
//! (`client_requests`), the agent's client declared the capability when it
//! opened its session (kept in the session id, so any shard reads it), the
//! call's answer streams, and no output rule of the call would act on its
//! text. It goes to the agent under an id of toolgate's, `"tg-{shard}-{n}"`,
//! never the upstream's: the agent's answer names the shard whose call waits
//! for it, and is matched there under the same agent, end user and session,
//! so an agent can only ever answer its own calls' requests. Each request
//! and what became of it is in the call's record (`client_requests`); each
//! answer is recorded as a request of its own (reason `client_answer`).

use std::future::Future;
use std::pin::Pin;

use simd_json::prelude::*;
use simd_json::tape::Tape;
use toolgate_core::audit::{AskOutcome, ClientAsk, Reason};
use toolgate_core::config::ClientRequest;
use toolgate_core::jsonrpc::{id_text, write_str, write_value, JsonParser, RpcRequest};
use toolgate_core::refusal::{Refusal, RefusalKind};
use toolgate_decision::{Agent, OutputFilter};
use toolgate_upstream::{Answered, Ask};

use super::ctx::{Answer, CallCtx};
use super::Gateway;
use crate::http::early::Early;
use crate::http::server::Request;
use crate::inflight::CallKey;
use crate::session::Nonce;

/// The prefix of toolgate's ids for requests relayed to agents.
const ID_PREFIX: &str = "tg-";

/// The session bit of a client that takes URL-mode elicitation (beside
/// the [`ClientRequest`] bits).
pub(super) const URL_ELICITATION: u8 = 0x80;

/// The kinds of request toward it an agent's client offers, from its
/// `initialize` (`params.capabilities`): [`ClientRequest`] bits, and
/// [`URL_ELICITATION`].
pub(super) fn client_offers(rpc: &RpcRequest<'_>) -> u8 {
    let Some(caps) = rpc.params.and_then(|p| p.get("capabilities")) else {
        return 0;
    };
    let offers = ClientRequest::ALL
        .into_iter()
        .filter(|k| caps.get(k.capability()).is_some_and(|c| c.is_object()))
        .fold(0, |set, k| set | k.bit());
    if takes_url_elicitation(caps) {
        offers | URL_ELICITATION
    } else {
        offers
    }
}

/// Whether client capabilities `caps` declare URL-mode elicitation
/// (`"elicitation": {"url": {}}`).
pub(super) fn takes_url_elicitation(caps: simd_json::tape::Value<'_, '_>) -> bool {
    caps.get("elicitation")
        .and_then(|e| e.get("url"))
        .is_some_and(|u| u.is_object())
}

/// What a session's client offers ([`client_offers`], kept in its nonce).
fn offers_of(session: &Nonce) -> u8 {
    session[0] & ClientRequest::set(&ClientRequest::ALL)
}

/// Relays one call's upstream requests to its agent.
pub(super) struct Relay<'a> {
    gw: &'a Gateway,
    early: &'a Early,
    ctx: &'a CallCtx,
    session: Nonce,
    filter: Option<&'a OutputFilter>,
}

impl<'a> Relay<'a> {
    /// A relay for the call in `ctx` when its agent can take requests: a
    /// handshake-era session, and an answer that streams through `early`.
    pub(super) fn new(
        gw: &'a Gateway,
        ctx: &'a CallCtx,
        early: Option<&'a Early>,
        filter: Option<&'a OutputFilter>,
    ) -> Option<Self> {
        let session = ctx.mcp_session?;
        let early = early?;
        Some(Self {
            gw,
            early,
            ctx,
            session,
            filter,
        })
    }

    fn note(&self, method: &'static str, outcome: AskOutcome) -> usize {
        let mut asks = self.ctx.client_requests.borrow_mut();
        asks.push(ClientAsk { method, outcome });
        asks.len() - 1
    }

    async fn relay(
        &self,
        method: &str,
        kind: Option<ClientRequest>,
        message: &[u8],
    ) -> Result<Answered, String> {
        let name = ClientRequest::of_method(method).map_or("other", ClientRequest::method);
        let Some(kind) = kind else {
            self.note(name, AskOutcome::NotAllowed);
            return Err(String::new());
        };
        if offers_of(&self.session) & kind.bit() == 0 {
            self.note(name, AskOutcome::NoCapability);
            return Err(format!(
                "the agent's client does not offer {}",
                kind.capability()
            ));
        }
        if self.filter.is_some_and(|f| f.needs_walk(message)) {
            self.note(name, AskOutcome::RefusedByOutputRules);
            return Err("refused by the gateway's output rules".to_owned());
        }
        let n = self.gw.asked.get() + 1;
        self.gw.asked.set(n);
        let id = format!("\"{ID_PREFIX}{}-{n}\"", self.gw.shard);
        let Some(relayed) = rewritten(message, &id) else {
            self.note(name, AskOutcome::NotAllowed);
            return Err("a malformed request".to_owned());
        };
        let key = self.gw.shared.cancels.key(&CallKey {
            agent: self.ctx.agent.as_deref().unwrap_or(""),
            user: self.ctx.user.as_deref(),
            session: Some(&self.session),
            id: &id,
        });
        let expecting = self.gw.in_flight.expect(key);
        self.early.allow();
        if !self.early.send(relayed) {
            self.note(name, AskOutcome::NoCapability);
            return Err("the agent's stream cannot take it".to_owned());
        }
        // Noted before the wait: a call that ends first leaves it unanswered.
        let at = self.note(name, AskOutcome::Unanswered);
        let answer = expecting.answer().await;
        if let Some(a) = self.ctx.client_requests.borrow_mut().get_mut(at) {
            a.outcome = AskOutcome::Answered;
        }
        Ok(answer)
    }
}

impl Ask for Relay<'_> {
    fn ask<'s>(
        &'s self,
        method: &'s str,
        kind: Option<ClientRequest>,
        message: &'s [u8],
    ) -> Pin<Box<dyn Future<Output = Result<Answered, String>> + 's>> {
        Box::pin(self.relay(method, kind, message))
    }
}

/// The upstream's request `message` as the agent gets it: under `id`
/// (JSON text), with its method and params only.
fn rewritten(message: &[u8], id: &str) -> Option<Vec<u8>> {
    let mut parser = JsonParser::new();
    let tape = parser.parse(message).ok()?;
    let v = tape.as_value();
    let method = v.get("method")?.into_string()?;
    let mut out = Vec::with_capacity(message.len() + 32);
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(br#","method":"#);
    write_str(method, &mut out);
    if let Some(params) = v.get("params") {
        out.extend_from_slice(br#","params":"#);
        write_value(params, &mut out);
    }
    out.push(b'}');
    Some(out)
}

impl Gateway {
    /// The agent's answer to a request relayed to it (a JSON-RPC response
    /// under an id of toolgate's), handed to the call waiting for it — on
    /// this shard or the one its id names — and accepted (`202`); `None`
    /// when the body is not such an answer.
    pub(super) fn client_answer(
        &self,
        agent: &Agent,
        req: &Request<'_>,
        tape: &Tape<'_>,
        ctx: &mut CallCtx,
    ) -> Option<Result<Answer, Refusal>> {
        let v = tape.as_value();
        if v.get("method").is_some() {
            return None;
        }
        let raw_id = v.get("id")?;
        let shard: usize = raw_id
            .into_string()?
            .strip_prefix(ID_PREFIX)?
            .split_once('-')?
            .0
            .parse()
            .ok()?;
        let (name, value) = match (v.get("result"), v.get("error")) {
            (Some(r), None) => ("result", r),
            (None, Some(e)) if e.is_object() => ("error", e),
            _ => return None,
        };
        let id = id_text(Some(raw_id))?;
        ctx.request_id = Some(id.clone());
        ctx.reason = Reason::ClientAnswer;
        let session = match self.check_session(agent, req) {
            Ok(s) => s,
            Err(r) => return Some(Err(r)),
        };
        let mut member = Vec::with_capacity(req.body.len());
        write_str(name, &mut member);
        member.push(b':');
        write_value(value, &mut member);
        let key = self.shared.cancels.key(&CallKey {
            agent: &agent.id,
            user: ctx.user.as_deref(),
            session: Some(&session),
            id: &id,
        });
        if shard == usize::from(self.shard) {
            self.in_flight.answer(key, member);
        } else if shard < self.shared.cancels.shards() {
            self.shared.cancels.post_answer(shard, key, member);
        } else {
            return Some(Err(Refusal::with(
                RefusalKind::InvalidRequest,
                "no request of toolgate's has this id".to_owned(),
            )));
        }
        ctx.mcp_session = Some(session);
        Some(Ok(Answer::Accepted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relayed_request_carries_toolgates_id_and_only_method_and_params() {
        let upstream = br#"{"jsonrpc":"2.0","id":7,"method":"elicitation/create","params":{"message":"Which \"one\"?","requestedSchema":{"type":"object"}},"extra":1}"#;
        let out = rewritten(upstream, "\"tg-0-3\"").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"jsonrpc":"2.0","id":"tg-0-3","method":"elicitation/create",
                               "params":{"message":"Which \"one\"?","requestedSchema":{"type":"object"}}})
        );
        assert_eq!(rewritten(br#"{"jsonrpc":"2.0","id":1}"#, "\"x\""), None);
    }

    #[test]
    fn a_clients_offers_are_read_from_its_capabilities() {
        let offers = |caps: &str| {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"capabilities":{caps}}}}}"#
            );
            let mut p = JsonParser::new();
            let tape = p.parse(body.as_bytes()).unwrap();
            client_offers(&RpcRequest::from_tape(&tape).unwrap())
        };
        assert_eq!(offers("{}"), 0);
        assert_eq!(
            offers(r#"{"elicitation":{}}"#),
            ClientRequest::Elicitation.bit()
        );
        assert_eq!(
            offers(r#"{"sampling":{},"roots":{"listChanged":true},"elicitation":true}"#),
            ClientRequest::Sampling.bit() | ClientRequest::Roots.bit()
        );
        let mut nonce = [0u8; 16];
        nonce[0] = 0xFF;
        assert_eq!(offers_of(&nonce), 7, "only the three kinds' bits are read");
    }
}
