//! The demo's REST API `billing`, put behind toolgate from its OpenAPI
//! document (`kind = "openapi"`): invoices to read, refunds to create. It
//! answers only requests carrying the credential toolgate injects, so the
//! demo shows that agents never hold it.

use serde_json::{json, Value};

/// The secret toolgate injects (`Authorization: Bearer …`); agents never see it.
pub const TOKEN: &str = "demo-billing-service-token";

/// The API's OpenAPI document, as written next to the demo configuration.
pub fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {"title": "demo billing", "version": "1"},
        "paths": {
            "/invoices/{invoice_id}": {
                "get": {
                    "operationId": "getInvoice",
                    "summary": "One invoice, with the card it was paid with",
                    "parameters": [{"name": "invoice_id", "in": "path", "required": true,
                                    "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "the invoice"}}
                }
            },
            "/refunds": {
                "post": {
                    "operationId": "createRefund",
                    "summary": "Refund part of an invoice",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {
                        "type": "object",
                        "properties": {"invoice_id": {"type": "string"}, "amount": {"type": "integer"}},
                        "required": ["invoice_id", "amount"]
                    }}}},
                    "responses": {"200": {"description": "the refund"}}
                }
            }
        }
    })
}

/// The answer (status, JSON body) to `method path` with `authorization`
/// and `body`; `None` when the path is not the API's.
pub(super) fn answer(
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> Option<(u16, Value)> {
    let known = path == "/refunds" || path.starts_with("/invoices/");
    if !known {
        return None;
    }
    if authorization != Some(&format!("Bearer {TOKEN}")) {
        return Some((401, json!({"error": "missing or wrong service credential"})));
    }
    Some(match (method, path.strip_prefix("/invoices/")) {
        ("GET", Some(id)) if id == "inv-1" => (
            200,
            json!({"id": id, "customer": "c-42", "total": 120, "status": "open",
                   "card": "4111 1111 1111 1111"}),
        ),
        ("GET", Some(id)) => (404, json!({"error": format!("no invoice {id}")})),
        ("POST", None) => match serde_json::from_slice::<Value>(body) {
            Ok(r) => (
                200,
                json!({"refund_id": "rf-1", "invoice_id": r["invoice_id"], "amount": r["amount"]}),
            ),
            Err(_) => (400, json!({"error": "body is not JSON"})),
        },
        _ => (405, json!({"error": "method not allowed"})),
    })
}
