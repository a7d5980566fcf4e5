//! The REST door's operator-declared routes to an MCP upstream's tools
//! (`[[upstreams.routes]]`): `method` + path template → tool. A request's
//! path parameters, query parameters and JSON object body become the tool
//! call's arguments, typed by the tool's `inputSchema` where it says.

use serde_json::{Map, Value};
use toolgate_core::config::RestRouteConfig;

use crate::path::{json_body, matching, query_pairs, query_value, split_target, typed, RouteError};

/// A REST request resolved against an MCP upstream's routes.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved<'r> {
    /// The tool, as the upstream names it.
    pub tool: &'r str,
    /// The call's arguments.
    pub arguments: Value,
}

/// Resolves `method` `target` (after `/rest/{upstream}`) with the JSON
/// `body` against `routes`; `input_schema` gives a tool's `inputSchema`
/// when its catalog is known.
pub fn resolve<'r>(
    routes: &'r [RestRouteConfig],
    method: &str,
    target: &str,
    input_schema: &dyn Fn(&str) -> Option<Value>,
    body: &[u8],
) -> Result<Resolved<'r>, RouteError> {
    let (path, query) = split_target(target)?;
    let candidates = routes
        .iter()
        .filter(|r| r.method == method)
        .map(|r| (r.path.as_str(), r));
    let (route, values) = matching(candidates, path)?;
    let schema = input_schema(&route.tool).unwrap_or(Value::Null);
    let property = |name: &str| {
        schema
            .get("properties")
            .and_then(|p| p.get(name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let mut args = Map::new();
    for (name, value) in values {
        args.insert(name.to_owned(), typed(&value, &property(name)));
    }
    for (name, values) in query_pairs(query)? {
        if args.contains_key(&name) {
            return Err(RouteError::BadQuery("a query key names a path parameter"));
        }
        let value = query_value(&property(&name), true, &values);
        args.insert(name, value);
    }
    if let Some(value) = json_body(body)? {
        let Value::Object(members) = value else {
            return Err(RouteError::BadBody(
                "the body must be a JSON object (its members are the tool's arguments)".into(),
            ));
        };
        for (name, v) in members {
            if args.contains_key(&name) {
                return Err(RouteError::BadBody(format!(
                    "`{name}` is given twice (in the body and the path or query)"
                )));
            }
            args.insert(name, v);
        }
    }
    Ok(Resolved {
        tool: &route.tool,
        arguments: Value::Object(args),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn routes() -> Vec<RestRouteConfig> {
        let r = |m: &str, p: &str, t: &str| RestRouteConfig {
            method: m.into(),
            path: p.into(),
            tool: t.into(),
        };
        vec![
            r("GET", "/customers/{customer_id}", "lookup_customer"),
            r("GET", "/customers/vip", "list_vips"),
            r("DELETE", "/records/{record_id}", "delete_record"),
            r("POST", "/echo", "echo"),
        ]
    }

    fn schema(tool: &str) -> Option<Value> {
        (tool == "delete_record").then(|| {
            json!({"type": "object", "properties": {"record_id": {"type": "integer"}, "force": {"type": "boolean"}}})
        })
    }

    #[test]
    fn a_route_names_the_tool_and_the_request_its_arguments() {
        let r = routes();
        let got = resolve(&r, "GET", "/customers/c%2042", &schema, b"").unwrap();
        assert_eq!(
            (got.tool, got.arguments),
            ("lookup_customer", json!({"customer_id": "c 42"}))
        );
        assert_eq!(
            resolve(&r, "GET", "/customers/vip", &schema, b"")
                .unwrap()
                .tool,
            "list_vips"
        );
        let got = resolve(&r, "DELETE", "/records/7?force=true", &schema, b"").unwrap();
        assert_eq!(got.arguments, json!({"record_id": 7, "force": true}));
        let got = resolve(&r, "POST", "/echo", &schema, br#"{"text":"hi"}"#).unwrap();
        assert_eq!(got.arguments, json!({"text": "hi"}));
    }

    #[test]
    fn anything_else_is_refused_never_forwarded() {
        let r = routes();
        for (m, p) in [
            ("POST", "/customers/c1"),
            ("GET", "/customers"),
            ("GET", "/elsewhere"),
        ] {
            assert_eq!(resolve(&r, m, p, &schema, b""), Err(RouteError::NotFound));
        }
        assert!(matches!(
            resolve(&r, "GET", "/customers/%2e%2e", &schema, b""),
            Err(RouteError::BadPath(_))
        ));
        assert!(matches!(
            resolve(&r, "POST", "/echo", &schema, b"[1]"),
            Err(RouteError::BadBody(_))
        ));
        assert!(resolve(&r, "GET", "/customers/c1?customer_id=c2", &schema, b"").is_err());
        assert!(resolve(&r, "DELETE", "/records/1", &schema, br#"{"record_id":2}"#).is_err());
    }
}
