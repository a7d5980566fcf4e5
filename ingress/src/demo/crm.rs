//! The demo's MCP server `crm`: `echo`, `lookup_customer` (a record with a
//! card number and an e-mail address, for the output rules to mask),
//! `delete_record` (annotated destructive) and `send_email` (which sends
//! nothing: it says what it would have sent), in the handshake era.

use serde_json::{json, Value};

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
         "annotations": {"openWorldHint": true}}
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

/// The JSON-RPC answer to `req` (`None` for a notification).
pub(super) fn answer(req: &Value) -> Option<Value> {
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
