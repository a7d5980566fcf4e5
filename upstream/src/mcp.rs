//! The MCP-over-HTTP kind of upstream: toolgate as an MCP client of one
//! upstream server, on one shard.
//!
//! The upstream's era is found on first use: in `auto` mode a
//! `server/discover` probe at the stateless revision, falling back to the
//! `initialize` handshake when the answer is not positive evidence of a
//! stateless server (as the official SDK's client does). Handshake-era
//! sessions are per shard; a session the upstream dropped (404) is
//! re-established once, transparently. Only one task per shard runs the
//! handshake; the others wait for it.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::rc::Rc;

use glommio::sync::Semaphore;
use simd_json::prelude::*;
use toolgate_core::config::{ClientRequest, UpstreamProtocol};
use toolgate_core::jsonrpc::{write_str, JsonParser};
use toolgate_core::protocol::{self, encode_header_value};
use toolgate_core::reply_id::reply_id;
use toolgate_decision::UpstreamInfo;

use crate::watch::{progress_token, unless_cancelled, Watch};
use crate::{sse, Credential, Reply, UpstreamError};
use toolgate_net::client::{MediaType, Pool};

#[derive(Debug, Clone)]
enum Era {
    Unknown,
    Handshake {
        session: Option<Rc<str>>,
        version: &'static str,
    },
    Stateless,
}

/// One MCP upstream as seen from one shard.
pub struct McpClient {
    info: UpstreamInfo,
    mode: UpstreamProtocol,
    pool: Pool,
    era: RefCell<Era>,
    next_id: Cell<u64>,
    handshake: Semaphore,
}

/// How long a message sent beside a call (a cancellation, a refusal of the
/// server's request) may take.
const ASIDE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// `clientInfo` toolgate presents to upstreams.
const CLIENT_INFO: &str = concat!(
    r#"{"name":"toolgate","version":""#,
    env!("CARGO_PKG_VERSION"),
    r#""}"#
);

impl McpClient {
    /// A client of `info` for the current shard (over `tls` for an
    /// `https://` upstream).
    pub fn new(info: UpstreamInfo, tls: Option<toolgate_net::tls::ClientTls>) -> Self {
        let pool = Pool::new(info.url.dial_target(), info.pool_size, tls);
        let mode = info.protocol;
        Self {
            info,
            mode,
            pool,
            era: RefCell::new(Era::Unknown),
            next_id: Cell::new(1),
            handshake: Semaphore::new(1),
        }
    }

    fn id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    /// Builds one POST. `params` is the inside of the params object (may
    /// be empty); with `progress`, the request asks for progress under
    /// that token.
    #[expect(
        clippy::too_many_arguments,
        reason = "one request's parts, each used once"
    )]
    fn request(
        &self,
        era: &Era,
        id: Option<u64>,
        method: &str,
        params: &[u8],
        progress: Option<u64>,
        headers: &[(String, String)],
        credential: &Credential,
    ) -> Vec<u8> {
        let mut body = Vec::with_capacity(params.len() + 256);
        body.extend_from_slice(br#"{"jsonrpc":"2.0","#);
        if let Some(id) = id {
            let _ = write!(body, r#""id":{id},"#);
        }
        body.extend_from_slice(br#""method":"#);
        write_str(method, &mut body);
        let stateless = matches!(era, Era::Stateless);
        if stateless || progress.is_some() || !params.is_empty() {
            body.extend_from_slice(br#","params":{"#);
            body.extend_from_slice(params);
            if stateless || progress.is_some() {
                if !params.is_empty() {
                    body.push(b',');
                }
                body.extend_from_slice(br#""_meta":{"#);
                if let Some(token) = progress {
                    let _ = write!(body, r#""progressToken":{token}"#);
                    if stateless {
                        body.push(b',');
                    }
                }
                if stateless {
                    let _ = write!(
                        body,
                        r#""{}":"{}","{}":{},"{}":{{}}"#,
                        protocol::META_PROTOCOL_VERSION,
                        protocol::LATEST_MODERN_VERSION,
                        protocol::META_CLIENT_INFO,
                        CLIENT_INFO,
                        protocol::META_CLIENT_CAPABILITIES
                    );
                }
                body.push(b'}');
            }
            body.push(b'}');
        }
        body.push(b'}');
        self.post(era, Some(method), &body, headers, credential)
    }

    /// The POST carrying `body`: the era's headers (`method` names a
    /// request's method; `None` for a response of toolgate's), `headers`,
    /// and the credential.
    fn post(
        &self,
        era: &Era,
        method: Option<&str>,
        body: &[u8],
        headers: &[(String, String)],
        credential: &Credential,
    ) -> Vec<u8> {
        let url = &self.info.url;
        let mut req = Vec::with_capacity(body.len() + 512);
        let _ = write!(
            req,
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
            url.path,
            url.authority,
            body.len()
        );
        match era {
            Era::Stateless => {
                let _ = write!(
                    req,
                    "MCP-Protocol-Version: {}\r\n",
                    protocol::LATEST_MODERN_VERSION
                );
                if let Some(m) = method {
                    let _ = write!(req, "Mcp-Method: {}\r\n", encode_header_value(m));
                }
            }
            Era::Handshake { session, version } => {
                if method != Some("initialize") {
                    let _ = write!(req, "MCP-Protocol-Version: {version}\r\n");
                }
                if let Some(s) = session {
                    let _ = write!(req, "Mcp-Session-Id: {s}\r\n");
                }
            }
            Era::Unknown => {}
        }
        for (k, v) in headers {
            let _ = write!(req, "{k}: {v}\r\n");
        }
        if matches!(
            method,
            Some("tools/call" | "prompts/get" | "resources/read")
        ) {
            credential.write_call(&mut req);
        } else {
            credential.write(&mut req);
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
        req
    }

    /// Answers the requests the upstream sends toward the agent's client
    /// during a call (sampling, elicitation, roots), one at a time as they
    /// come: relayed through `watch` when this upstream may send that kind
    /// (`client_requests`) and the call has someone to relay it, else
    /// refused with `-32601` at once, so the upstream's tool goes on without
    /// waiting for an answer that would never come. Runs until dropped
    /// with its call.
    async fn answer_asks(
        &self,
        era: &Era,
        credential: &Credential,
        asks: &Asks,
        watch: &Watch<'_>,
    ) {
        loop {
            let asked = asks.next().await;
            for (id, method, message) in asked {
                let kind = ClientRequest::of_method(&method)
                    .filter(|k| self.info.client_requests & k.bit() != 0);
                let answer = match watch.ask {
                    Some(relay) => relay.ask(&method, kind, &message).await,
                    None => {
                        tracing::info!(
                            upstream = %self.info.name,
                            method = %method,
                            "upstream asked the agent's client during a call: refused (not relayed for this upstream or call)"
                        );
                        Err(String::new())
                    }
                };
                let mut body = Vec::with_capacity(160 + id.len());
                body.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
                body.extend_from_slice(&id);
                body.push(b',');
                match answer {
                    Ok(member) => body.extend_from_slice(&member),
                    Err(why) if why.is_empty() => body.extend_from_slice(
                        br#""error":{"code":-32601,"message":"toolgate does not relay this request to the agent's client"}"#,
                    ),
                    Err(why) => {
                        body.extend_from_slice(br#""error":{"code":-32603,"message":"#);
                        write_str(&why, &mut body);
                        body.push(b'}');
                    }
                }
                body.push(b'}');
                let req = self.post(era, None, &body, &[], credential);
                self.send_aside(&req, "answer to the upstream's request")
                    .await;
            }
        }
    }

    /// One exchange; the reply matching `id` (or `None` for
    /// notifications). An event stream is read as it arrives: the upstream's
    /// progress under `watch` is handed on as it comes, and reading stops at
    /// the reply.
    async fn exchange(
        &self,
        req: &[u8],
        id: Option<u64>,
        watch: &Watch<'_>,
        asks: Option<&Asks>,
    ) -> Result<(u16, Option<String>, Option<Reply>), UpstreamError> {
        let mut events = sse::Events::default();
        let mut found: Option<Vec<u8>> = None;
        let mut observe = |media: MediaType, bytes: &[u8]| {
            if media != MediaType::EventStream || id.is_none() {
                return false;
            }
            events.feed(bytes, |data| {
                if reply_id(data) == id {
                    found = Some(data.to_vec());
                    return true;
                }
                if watch.progress.is_none() && asks.is_none() {
                    return false;
                }
                // Anything else on the call's stream is parsed once, for
                // what the call takes of it.
                match aside(data) {
                    Aside::Progress(token) if Some(token) == id => {
                        if let Some(progress) = watch.progress {
                            progress(data);
                        }
                    }
                    Aside::Request { id, method } => {
                        if let Some(asks) = asks {
                            asks.push(id, method, data.to_vec());
                        }
                    }
                    Aside::Progress(_) | Aside::Other => {}
                }
                false
            })
        };
        let resp = self
            .pool
            .exchange_observed(
                req,
                self.info.max_response_bytes,
                self.info.timeout,
                &mut observe,
            )
            .await?;
        let Some(id) = id else {
            return Ok((resp.status, resp.session_id, None));
        };
        let message = match resp.media {
            MediaType::Json => Some(resp.body),
            MediaType::EventStream => found,
            MediaType::Other => None,
        };
        match message {
            // The reply is parsed in full once, by the call that keeps it.
            Some(m) if reply_id(&m) == Some(id) => Ok((
                resp.status,
                resp.session_id,
                Some(Reply {
                    message: m,
                    http: None,
                }),
            )),
            _ if resp.status == 404 => Ok((404, resp.session_id, None)),
            _ if resp.status >= 500 => Err(UpstreamError::Unavailable),
            _ => Err(UpstreamError::BadResponse),
        }
    }

    /// Tells the upstream that the agent cancelled request `id` (best
    /// effort, within a short deadline: the agent is answered either way).
    async fn cancel(&self, era: &Era, id: u64, credential: &Credential) {
        let params = format!(r#""requestId":{id},"reason":"cancelled by the client""#);
        let note = self.request(
            era,
            None,
            "notifications/cancelled",
            params.as_bytes(),
            None,
            &[],
            credential,
        );
        self.send_aside(&note, "cancellation").await;
    }

    /// Sends `req` beside a call (a notification, toolgate's answer to the
    /// server): best effort within a short deadline, as the call goes on
    /// (or is answered) either way.
    async fn send_aside(&self, req: &[u8], what: &str) {
        let deadline = self.info.timeout.min(ASIDE_DEADLINE);
        let sent = self
            .pool
            .exchange(req, self.info.max_response_bytes, deadline)
            .await;
        if let Err(e) = sent {
            tracing::debug!(upstream = %self.info.name, error = %e, "{what} not delivered");
        }
    }

    /// Finds the era and, for the handshake era, opens a session.
    async fn ensure_ready(&self, credential: &Credential) -> Result<Era, UpstreamError> {
        let era = self.era.borrow().clone();
        if !matches!(era, Era::Unknown) {
            return Ok(era);
        }
        let _permit = self
            .handshake
            .acquire_permit(1)
            .await
            .map_err(|_| UpstreamError::Unavailable)?;
        let era = self.era.borrow().clone();
        if !matches!(era, Era::Unknown) {
            return Ok(era);
        }
        let era = match self.mode {
            UpstreamProtocol::Stateless => Era::Stateless,
            UpstreamProtocol::Handshake => self.initialize(credential).await?,
            UpstreamProtocol::Auto => {
                if self.probe_stateless(credential).await? {
                    Era::Stateless
                } else {
                    self.initialize(credential).await?
                }
            }
        };
        *self.era.borrow_mut() = era.clone();
        Ok(era)
    }

    async fn probe_stateless(&self, credential: &Credential) -> Result<bool, UpstreamError> {
        let id = self.id();
        let req = self.request(
            &Era::Stateless,
            Some(id),
            "server/discover",
            b"",
            None,
            &[],
            credential,
        );
        let reply = match self.exchange(&req, Some(id), &Watch::NONE, None).await {
            Ok((_, _, Some(r))) => r,
            Ok((_, _, None)) | Err(UpstreamError::BadResponse) => return Ok(false),
            Err(e) => return Err(e),
        };
        let mut parser = JsonParser::new();
        let Ok(tape) = parser.parse(&reply.message) else {
            return Ok(false);
        };
        let supported = tape
            .as_value()
            .get("result")
            .and_then(|r| r.get("supportedVersions"))
            .and_then(|s| s.as_array());
        Ok(supported.is_some_and(|s| {
            s.iter()
                .any(|v| v.into_string().is_some_and(protocol::is_modern))
        }))
    }

    async fn initialize(&self, credential: &Credential) -> Result<Era, UpstreamError> {
        let id = self.id();
        // The kinds of request this upstream may have relayed to agents'
        // clients are offered (an agent whose client lacks one is refused
        // when asked).
        let mut capabilities = String::from("{");
        for kind in ClientRequest::ALL {
            if self.info.client_requests & kind.bit() != 0 {
                if capabilities.len() > 1 {
                    capabilities.push(',');
                }
                capabilities.push_str(&format!(r#""{}":{{}}"#, kind.capability()));
            }
        }
        capabilities.push('}');
        let params = format!(
            r#""protocolVersion":"{}","capabilities":{capabilities},"clientInfo":{}"#,
            protocol::LATEST_HANDSHAKE_VERSION,
            CLIENT_INFO
        );
        let fresh = Era::Handshake {
            session: None,
            version: protocol::LATEST_HANDSHAKE_VERSION,
        };
        let req = self.request(
            &fresh,
            Some(id),
            "initialize",
            params.as_bytes(),
            None,
            &[],
            credential,
        );
        let (_, session, reply) = self.exchange(&req, Some(id), &Watch::NONE, None).await?;
        let reply = reply.ok_or(UpstreamError::BadResponse)?;
        let mut parser = JsonParser::new();
        let tape = parser
            .parse(&reply.message)
            .map_err(|_| UpstreamError::BadResponse)?;
        let offered = tape
            .as_value()
            .get("result")
            .and_then(|r| r.get("protocolVersion"))
            .and_then(|v| v.into_string());
        let version = protocol::HANDSHAKE_VERSIONS
            .iter()
            .find(|v| Some(**v) == offered)
            .copied()
            .ok_or(UpstreamError::BadResponse)?;
        let era = Era::Handshake {
            session: session.map(Rc::from),
            version,
        };
        let note = self.request(
            &era,
            None,
            "notifications/initialized",
            b"",
            None,
            &[],
            credential,
        );
        self.exchange(&note, None, &Watch::NONE, None).await?;
        tracing::debug!(upstream = %self.info.name, version, "upstream session established");
        Ok(era)
    }

    /// Sends a request carrying `credential` and returns the upstream's
    /// JSON-RPC reply. `params` is the inside of the params object;
    /// `headers` are extra routing headers for the stateless era
    /// (`Mcp-Name`, `Mcp-Param-*`). With a progress taker in `watch` the
    /// upstream is asked for progress; when `watch` is cancelled, the
    /// exchange is dropped (its connection with it) and the upstream told.
    pub async fn call(
        &self,
        method: &str,
        params: &[u8],
        headers: &[(String, String)],
        credential: &Credential,
        watch: &Watch<'_>,
    ) -> Result<Reply, UpstreamError> {
        for attempt in 0..2 {
            let era = self.ensure_ready(credential).await?;
            let id = self.id();
            let extra: &[(String, String)] = if matches!(era, Era::Stateless) {
                headers
            } else {
                &[]
            };
            let progress = watch.progress.map(|_| id);
            let req = self.request(&era, Some(id), method, params, progress, extra, credential);
            // A session's server may ask the agent's client something on
            // the call's stream; it is relayed or refused meanwhile.
            let asks = Asks::default();
            let exchange = async {
                match era {
                    Era::Handshake { .. } => {
                        futures_lite::future::or(
                            self.exchange(&req, Some(id), watch, Some(&asks)),
                            async {
                                self.answer_asks(&era, credential, &asks, watch).await;
                                Err(UpstreamError::Unavailable)
                            },
                        )
                        .await
                    }
                    Era::Stateless | Era::Unknown => {
                        self.exchange(&req, Some(id), watch, None).await
                    }
                }
            };
            let Some(answer) = unless_cancelled(watch, exchange).await else {
                // The exchange is dropped and its connection closed: in the
                // stateless era that is the cancellation; a session's
                // server is told with a notification.
                if matches!(era, Era::Handshake { .. }) {
                    self.cancel(&era, id, credential).await;
                }
                return Err(UpstreamError::Cancelled);
            };
            match answer? {
                (_, _, Some(reply)) => return Ok(reply),
                (404, _, None)
                    if attempt == 0
                        && matches!(
                            era,
                            Era::Handshake {
                                session: Some(_),
                                ..
                            }
                        ) =>
                {
                    // The upstream forgot our session: open a new one and retry once.
                    tracing::info!(upstream = %self.info.name, "upstream session expired; re-initializing");
                    *self.era.borrow_mut() = Era::Unknown;
                }
                _ => return Err(UpstreamError::BadResponse),
            }
        }
        Err(UpstreamError::BadResponse)
    }
}

/// A request of the upstream's toward the agent's client: its id (JSON
/// text), method, and the message as the upstream wrote it.
type Asked = (Vec<u8>, String, Vec<u8>);

/// The requests an upstream sent toward the agent's client during one
/// call, waiting for their answer.
#[derive(Default)]
struct Asks {
    waiting: std::cell::RefCell<Vec<Asked>>,
    waker: Cell<Option<std::task::Waker>>,
}

impl Asks {
    /// Keeps request `id` (JSON text) of `method` for its answer.
    fn push(&self, id: Vec<u8>, method: String, message: Vec<u8>) {
        self.waiting.borrow_mut().push((id, method, message));
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Waits for requests, and takes them.
    async fn next(&self) -> Vec<Asked> {
        std::future::poll_fn(|cx| {
            let mut waiting = self.waiting.borrow_mut();
            if waiting.is_empty() {
                self.waker.set(Some(cx.waker().clone()));
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(std::mem::take(&mut *waiting))
            }
        })
        .await
    }
}

/// What a message on a call's stream other than its reply is.
enum Aside {
    /// Progress under this (integer) token.
    Progress(u64),
    /// A request of the server's toward the client: its id (JSON text) and
    /// method.
    Request {
        id: Vec<u8>,
        method: String,
    },
    Other,
}

/// Reads `message` once to tell what it is.
fn aside(message: &[u8]) -> Aside {
    let mut parser = JsonParser::new();
    let Ok(tape) = parser.parse(message) else {
        return Aside::Other;
    };
    let v = tape.as_value();
    if let Some(token) = progress_token(v) {
        return Aside::Progress(token);
    }
    match (v.get("method").and_then(|m| m.into_string()), v.get("id")) {
        (Some(method), Some(id)) => {
            let mut raw = Vec::with_capacity(16);
            toolgate_core::jsonrpc::write_value(id, &mut raw);
            Aside::Request {
                id: raw,
                method: method.to_owned(),
            }
        }
        _ => Aside::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streams_other_messages_are_told_apart_in_one_read() {
        let progress = br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":7,"progress":1}}"#;
        assert!(matches!(aside(progress), Aside::Progress(7)));
        let ask = br#"{"jsonrpc":"2.0","id":"s-1","method":"elicitation/create","params":{}}"#;
        match aside(ask) {
            Aside::Request { id, method } => {
                assert_eq!(
                    (id.as_slice(), method.as_str()),
                    (&br#""s-1""#[..], "elicitation/create")
                );
            }
            _ => panic!("not read as a request"),
        }
        let log = br#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#;
        assert!(matches!(aside(log), Aside::Other));
        assert!(matches!(aside(b"not json"), Aside::Other));
    }
}
