//! A plain HTTP request (the REST door, `/rest/{upstream}/…`) resolved to
//! one operation of the surface, and turned into the same arguments the
//! MCP door gives that operation — so one attachment, one policy and one
//! audit name cover both doors, and the upstream request is rebuilt from
//! the checked arguments by [`super::request::build`] either way. Path
//! checks and template matching are [`crate::path`]'s.
//!
//! Values are typed by the parameter's schema: `integer`, `number` and
//! `boolean` parameters take numbers and booleans written as text (a
//! value that does not parse stays text, and the schema check refuses
//! it); an `array` query parameter collects repeated keys (or splits on
//! `,` with `explode: false`). A JSON object body's properties are
//! arguments under their names (`body_{name}` where a parameter has the
//! name), any other JSON body is `body`.

use serde_json::{Map, Value};

use super::surface::{Body, Location, Operation, Surface};
pub use crate::path::RouteError;
use crate::path::{json_body, matching, query_pairs, query_value, split_target, typed, PathValues};

/// The operation `method` `path` names, with its path parameters' values.
fn find<'s>(
    surface: &'s Surface,
    method: &str,
    path: &str,
) -> Result<(&'s Operation, PathValues<'s>), RouteError> {
    let candidates = surface
        .operations
        .iter()
        .filter(|o| &*o.method == method)
        .map(|o| (&*o.path, o));
    matching(candidates, path)
}

impl Surface {
    /// Whether a `method` request for `path` (no query) reaches `op`, as
    /// the REST door would route it and as the API will.
    pub fn leads_to(&self, method: &str, path: &str, op: &Operation) -> bool {
        find(self, method, path).is_ok_and(|(found, _)| found.tool == op.tool)
    }
}

/// A REST request resolved: the operation and its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved<'s> {
    /// The operation (its `tool` is the name on this upstream).
    pub op: &'s Operation,
    /// The call's arguments, shaped as the MCP door's for this operation.
    pub arguments: Value,
}

impl Surface {
    /// Resolves `method` `target` (path and query, after the door's
    /// `/rest/{upstream}` prefix) with `header` (a request header's value
    /// by name) and the JSON `body` (empty: none) to an operation and its
    /// arguments.
    pub fn resolve<'s>(
        &'s self,
        method: &str,
        target: &str,
        header: &dyn Fn(&str) -> Option<String>,
        body: &[u8],
    ) -> Result<Resolved<'s>, RouteError> {
        let (path, query) = split_target(target)?;
        let (op, path_values) = find(self, method, path)?;
        let mut args = Map::new();
        for (name, value) in path_values {
            let schema = op
                .params
                .iter()
                .find(|p| p.name == name && p.location == Location::Path)
                .map(|p| &p.schema)
                .unwrap_or(&Value::Null);
            args.insert(name.to_owned(), typed(&value, schema));
        }
        for (name, values) in &query_pairs(query)? {
            let value = match op
                .params
                .iter()
                .find(|p| p.name == *name && p.location == Location::Query)
            {
                Some(p) => query_value(&p.schema, p.explode, values),
                // Not a parameter of the operation: kept as written, so the
                // argument check refuses it by name.
                None => Value::String(values.last().cloned().unwrap_or_default()),
            };
            args.insert(name.clone(), value);
        }
        for p in op.params.iter().filter(|p| p.location == Location::Header) {
            if let Some(v) = header(&p.name) {
                args.insert(p.name.clone(), typed(&v, &p.schema));
            }
        }
        if let Some(value) = json_body(body)? {
            match &op.body {
                Body::None => {
                    return Err(RouteError::BadBody(
                        "the operation takes no request body".into(),
                    ))
                }
                Body::Whole { .. } => {
                    args.insert("body".into(), value);
                }
                Body::Flattened { fields, .. } => {
                    let Value::Object(props) = value else {
                        return Err(RouteError::BadBody("the body must be a JSON object".into()));
                    };
                    for (prop, v) in props {
                        // An argument named for the property (`body_{name}`
                        // where a parameter has its name); an unknown one is
                        // kept under its own name and refused by the check.
                        let arg = fields
                            .iter()
                            .find(|(_, p)| *p == prop)
                            .map(|(a, _)| a.clone())
                            .unwrap_or(prop);
                        if args.contains_key(&arg) {
                            return Err(RouteError::BadBody(format!(
                                "`{arg}` is given twice (in the body and the path or query)"
                            )));
                        }
                        args.insert(arg, v);
                    }
                }
            }
        }
        Ok(Resolved {
            op,
            arguments: Value::Object(args),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::request;
    use super::*;

    fn billing() -> Surface {
        Surface::parse(super::super::surface::tests::BILLING, &[], &[]).unwrap()
    }

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn path_and_query_become_the_mcp_doors_arguments() {
        let s = billing();
        let r = s.resolve("GET", "/invoices/inv%2D1", &none, b"").unwrap();
        assert_eq!(r.op.tool, "getInvoice");
        assert_eq!(r.arguments, json!({"id": "inv-1"}));
        let r = s
            .resolve("GET", "/invoices?status=open", &none, b"")
            .unwrap();
        assert_eq!(r.op.tool, "listInvoices");
        assert_eq!(r.arguments, json!({"status": "open"}));
    }

    #[test]
    fn a_json_body_flattens_like_the_mcp_door_and_rebuilds_the_same_request() {
        let s = billing();
        let body = br#"{"invoice_id":"inv-1","amount":50}"#;
        let r = s.resolve("POST", "/refunds", &none, body).unwrap();
        assert_eq!(r.op.tool, "createRefund");
        assert_eq!(r.arguments, json!({"invoice_id": "inv-1", "amount": 50}));
        let req = request::build(&s, r.op, "/", &r.arguments).unwrap();
        assert_eq!((&*req.method, req.target.as_str()), ("POST", "/refunds"));
        let sent: Value = serde_json::from_slice(req.body.as_deref().unwrap()).unwrap();
        assert_eq!(sent, json!({"invoice_id": "inv-1", "amount": 50}));
    }

    #[test]
    fn path_tricks_are_refused_before_matching() {
        let s = billing();
        for path in [
            "/invoices/..",
            "/invoices/%2e%2e",
            "/invoices/%2E",
            "/invoices/a%2fb",
            "/invoices//x",
            "//invoices",
            "/invoices/%zz",
            "/invoices/a%00b",
            "invoices",
        ] {
            assert!(
                matches!(
                    s.resolve("GET", path, &none, b""),
                    Err(RouteError::BadPath(_))
                ),
                "{path}"
            );
        }
        assert!(matches!(
            s.resolve("GET", "/invoices?a=1?b=2", &none, b""),
            Err(RouteError::BadQuery(_))
        ));
        assert!(matches!(
            s.resolve("GET", "/invoices#x", &none, b""),
            Err(RouteError::BadPath(_))
        ));
    }

    #[test]
    fn no_operation_means_not_found_never_a_default() {
        let s = billing();
        for (m, p) in [
            ("GET", "/refunds"),
            ("PUT", "/invoices/inv-1"),
            ("GET", "/invoices/inv-1/extra"),
            ("GET", "/"),
        ] {
            assert_eq!(
                s.resolve(m, p, &none, b""),
                Err(RouteError::NotFound),
                "{m} {p}"
            );
        }
    }

    #[test]
    fn a_literal_segment_wins_over_a_template() {
        let doc = r#"{"openapi":"3.1.0","paths":{
            "/items/{id}":{"get":{"operationId":"one","parameters":[{"name":"id","in":"path","required":true,"schema":{"type":"integer"}}]}},
            "/items/latest":{"get":{"operationId":"latest"}},
            "/files/{name}.json":{"get":{"operationId":"file","parameters":[{"name":"name","in":"path","required":true,"schema":{"type":"string"}}]}}}}"#;
        let s = Surface::parse(doc, &[], &[]).unwrap();
        assert_eq!(
            s.resolve("GET", "/items/latest", &none, b"")
                .unwrap()
                .op
                .tool,
            "latest"
        );
        let r = s.resolve("GET", "/items/42", &none, b"").unwrap();
        assert_eq!(
            (r.op.tool.as_str(), &r.arguments),
            ("one", &json!({"id": 42}))
        );
        // Not a number: kept as text, and the schema check refuses it.
        let r = s.resolve("GET", "/items/4x", &none, b"").unwrap();
        assert!(request::build(&s, r.op, "/", &r.arguments).is_err());
        let r = s.resolve("GET", "/files/report.json", &none, b"").unwrap();
        assert_eq!(r.arguments, json!({"name": "report"}));
    }

    #[test]
    fn bodies_that_do_not_fit_are_refused() {
        let s = billing();
        for body in [&b"not json"[..], b"[1,2]"] {
            assert!(matches!(
                s.resolve("POST", "/refunds", &none, body),
                Err(RouteError::BadBody(_))
            ));
        }
        assert!(matches!(
            s.resolve("GET", "/invoices", &none, b"{}"),
            Err(RouteError::BadBody(_))
        ));
        // A value given in the query and the body is refused, not merged.
        let doc = r#"{"openapi":"3.1.0","paths":{"/r":{"post":{"operationId":"r",
            "parameters":[{"name":"mode","in":"query","schema":{"type":"string"}}],
            "requestBody":{"content":{"application/json":{"schema":{"type":"object","properties":{"amount":{"type":"integer"}}}}}}}}}}"#;
        let s = Surface::parse(doc, &[], &[]).unwrap();
        assert!(s
            .resolve("POST", "/r?amount=1", &none, br#"{"amount":2}"#)
            .is_err());
    }

    #[test]
    fn arrays_and_headers_take_their_declared_shape() {
        let doc = r#"{"openapi":"3.1.0","paths":{"/s":{"get":{"operationId":"s","parameters":[
            {"name":"tag","in":"query","schema":{"type":"array","items":{"type":"integer"}}},
            {"name":"ids","in":"query","explode":false,"schema":{"type":"array","items":{"type":"string"}}},
            {"name":"X-Tenant","in":"header","schema":{"type":"string"}}]}}}}"#;
        let s = Surface::parse(doc, &[], &[]).unwrap();
        let header = |n: &str| (n == "X-Tenant").then(|| "acme".to_owned());
        let r = s
            .resolve("GET", "/s?tag=1&tag=2&ids=a,b&q=x+y", &header, b"")
            .unwrap();
        assert_eq!(
            r.arguments,
            json!({"tag": [1, 2], "ids": ["a", "b"], "q": "x y", "X-Tenant": "acme"})
        );
        // `q` is no parameter of the operation: the check refuses it by name.
        assert!(request::build(&s, r.op, "/", &r.arguments).is_err());
    }
}
