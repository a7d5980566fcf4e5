//! `toolgate demo`: the gateway with a built-in configuration and a small
//! in-process MCP upstream, so a newcomer sees every part working with no
//! setup. The upstream speaks the handshake era over plain blocking sockets;
//! it is demo scaffolding, not part of the gateway's request path.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use serde_json::{json, Value};

/// The demo agents: (id, API key, attached tools).
pub const AGENTS: [(&str, &str, &[&str]); 2] = [
    (
        "support-bot",
        "tg_demo_support_key",
        &["crm__lookup_customer", "crm__echo"],
    ),
    (
        "billing-bot",
        "tg_demo_billing_key",
        &["crm__lookup_customer", "crm__delete_record", "crm__echo"],
    ),
];

/// The demo configuration, listening on `listen` with the demo upstream at `upstream`.
pub fn config(listen: SocketAddr, upstream: SocketAddr, audit_dir: &std::path::Path) -> String {
    let mut s = format!(
        "[server]\nlisten = \"{listen}\"\nshards = 1\n\n[[upstreams]]\nname = \"crm\"\nurl = \"http://{upstream}/mcp\"\ntimeout_ms = 5000\n\n"
    );
    for (id, key, tools) in AGENTS {
        let hash = hex::encode(toolgate_core::identity::key_hash(key.as_bytes()));
        let tools: Vec<String> = tools.iter().map(|t| format!("\"{t}\"")).collect();
        s.push_str(&format!(
            "[[agents]]\nid = \"{id}\"\napi_key_sha256 = \"{hash}\"\ntools = [{}]\n\n",
            tools.join(", ")
        ));
    }
    s.push_str(&format!("[audit]\ndir = \"{}\"\n\n", audit_dir.display()));
    s.push_str(OUTPUT_RULES);
    s
}

/// The demo's output rules: card numbers masked for every agent, e-mail
/// addresses masked for billing-bot only.
pub const OUTPUT_RULES: &str = r#"[[output_rules]]
name = "cards"
tools = ["crm__*"]
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

fn tools() -> Value {
    json!([
        {"name": "echo", "description": "Echoes its text back.",
         "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
        {"name": "lookup_customer", "description": "Looks up a customer record by id.",
         "inputSchema": {"type": "object", "properties": {"customer_id": {"type": "string"}}, "required": ["customer_id"]}},
        {"name": "delete_record", "description": "Deletes a CRM record.",
         "inputSchema": {"type": "object", "properties": {"record_id": {"type": "string"}}, "required": ["record_id"]}}
    ])
}

fn call(name: &str, args: &Value) -> Value {
    let text = match name {
        "echo" => args["text"].as_str().unwrap_or("").to_owned(),
        "lookup_customer" => json!({
            "id": args["customer_id"],
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "card": "4111 1111 1111 1111",
            "tier": "gold"
        })
        .to_string(),
        "delete_record" => format!(
            "record {} deleted",
            args["record_id"].as_str().unwrap_or("?")
        ),
        _ => {
            return json!({"content": [{"type": "text", "text": format!("unknown tool {name}")}], "isError": true})
        }
    };
    json!({"content": [{"type": "text", "text": text}], "isError": false})
}

fn answer(req: &Value) -> Option<Value> {
    let id = req.get("id")?.clone();
    let method = req["method"].as_str().unwrap_or("");
    let result = match method {
        "initialize" => json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                               "serverInfo": {"name": "toolgate-demo-crm", "version": "1"}}),
        "ping" => json!({}),
        "tools/list" => json!({"tools": tools()}),
        "tools/call" => call(
            req["params"]["name"].as_str().unwrap_or(""),
            &req["params"]["arguments"],
        ),
        _ => {
            return Some(
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "Method not found"}}),
            )
        }
    };
    Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

fn serve(mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let (head_len, method, length) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let len = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| {
                            std::str::from_utf8(h.value)
                                .ok()?
                                .trim()
                                .parse::<usize>()
                                .ok()
                        })
                        .unwrap_or(0);
                    break (n, req.method.unwrap_or("").to_owned(), len.min(1 << 20));
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
        let response = match method.as_str() {
            "POST" => match serde_json::from_slice::<Value>(&body)
                .ok()
                .as_ref()
                .map(answer)
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
            "DELETE" => "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_owned(),
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
        "\nWith the official Python SDK (pip install mcp):\n  python3 -c \"import asyncio, httpx2; from mcp import Client; from mcp.client.streamable_http import streamable_http_client as h\nasync def main():\n    async with Client(h('{url}', http_client=httpx2.AsyncClient(headers={{'Authorization': 'Bearer {support}'}}))) as c:\n        print([t.name for t in (await c.list_tools()).tools])\n        print((await c.call_tool('crm__lookup_customer', {{'customer_id': 'c-42'}})).content[0].text)\nasyncio.run(main())\"\n"
    ));
    s.push_str(&format!(
        "\nEvery call is recorded in the audit log in {dir}:\n  toolgate audit tail -f {dir}\n  toolgate audit verify {dir}\nPress Ctrl-C to stop.\n",
        dir = audit_dir.display()
    ));
    s
}
