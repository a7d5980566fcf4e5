//! Phase: the answers toolgate gives itself — `initialize`,
//! `server/discover`, `ping`, `tools/list`, `prompts/list`,
//! `resources/list` and `resources/templates/list` — without asking an
//! upstream (the lists are federated from the upstreams' catalogs when
//! they are fetched, and hold only what is attached to the agent).
//!
//! `tools/list` shows only what the caller may call: the agent's attached
//! tools, a sub-token's narrowing of them, and scoped tools only for end
//! users in their scope (as `tools/call` refuses the others).

use simd_json::prelude::*;
use toolgate_core::audit::{truncate, Outcome, MAX_METHOD_LEN};
use toolgate_core::jsonrpc::{write_str, RpcRequest};
use toolgate_core::protocol;
use toolgate_core::refusal::{Refusal, RefusalKind};
use toolgate_decision::{Agent, Snapshot};

use super::ctx::{Answer, CallCtx};
use super::identify::user_of;
use super::{wire, Gateway};
use crate::http::server::Request;

/// `serverInfo` toolgate presents to agents.
const SERVER_INFO: &str = concat!(
    r#"{"name":"toolgate","version":""#,
    env!("CARGO_PKG_VERSION"),
    r#""}"#
);

/// What toolgate offers agents: tools, prompts and resources, whose list
/// changes it announces (on `GET /mcp` in a session, on
/// `subscriptions/listen` in the stateless era), and completions.
const CAPABILITIES: &str = r#"{"tools":{"listChanged":true},"prompts":{"listChanged":true},"resources":{"subscribe":false,"listChanged":true},"completions":{}}"#;

/// Members that make a stateless-era answer per caller: never cached
/// across callers.
const PRIVATE_COMPLETE: &str = r#""resultType":"complete","ttlMs":0,"cacheScope":"private""#;

impl Gateway {
    /// Answers a request that is not a `tools/call`, or refuses its method.
    pub(super) fn builtin(
        &self,
        snap: &Snapshot,
        agent: &Agent,
        req: &Request<'_>,
        rpc: &RpcRequest<'_>,
        stateless: bool,
        ctx: &mut CallCtx,
    ) -> Result<Answer, Refusal> {
        let mut result = Vec::with_capacity(256);
        let mut session = None;
        match rpc.method {
            "initialize" if !stateless => {
                let asked = rpc
                    .params
                    .and_then(|p| p.get("protocolVersion"))
                    .and_then(|v| v.into_string());
                let version = protocol::HANDSHAKE_VERSIONS
                    .iter()
                    .find(|v| Some(**v) == asked)
                    .copied()
                    .unwrap_or(protocol::LATEST_HANDSHAKE_VERSION);
                ctx.version = Some(version);
                initialize(version, &mut result);
                session = Some(self.new_session(agent, super::ask::client_offers(rpc)));
            }
            "server/discover" => discover(&mut result),
            "ping" => result.extend_from_slice(if stateless {
                br#"{"resultType":"complete"}"#
            } else {
                b"{}"
            }),
            "tools/list" => {
                if ctx.scope.is_none() && !agent.scoped {
                    tools_list(agent.tools_list.as_bytes(), stateless, &mut result);
                } else {
                    ctx.user = user_of(agent, req, ctx.user.take())?;
                    let listed = listed_for(snap, agent, ctx);
                    tools_list(&listed, stateless, &mut result);
                }
            }
            "prompts/list" | "resources/list" | "resources/templates/list" => {
                let (key, listed) = match rpc.method {
                    "prompts/list" => ("prompts", &agent.prompts_list),
                    "resources/list" => ("resources", &agent.resources_list),
                    _ => ("resourceTemplates", &agent.templates_list),
                };
                // A sub-token narrowed to some tools sees no prompt or resource.
                let listed = if ctx.scope.is_some() { "[]" } else { &**listed };
                list(key, listed.as_bytes(), stateless, &mut result);
            }
            other => {
                return Err(Refusal::with(
                    RefusalKind::MethodNotFound,
                    format!("`{}`", truncate(other, MAX_METHOD_LEN)),
                ))
            }
        }
        let mut body = Vec::with_capacity(result.len() + 64);
        wire::result(ctx.request_id.as_deref(), &result, &mut body);
        Ok(Answer::Message {
            status: 200,
            body,
            session,
            outcome: Outcome::Success,
            error_code: None,
        })
    }
}

/// The `initialize` result for `version`.
fn initialize(version: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(br#"{"protocolVersion":"#);
    write_str(version, out);
    out.extend_from_slice(br#","capabilities":"#);
    out.extend_from_slice(CAPABILITIES.as_bytes());
    out.extend_from_slice(br#","serverInfo":"#);
    out.extend_from_slice(SERVER_INFO.as_bytes());
    out.push(b'}');
}

/// The `server/discover` result.
fn discover(out: &mut Vec<u8>) {
    out.extend_from_slice(br#"{"supportedVersions":["#);
    write_str(protocol::LATEST_MODERN_VERSION, out);
    out.extend_from_slice(br#"],"capabilities":"#);
    out.extend_from_slice(CAPABILITIES.as_bytes());
    out.extend_from_slice(
        br#","resultType":"complete","ttlMs":0,"cacheScope":"private","_meta":{"#,
    );
    write_str(protocol::META_SERVER_INFO, out);
    out.push(b':');
    out.extend_from_slice(SERVER_INFO.as_bytes());
    out.extend_from_slice(b"}}");
}

/// The `tools/list` result around the `tools` array `listed`.
fn tools_list(listed: &[u8], stateless: bool, out: &mut Vec<u8>) {
    list("tools", listed, stateless, out);
}

/// A list result: the array `listed` under `key`.
fn list(key: &str, listed: &[u8], stateless: bool, out: &mut Vec<u8>) {
    out.push(b'{');
    write_str(key, out);
    out.push(b':');
    out.extend_from_slice(listed);
    if stateless {
        out.push(b',');
        out.extend_from_slice(PRIVATE_COMPLETE.as_bytes());
    }
    out.push(b'}');
}

/// The `tools` array of a caller narrowed by a sub-token or by tool scopes.
fn listed_for(snap: &Snapshot, agent: &Agent, ctx: &CallCtx) -> Vec<u8> {
    let groups = ctx.groups.as_deref().filter(|_| ctx.user.is_some());
    let names: Vec<&str> = match &ctx.scope {
        Some(tools) => tools.iter().map(String::as_str).collect(),
        None => agent.listed_order.iter().map(|n| &**n).collect(),
    };
    let mut out = Vec::with_capacity(agent.tools_list.len());
    out.push(b'[');
    let defs = names
        .into_iter()
        .filter_map(|t| snap.route(agent, t))
        .filter(|r| {
            r.scope
                .as_ref()
                .is_none_or(|s| snap.in_scope(s, ctx.user.as_deref(), groups))
        })
        .filter_map(|r| r.listed.as_deref());
    for (i, def) in defs.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(def.as_bytes());
    }
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(f: impl FnOnce(&mut Vec<u8>)) -> serde_json::Value {
        let mut out = Vec::new();
        f(&mut out);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn initialize_names_the_version_and_offers_tools() {
        let v = json(|o| initialize("2025-06-18", o));
        assert_eq!(v["protocolVersion"], "2025-06-18");
        assert_eq!(v["capabilities"]["tools"]["listChanged"], true);
        assert_eq!(v["serverInfo"]["name"], "toolgate");
    }

    #[test]
    fn discover_is_private_and_names_the_modern_version() {
        let v = json(discover);
        assert_eq!(v["supportedVersions"][0], protocol::LATEST_MODERN_VERSION);
        assert_eq!(v["cacheScope"], "private");
        assert_eq!(v["_meta"][protocol::META_SERVER_INFO]["name"], "toolgate");
    }

    #[test]
    fn stateless_tools_list_is_never_cacheable_across_callers() {
        let v = json(|o| tools_list(br#"[{"name":"crm__lookup"}]"#, true, o));
        assert_eq!(v["tools"][0]["name"], "crm__lookup");
        assert_eq!(
            (v["ttlMs"].as_u64(), &v["cacheScope"]),
            (Some(0), &serde_json::json!("private"))
        );
        let v = json(|o| tools_list(b"[]", false, o));
        assert_eq!(v, serde_json::json!({"tools": []}));
    }
}
