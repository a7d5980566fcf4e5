//! The demo's MCP server `crm`: `echo`, `lookup_customer` (a record with a
//! card number and an e-mail address, for the output rules to mask),
//! `delete_record` (annotated destructive), `send_email` (which sends
//! nothing: it says what it would have sent) and `whoami` (the end user
//! toolgate's signed assertion names), in the handshake era; a resource
//! per customer (`crm://customers/{id}`, the same record) and a prompt
//! (`summarize_customer`).

use std::sync::OnceLock;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::signature::KeyPair;
use serde_json::{json, Value};

/// The public half of the demo's assertion key, which `whoami` checks
/// assertions against (as a real upstream would against the JWKS).
static ASSERTION_KEY: OnceLock<Vec<u8>> = OnceLock::new();

/// A fresh Ed25519 key for the demo's assertions, as PKCS#8 PEM; its
/// public half is what `whoami` trusts.
pub(super) fn assertion_key() -> std::io::Result<String> {
    let rng = ring::rand::SystemRandom::new();
    let der = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| std::io::Error::other("cannot generate a key"))?;
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(der.as_ref())
        .map_err(|_| std::io::Error::other("cannot read the key"))?;
    let _ = ASSERTION_KEY.set(pair.public_key().as_ref().to_vec());
    Ok(format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode(der.as_ref())
    ))
}

/// What `whoami` answers: the assertion's subject and actor once its
/// signature checks out, or why not.
fn whoami(assertion: Option<&str>) -> String {
    let Some(token) = assertion else {
        return "no identity assertion".into();
    };
    let Some((signed, signature)) = token.rsplit_once('.') else {
        return "malformed assertion".into();
    };
    let key = ASSERTION_KEY.get().map(Vec::as_slice).unwrap_or_default();
    let verified = URL_SAFE_NO_PAD.decode(signature).is_ok_and(|sig| {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
            .verify(signed.as_bytes(), &sig)
            .is_ok()
    });
    if !verified {
        return "assertion signature does not verify".into();
    }
    let claims: Value = signed
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    match claims["act"]["sub"].as_str() {
        Some(agent) => format!(
            "called for {} by {agent} (assertion verified)",
            claims["sub"].as_str().unwrap_or("?")
        ),
        None => format!(
            "called by {} for no end user (assertion verified)",
            claims["sub"].as_str().unwrap_or("?")
        ),
    }
}

fn tools() -> Value {
    json!([
        {"name": "echo", "description": "Echoes its text back.",
         "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
        {"name": "lookup_customer", "description": "Looks up a customer record by id.",
         "inputSchema": {"type": "object", "properties": {"customer_id": {"type": "string"}}, "required": ["customer_id"]}},
        {"name": "delete_record", "description": "Deletes a CRM record.",
         "inputSchema": {"type": "object", "properties": {"record_id": {"type": "string"}}, "required": ["record_id"]},
         "annotations": {"destructiveHint": true}},
        {"name": "send_email", "description": "Sends an e-mail to any address.",
         "inputSchema": {"type": "object", "properties": {"to": {"type": "string"}, "body": {"type": "string"}}, "required": ["to", "body"]},
         "annotations": {"openWorldHint": true}},
        {"name": "whoami", "description": "Says which end user the call was made for.",
         "inputSchema": {"type": "object", "properties": {}},
         "annotations": {"readOnlyHint": true}}
    ])
}

/// The demo's customer record `id`: a card number and an e-mail address
/// for the output rules to mask.
fn customer(id: &Value) -> Value {
    json!({
        "id": id,
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "card": "4111 1111 1111 1111",
        "tier": "gold"
    })
}

fn call(name: &str, args: &Value, assertion: Option<&str>) -> Value {
    let text = match name {
        "whoami" => whoami(assertion),
        "echo" => args["text"].as_str().unwrap_or("").to_owned(),
        "lookup_customer" => customer(&args["customer_id"]).to_string(),
        "delete_record" => format!(
            "record {} deleted",
            args["record_id"].as_str().unwrap_or("?")
        ),
        "send_email" => format!(
            "sent to {}: {}",
            args["to"].as_str().unwrap_or("?"),
            args["body"].as_str().unwrap_or("")
        ),
        _ => {
            return json!({"content": [{"type": "text", "text": format!("unknown tool {name}")}], "isError": true})
        }
    };
    json!({"content": [{"type": "text", "text": text}], "isError": false})
}

/// The JSON-RPC answer to `req` (`None` for a notification), which came
/// with identity assertion `assertion`.
pub(super) fn answer(req: &Value, assertion: Option<&str>) -> Option<Value> {
    let id = req.get("id")?.clone();
    let method = req["method"].as_str().unwrap_or("");
    let result = match method {
        "initialize" => json!({"protocolVersion": "2025-11-25",
                               "capabilities": {"tools": {}, "prompts": {}, "resources": {}},
                               "serverInfo": {"name": "toolgate-demo-crm", "version": "1"}}),
        "ping" => json!({}),
        "tools/list" => json!({"tools": tools()}),
        "prompts/list" => json!({"prompts": [{
            "name": "summarize_customer",
            "description": "Drafts a support reply about a customer.",
            "arguments": [{"name": "customer_id", "required": true}]
        }]}),
        "prompts/get" => {
            let id = req["params"]["arguments"]["customer_id"]
                .as_str()
                .unwrap_or("?");
            let record = customer(&json!(id));
            json!({"messages": [{"role": "user", "content": {"type": "text",
                "text": format!("Draft a short support reply to this customer: {record}")}}]})
        }
        "resources/list" => json!({"resources": [{
            "uri": "crm://customers/c-42", "name": "customer c-42", "mimeType": "application/json"
        }]}),
        "resources/templates/list" => json!({"resourceTemplates": [{
            "uriTemplate": "crm://customers/{customer_id}", "name": "customer", "mimeType": "application/json"
        }]}),
        "resources/read" => {
            let uri = req["params"]["uri"].as_str().unwrap_or("");
            match uri.strip_prefix("crm://customers/") {
                Some(id) => json!({"contents": [{"uri": uri, "mimeType": "application/json",
                                                  "text": customer(&json!(id)).to_string()}]}),
                None => {
                    return Some(json!({"jsonrpc": "2.0", "id": id,
                                       "error": {"code": -32002, "message": "Resource not found"}}))
                }
            }
        }
        "tools/call" => call(
            req["params"]["name"].as_str().unwrap_or(""),
            &req["params"]["arguments"],
            assertion,
        ),
        _ => {
            return Some(
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "Method not found"}}),
            )
        }
    };
    Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}
