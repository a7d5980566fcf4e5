//! Requests for the phases' unit tests: a raw HTTP head parsed by the
//! server's own parser, so a phase sees exactly what it sees in service.

use std::time::Instant;

use crate::http::head::{parse_head, Limits};
use crate::http::server::Request;

/// Runs `f` on the request `head` (request line and headers, `\r\n`
/// separated, without the blank line) with `body`.
pub(super) fn with_request<R>(head: &str, body: &str, f: impl FnOnce(&Request<'_>) -> R) -> R {
    let buf = format!("{head}\r\n\r\n").into_bytes();
    let limits = Limits {
        max_header_bytes: 16 * 1024,
        max_headers: 64,
        max_body_bytes: 1024 * 1024,
    };
    let parsed = parse_head(&buf, &limits).unwrap().unwrap();
    let req = Request {
        head: &parsed,
        buf: &buf,
        body: body.as_bytes(),
        peer: None,
        secure: false,
        client_names: None,
        started: Instant::now(),
        early: None,
    };
    f(&req)
}

/// The API key of agent `bot` in [`snapshot`].
pub(super) fn bot_key() -> String {
    toolgate_core::identity::format_key(&[1u8; 32]).0
}

/// The configuration of [`snapshot`].
fn config(extra: &str) -> toolgate_core::config::ValidConfig {
    config_with("", extra)
}

/// The configuration of [`snapshot`], with `bot_keys` (TOML keys) in
/// agent `bot`'s table.
fn config_with(bot_keys: &str, extra: &str) -> toolgate_core::config::ValidConfig {
    let bot = toolgate_core::identity::format_key(&[1u8; 32]).1;
    let proxy = toolgate_core::identity::format_key(&[2u8; 32]).1;
    let text = format!(
        r#"
[[upstreams]]
name = "crm"
url = "http://127.0.0.1:9101/mcp"
[[agents]]
id = "bot"
api_key_sha256 = "{bot}"
tools = ["crm__lookup"]
{bot_keys}
[[agents]]
id = "proxy"
api_key_sha256 = "{proxy}"
tools = ["crm__lookup"]
act_for_users = true
{extra}
"#
    );
    toolgate_core::config::parse(&text, "t", std::path::Path::new(".")).unwrap()
}

/// A snapshot of one upstream `crm` (catalog not fetched) and two agents:
/// `bot` (key [`bot_key`], `crm__lookup` attached) and `proxy`
/// (`act_for_users`), plus `extra` TOML.
pub(super) fn snapshot(extra: &str) -> toolgate_decision::Snapshot {
    toolgate_decision::Snapshot::build(&config(extra), &[None])
}

/// A shard's handler for [`snapshot`]'s configuration (plus `extra`)
/// with the Cedar `policies`, its audit ring unconsumed.
pub(super) fn gateway(extra: &str, policies: &[&str]) -> super::Gateway {
    gateway_with("", extra, policies)
}

/// [`gateway`], with `bot_keys` (TOML keys) in agent `bot`'s table.
pub(super) fn gateway_with(bot_keys: &str, extra: &str, policies: &[&str]) -> super::Gateway {
    let cfg = config_with(bot_keys, extra);
    let loaded = crate::shared::Loaded {
        credentials: toolgate_upstream::credential::load(&cfg).unwrap(),
        openapi: crate::process::openapi_surfaces(&cfg).unwrap(),
        stdio: std::collections::HashMap::new(),
        assertions: None,
        exchanges: std::collections::HashMap::new(),
        accounts: None,
        tls: toolgate_net::tls::TlsSetup::default(),
        subtokens: None,
        oauth: Vec::new(),
        pins: None,
    };
    let texts = policies
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (
                std::path::PathBuf::from(format!("p{i}.cedar")),
                (*p).to_owned(),
            )
        })
        .collect();
    let shared = crate::shared::Shared::new(
        cfg,
        texts,
        toolgate_control::State::default(),
        [7u8; 32],
        loaded,
    )
    .unwrap();
    let (writer, _) = toolgate_sinks::audit_ring(16);
    let health = toolgate_sinks::AuditHealth::new(1, toolgate_core::config::Durability::Batch);
    super::Gateway::new(
        0,
        shared,
        toolgate_sinks::AuditProducer::new(0, writer, health),
    )
}
