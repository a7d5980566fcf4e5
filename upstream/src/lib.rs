//! toolgate-upstream: the one upstream interface — what the call phases and
//! the catalog sync ask of an upstream, whatever its kind — with the
//! credentials toolgate injects into upstream calls.
//!
//! Where it sits: `ingress` drives it (phase 7 of a call, the forward;
//! catalog fetches); it builds on `toolgate-net` for connections and TLS
//! and never reaches back into `ingress`.
//!
//! An [`Upstream`] is one upstream as one shard sees it: what the snapshot
//! says of it ([`UpstreamInfo`]), the credential toolgate injects into its
//! calls, and the client of its kind. Kinds are implementations behind
//! this interface — MCP over HTTP ([`mcp`]), REST APIs described by an
//! OpenAPI document ([`openapi`]) and MCP servers toolgate runs itself,
//! sandboxed, over stdio ([`stdio`]) — so a new kind is a new module and a
//! new `Kind` variant, not a branch in every phase.
//!
//! Credential injection belongs to the interface, not to a kind: a call
//! takes the credential once ([`Upstream::credential`]) and every request
//! of that call carries it; the agent's own token never goes on.

#![warn(missing_docs)]

pub mod assertion;
pub mod connect;
pub mod credential;
pub mod exchange;
pub mod mcp;
pub mod oauth;
pub mod openapi;
pub mod path;
pub mod routes;
pub mod sse;
pub mod stdio;
pub mod watch;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use toolgate_core::refusal::RefusalKind;
use toolgate_core::secret::Secret;
use toolgate_decision::{Reader, UpstreamInfo};

use toolgate_net::client::ClientError;
pub use watch::{Answered, Ask, Cancel, Watch};

/// One upstream as seen from one shard.
pub struct Upstream {
    info: UpstreamInfo,
    /// The header line toolgate injects into every request, if configured.
    credential: Option<RefCell<Reader<Secret>>>,
    /// Where its end users' tokens are exchanged (`token_exchange`).
    exchange: Option<exchange::Exchanger>,
    kind: Kind,
}

/// The client of an upstream's kind.
enum Kind {
    /// An MCP server over streamable HTTP (either era).
    Mcp(mcp::McpClient),
    /// A REST API described by an OpenAPI document.
    OpenApi(openapi::OpenApiClient),
    /// An MCP server toolgate runs as a sandboxed process.
    Stdio(stdio::StdioClient),
}

/// What a client of an upstream is built on besides its settings: the
/// kind's own part, when it has one.
pub enum Backend<'a> {
    /// An MCP server over HTTP, over `tls` for an `https://` URL.
    Http(Option<toolgate_net::tls::ClientTls>),
    /// A REST API: its tool surface, and TLS toward it.
    OpenApi(
        &'a openapi::LiveSurface,
        Option<toolgate_net::tls::ClientTls>,
    ),
    /// A stdio server's processes.
    Stdio(Arc<stdio::Pool>),
}

impl<'a> Backend<'a> {
    /// The backend of an upstream with these parts: its process when it
    /// has one, its REST surface when it has one, else MCP over HTTP.
    pub fn of(
        tls: Option<toolgate_net::tls::ClientTls>,
        openapi: Option<&'a openapi::LiveSurface>,
        stdio: Option<Arc<stdio::Pool>>,
    ) -> Self {
        match (stdio, openapi) {
            (Some(p), _) => Backend::Stdio(p),
            (None, Some(s)) => Backend::OpenApi(s, tls),
            (None, None) => Backend::Http(tls),
        }
    }
}

/// Why an upstream call failed, as the agent will be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// Connection refused or lost, or the upstream answered 5xx.
    #[error("upstream unavailable")]
    Unavailable,
    /// No answer in time.
    #[error("upstream timed out")]
    Timeout,
    /// An answer that is not an MCP response.
    #[error("upstream sent an invalid response")]
    BadResponse,
    /// The upstream's credential is not available (an OAuth token that
    /// could not be obtained or expired, a credential file without a usable
    /// value): nothing was sent.
    #[error("no credential for the upstream")]
    NoCredential,
    /// The agent cancelled the call while it ran (the upstream was told,
    /// where its kind has a way to be).
    #[error("cancelled by the client")]
    Cancelled,
}

impl UpstreamError {
    /// The refusal the agent sees.
    pub fn refusal_kind(self) -> RefusalKind {
        match self {
            UpstreamError::Unavailable => RefusalKind::UpstreamUnavailable,
            UpstreamError::Timeout => RefusalKind::UpstreamTimeout,
            UpstreamError::BadResponse => RefusalKind::UpstreamBadResponse,
            UpstreamError::NoCredential => RefusalKind::UpstreamCredentialUnavailable,
            UpstreamError::Cancelled => RefusalKind::Cancelled,
        }
    }
}

impl From<ClientError> for UpstreamError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Connect | ClientError::Io => UpstreamError::Unavailable,
            ClientError::Timeout => UpstreamError::Timeout,
            ClientError::BadResponse(_) | ClientError::TooLarge => UpstreamError::BadResponse,
        }
    }
}

/// What one call carries to its upstream: the header line configured for
/// the upstream as it stood when the call took it (none for an upstream
/// without one), and the end user the call is made for. Taken once per
/// call, so a handshake and the call it precedes carry the same credential.
pub struct Credential {
    #[expect(
        clippy::redundant_allocation,
        reason = "the shard-local handle `Reader` gives out"
    )]
    line: Option<Rc<Arc<Secret>>>,
    user: Option<Arc<str>>,
    /// The call's end-user header line (`[upstreams.identity]`): its
    /// signed assertion or its exchanged token.
    identity: Option<Arc<Secret>>,
    /// Whether that line takes the service credential's place on the call
    /// itself (both name the same header).
    replaces: bool,
}

impl Credential {
    /// Appends the service credential's header line (with its CRLF), if
    /// any: every request that is not the call itself (a handshake, a
    /// catalog fetch).
    fn write(&self, req: &mut Vec<u8>) {
        if let Some(line) = &self.line {
            req.extend_from_slice(line.expose());
        }
    }

    /// Appends what the call itself carries: the service credential, unless
    /// the end-user line replaces it, then the end-user line.
    fn write_call(&self, req: &mut Vec<u8>) {
        if !self.replaces {
            self.write(req);
        }
        if let Some(line) = &self.identity {
            req.extend_from_slice(line.expose());
        }
    }

    /// The same, for a call made for end user `user` (a stdio upstream
    /// with a process per user picks that user's).
    pub fn for_user(self, user: Option<Arc<str>>) -> Self {
        Self { user, ..self }
    }

    /// The same, carrying `line` (a complete `header: value` line: the
    /// call's end-user assertion or exchanged token) on the call itself
    /// (never on a handshake or a catalog fetch). A service credential in
    /// the same header is left off the call, so it never carries two.
    pub fn with_identity(self, line: Arc<Secret>, header: &str) -> Self {
        let replaces = self.line.as_ref().is_some_and(|l| {
            let l = l.expose();
            l.len() > header.len()
                && l[..header.len()].eq_ignore_ascii_case(header.as_bytes())
                && l[header.len()] == b':'
        });
        Self {
            identity: Some(line),
            replaces,
            ..self
        }
    }

    /// Whether the upstream has a service credential to send.
    pub fn has_service_credential(&self) -> bool {
        self.line.is_some()
    }
}

/// A JSON-RPC response message from the upstream, as JSON text.
pub struct Reply {
    /// The message (`{"jsonrpc":"2.0","id":…,"result"|"error":…}`).
    pub message: Vec<u8>,
    /// The HTTP request the call became, for a REST upstream (audited).
    pub http: Option<toolgate_core::audit::HttpCall>,
}

impl Upstream {
    /// A client of `info` for the current shard, of the kind `backend`
    /// says, injecting `credential` (a complete header line) into every
    /// request of an HTTP kind.
    pub fn new(
        info: UpstreamInfo,
        credential: Option<Reader<Secret>>,
        backend: Backend<'_>,
    ) -> Self {
        let kind = match backend {
            Backend::OpenApi(surface, tls) => {
                Kind::OpenApi(openapi::OpenApiClient::new(info.clone(), surface, tls))
            }
            Backend::Http(tls) => Kind::Mcp(mcp::McpClient::new(info.clone(), tls)),
            Backend::Stdio(p) => Kind::Stdio(stdio::StdioClient::new(info.clone(), p)),
        };
        Self {
            info,
            credential: credential.map(RefCell::new),
            exchange: None,
            kind,
        }
    }

    /// The same, exchanging its end users' tokens at `endpoint`.
    pub fn with_exchange(self, endpoint: Option<Arc<exchange::Endpoint>>) -> Self {
        Self {
            exchange: endpoint.map(exchange::Exchanger::new),
            ..self
        }
    }

    /// Where its end users' tokens are exchanged, for an upstream whose
    /// identity mode is `token_exchange`.
    pub fn exchanger(&self) -> Option<&exchange::Exchanger> {
        self.exchange.as_ref()
    }

    /// The upstream's configured name.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// What this client was built for.
    pub fn info(&self) -> &UpstreamInfo {
        &self.info
    }

    /// The credential to inject into a call now; an upstream whose
    /// credential source holds no usable value gets no call at all.
    pub fn credential(&self) -> Result<Credential, UpstreamError> {
        let Some(reader) = &self.credential else {
            return Ok(Credential {
                line: None,
                user: None,
                identity: None,
                replaces: false,
            });
        };
        let line = reader.borrow_mut().current();
        if line.expose().is_empty() {
            return Err(UpstreamError::NoCredential);
        }
        Ok(Credential {
            line: Some(line),
            user: None,
            identity: None,
            replaces: false,
        })
    }

    /// Sends request `method` (`tools/call`, `prompts/get`,
    /// `resources/read`, a list) with its `params` members (a tool call's
    /// `"name":…,"arguments":…`) and `credential`; `headers` are routing
    /// headers an upstream kind may use. Returns the upstream's JSON-RPC
    /// reply. A REST API answers tool calls only: anything else is a bad
    /// response. While it runs, the upstream's progress goes to `watch`'s
    /// taker, and a cancel of `watch` ends it ([`UpstreamError::Cancelled`]).
    pub async fn request(
        &self,
        method: &str,
        params: &[u8],
        headers: &[(String, String)],
        credential: &Credential,
        watch: &Watch<'_>,
    ) -> Result<Reply, UpstreamError> {
        match &self.kind {
            Kind::Mcp(c) => c.call(method, params, headers, credential, watch).await,
            Kind::OpenApi(c) if method == "tools/call" => {
                watch::unless_cancelled(watch, c.call(params, credential))
                    .await
                    .unwrap_or(Err(UpstreamError::Cancelled))
            }
            Kind::OpenApi(_) => Err(UpstreamError::BadResponse),
            Kind::Stdio(c) => {
                c.call(method, params, credential.user.as_deref(), watch)
                    .await
            }
        }
    }

    /// Every list of the upstream: its tools (which must be fetched), and
    /// its prompts, resources and resource templates (each empty when the
    /// upstream does not offer it or fails to list it: tools still route).
    pub async fn list_all(&self) -> Result<toolgate_decision::Listing, UpstreamError> {
        let tools = self.list_tools().await?;
        let mut listing = toolgate_decision::Listing::of_tools(tools);
        if matches!(self.kind, Kind::OpenApi(_)) {
            return Ok(listing);
        }
        for (method, out) in [
            ("prompts/list", &mut listing.prompts),
            ("resources/list", &mut listing.resources),
            ("resources/templates/list", &mut listing.templates),
        ] {
            let pages = self.list(method).await;
            match pages {
                Ok(p) => *out = p,
                Err(e) => {
                    tracing::debug!(upstream = self.name(), method, error = %e, "no list");
                }
            }
        }
        Ok(listing)
    }

    /// How many times the upstream has announced that its lists changed
    /// (`notifications/*/list_changed`): a stdio server's; 0 for the
    /// other kinds, whose lists are fetched again on their timer.
    pub fn list_changes(&self) -> u64 {
        match &self.kind {
            Kind::Stdio(c) => c.list_changes(),
            Kind::Mcp(_) | Kind::OpenApi(_) => 0,
        }
    }

    /// The REST API client, for an upstream described by an OpenAPI
    /// document (the REST door routes through its operations).
    pub fn openapi(&self) -> Option<&openapi::OpenApiClient> {
        match &self.kind {
            Kind::OpenApi(c) => Some(c),
            Kind::Mcp(_) | Kind::Stdio(_) => None,
        }
    }

    /// Every page of the upstream's tool catalog (`tools/list` results).
    pub async fn list_tools(&self) -> Result<Vec<Vec<u8>>, UpstreamError> {
        match &self.kind {
            Kind::OpenApi(c) => Ok(c.list_tools()),
            Kind::Mcp(_) | Kind::Stdio(_) => self.list("tools/list").await,
        }
    }

    /// Every page of list `method`, with the upstream's credential.
    async fn list(&self, method: &str) -> Result<Vec<Vec<u8>>, UpstreamError> {
        let credential = &self.credential()?;
        list_pages(|params| async move {
            self.request(method, &params, &[], credential, &Watch::NONE)
                .await
        })
        .await
    }
}

/// Every page of a list (`tools/list` and the like), following
/// `nextCursor` (at most 100 pages); `call` sends one list request with
/// the params given.
async fn list_pages<F, Fut>(call: F) -> Result<Vec<Vec<u8>>, UpstreamError>
where
    F: Fn(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = Result<Reply, UpstreamError>>,
{
    use simd_json::prelude::*;
    use toolgate_core::jsonrpc::{write_str, write_value, JsonParser};
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    let mut parser = JsonParser::new();
    for _ in 0..100 {
        let mut params = Vec::new();
        if let Some(c) = &cursor {
            params.extend_from_slice(br#""cursor":"#);
            write_str(c, &mut params);
        }
        let reply = call(params).await?;
        let tape = parser
            .parse(&reply.message)
            .map_err(|_| UpstreamError::BadResponse)?;
        let result = tape
            .as_value()
            .get("result")
            .filter(|r| r.is_object())
            .ok_or(UpstreamError::BadResponse)?;
        let mut page = Vec::new();
        write_value(result, &mut page);
        pages.push(page);
        cursor = result
            .get("nextCursor")
            .and_then(|c| c.into_string())
            .map(str::to_owned);
        if cursor.is_none() {
            return Ok(pages);
        }
    }
    Ok(pages)
}
