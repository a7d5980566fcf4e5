//! The OpenAPI kind of upstream: a REST API described by an OpenAPI 3.x
//! document, exposed as MCP tools without rewriting anything of the API.
//!
//! The document is read once ([`Surface`]); its operations are the
//! upstream's catalog (so attachment, `tools/list`, the Cedar schema and
//! tool pinning work as for an MCP upstream), and a `tools/call` becomes
//! exactly one HTTP request to the API's base URL ([`request::build`]),
//! whose answer becomes the tool result ([`request::result`]).

pub mod document;
pub mod request;
pub mod route;
pub mod surface;

use std::cell::RefCell;
use std::io::Write as _;
use std::rc::Rc;
use std::sync::Arc;

use serde_json::{json, Value};
use toolgate_core::audit::HttpCall;
use toolgate_core::config::ResolvedUpstream;
use toolgate_core::upstream_url::UpstreamUrl;
use toolgate_decision::{Published, Reader, UpstreamInfo};
use toolgate_net::client::{MediaType, Pool};

pub use surface::{Operation, SpecError, Surface};

/// Why an `openapi` upstream's document did not load.
#[derive(Debug, thiserror::Error)]
#[error("upstream `{upstream}`: `{source_name}`: {why}")]
pub struct LoadError {
    /// The upstream.
    pub upstream: String,
    /// Its document: the file or URL.
    pub source_name: String,
    /// What is wrong.
    pub why: String,
}

/// The tool surface of `upstream` when it is an `openapi` upstream (its
/// document read, or fetched, and checked now), `None` for an MCP upstream.
pub fn load(upstream: &ResolvedUpstream) -> Result<Option<Surface>, LoadError> {
    let Some(source) = &upstream.spec else {
        return Ok(None);
    };
    let fail = |why: String| LoadError {
        upstream: upstream.name().to_owned(),
        source_name: source.to_string(),
        why,
    };
    let text =
        document::read(source, upstream.ca_file.as_deref()).map_err(|e| fail(e.to_string()))?;
    let e = &upstream.entry;
    Surface::parse(&text, &e.include, &e.exclude)
        .map(Some)
        .map_err(|e| fail(e.to_string()))
}

use crate::{Credential, Reply, UpstreamError};

/// An upstream's tool surface as it stands now: the refresher publishes a
/// new one when its document changes, and every shard's client reads it.
pub type LiveSurface = Arc<Published<Surface>>;

/// One OpenAPI upstream as seen from one shard.
pub struct OpenApiClient {
    info: UpstreamInfo,
    surface: RefCell<Reader<Surface>>,
    pool: Pool,
}

impl OpenApiClient {
    /// A client of the API at `info.url` (its base URL) with the
    /// operations `surface` holds, over `tls` for an `https://` base URL.
    pub fn new(
        info: UpstreamInfo,
        surface: &LiveSurface,
        tls: Option<toolgate_net::tls::ClientTls>,
    ) -> Self {
        let pool = Pool::new(info.url.dial_target(), info.pool_size, tls);
        Self {
            info,
            surface: RefCell::new(surface.reader()),
            pool,
        }
    }

    /// The operations as they stand now.
    pub fn surface(&self) -> Rc<Arc<Surface>> {
        self.surface.borrow_mut().current()
    }

    /// The catalog: one `tools/list` page of the derived tools.
    pub fn list_tools(&self) -> Vec<Vec<u8>> {
        vec![self.surface().tools_page().to_string().into_bytes()]
    }

    /// Calls tool `params` (`"name":…,"arguments":…`) as one HTTP request
    /// carrying `credential`; the answer as a JSON-RPC reply. Arguments the
    /// operation does not take are answered with an `Invalid params` error
    /// and nothing is sent.
    pub async fn call(
        &self,
        params: &[u8],
        credential: &Credential,
    ) -> Result<Reply, UpstreamError> {
        let answer = match self.call_http(params, credential).await? {
            Ok(a) => a,
            Err(why) => return Ok(error_reply(format!("Invalid params: {why}"))),
        };
        let result = request::result(answer.status, answer.json, &answer.body)
            .map_err(|_| UpstreamError::BadResponse)?;
        let message = json!({ "jsonrpc": "2.0", "id": 1, "result": result });
        Ok(Reply {
            message: message.to_string().into_bytes(),
            http: Some(answer.http),
        })
    }

    /// Calls tool `params` as one HTTP request carrying `credential`; the
    /// API's answer as it came (the REST door passes it on). `Ok(Err(why))`:
    /// the arguments do not fit the operation, and nothing was sent.
    pub async fn call_http(
        &self,
        params: &[u8],
        credential: &Credential,
    ) -> Result<Result<HttpAnswer, String>, UpstreamError> {
        let mut text = Vec::with_capacity(params.len() + 2);
        text.push(b'{');
        text.extend_from_slice(params);
        text.push(b'}');
        let call: Value = serde_json::from_slice(&text).map_err(|_| UpstreamError::BadResponse)?;
        let name = call.get("name").and_then(Value::as_str).unwrap_or("");
        let args = call.get("arguments").unwrap_or(&Value::Null);
        self.send(name, args, credential).await
    }

    /// Calls tool `name` with `args` (already parsed) as one HTTP request
    /// carrying `credential`; as [`Self::call_http`].
    pub async fn send(
        &self,
        name: &str,
        args: &Value,
        credential: &Credential,
    ) -> Result<Result<HttpAnswer, String>, UpstreamError> {
        let surface = self.surface();
        let Some(op) = surface.get(name) else {
            return Ok(Err(format!("unknown tool `{name}`")));
        };
        let req = match request::build(&surface, op, &self.info.url.path, args) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let wire = encode(&self.info.url, &req, credential);
        let resp = self
            .pool
            .exchange(&wire, self.info.max_response_bytes, self.info.timeout)
            .await?;
        Ok(Ok(HttpAnswer {
            status: resp.status,
            json: resp.media == MediaType::Json,
            body: resp.body,
            http: HttpCall {
                method: Arc::clone(&op.method),
                path: Arc::clone(&op.path),
                status: resp.status,
            },
        }))
    }
}

/// A REST API's answer to one call, as it came.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    /// HTTP status.
    pub status: u16,
    /// Whether the body is `application/json`.
    pub json: bool,
    /// The body.
    pub body: Vec<u8>,
    /// The request the call became, for the audit record.
    pub http: HttpCall,
}

/// A JSON-RPC `Invalid params` reply with `message`.
fn error_reply(message: String) -> Reply {
    let m = json!({ "jsonrpc": "2.0", "id": 1, "error": { "code": -32602, "message": message } });
    Reply {
        message: m.to_string().into_bytes(),
        http: None,
    }
}

/// The request on the wire: the API's `Host`, JSON in and out, the
/// operation's declared headers, the injected credential, the body.
fn encode(url: &UpstreamUrl, req: &request::Request, credential: &Credential) -> Vec<u8> {
    let body = req.body.as_deref().unwrap_or(b"");
    let mut out = Vec::with_capacity(body.len() + 256);
    let _ = write!(
        out,
        "{} {} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n",
        req.method, req.target, url.authority
    );
    if req.body.is_some() {
        let _ = write!(
            out,
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
    } else if matches!(&*req.method, "POST" | "PUT" | "PATCH") {
        out.extend_from_slice(b"Content-Length: 0\r\n");
    }
    for (k, v) in &req.headers {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    credential.write_call(&mut out);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}
