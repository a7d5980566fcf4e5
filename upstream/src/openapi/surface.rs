//! An OpenAPI document as a tool surface: each operation becomes one tool
//! whose `inputSchema` is a single JSON object.
//!
//! The rules, as documented for operators:
//! - a tool is named by the operation's `operationId`; an operation without
//!   one is named `{method}_{path}` with every run of characters other than
//!   letters and digits in the path turned into one `_` (`GET
//!   /invoices/{id}` → `get_invoices_id`);
//! - path, query and header parameters are arguments under their own names;
//! - a JSON request body whose schema is an object has its properties as
//!   arguments too; a body property named like a parameter is the argument
//!   `body_{name}`; any other JSON body is the one argument `body`;
//! - local `$ref`s (`#/…`) are resolved; a reference that leads back into
//!   itself is cut to `{}` (any value) rather than followed again; other
//!   references are refused;
//! - `include`/`exclude` take operationIds (or derived names) and `tag:NAME`.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{json, Map, Value};

/// Why a document does not make a tool surface.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Neither JSON nor YAML (or not an object).
    #[error("not an OpenAPI document: {0}")]
    Syntax(String),
    /// Not OpenAPI 3.x.
    #[error(
        "`openapi` must be 3.0.x or 3.1.x (OpenAPI 2.0 / Swagger is not supported), found {0}"
    )]
    Version(String),
    /// An operation uses something this gateway does not map.
    #[error("operation `{operation}`: {why}")]
    Operation {
        /// The operation (its tool name).
        operation: String,
        /// What is wrong.
        why: String,
    },
    /// Two operations make the same tool name.
    #[error("two operations are both tool `{0}`")]
    Duplicate(String),
    /// A `$ref` that is not local, or that points nowhere.
    #[error("`$ref` `{0}` is not a reference within the document")]
    Reference(String),
}

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// A `{name}` of the path template.
    Path,
    /// The query string.
    Query,
    /// A request header.
    Header,
}

/// One parameter of an operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Its name (the argument's name too).
    pub name: String,
    /// Where it goes.
    pub location: Location,
    /// Whether the call must give it.
    pub required: bool,
    /// `explode` for arrays and objects (`form` default: true).
    pub explode: bool,
    /// Its schema, references resolved.
    pub schema: Value,
}

/// The JSON request body of an operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// None.
    None,
    /// An object whose properties are arguments: (argument name, property name).
    Flattened {
        /// Argument name → body property name.
        fields: Vec<(String, String)>,
        /// Whether the body is required.
        required: bool,
    },
    /// Any other JSON body, as the argument `body`.
    Whole {
        /// Whether the body is required.
        required: bool,
    },
}

/// One operation as a tool.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// The tool's name on this upstream (before the prefix).
    pub tool: String,
    /// HTTP method, upper case (shared with every audit record of a call).
    pub method: Arc<str>,
    /// Path template, e.g. `/invoices/{id}` (shared likewise).
    pub path: Arc<str>,
    /// Its parameters.
    pub params: Vec<Param>,
    /// Its request body.
    pub body: Body,
    /// The tool definition (`name`, `description`, `inputSchema`) as JSON.
    pub definition: Value,
}

/// The operations of one document that the configuration selects.
#[derive(Debug, Clone, PartialEq)]
pub struct Surface {
    /// The operations, in document order.
    pub operations: Vec<Operation>,
    /// The first `servers` URL, when the document gives one.
    pub server: Option<String>,
}

/// Methods exposed as tools (`head` and `options` answer no content to act on).
const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// Header parameters never taken from arguments: framing, content
/// negotiation and every credential header.
const RESERVED_HEADERS: [&str; 10] = [
    "Accept",
    "Authorization",
    "Connection",
    "Content-Length",
    "Content-Type",
    "Cookie",
    "Host",
    "Proxy-Authorization",
    "Transfer-Encoding",
    "X-Api-Key",
];

/// How deep references and schemas are followed before the rest is cut.
const MAX_DEPTH: usize = 32;

impl Surface {
    /// The surface of the document `text` (JSON or YAML), keeping the
    /// operations `include` names (all when empty) less those `exclude`
    /// names.
    pub fn parse(text: &str, include: &[String], exclude: &[String]) -> Result<Self, SpecError> {
        let doc =
            toolgate_core::document::parse(text).map_err(|e| SpecError::Syntax(e.to_string()))?;
        let version = doc.get("openapi").and_then(Value::as_str).unwrap_or("");
        if !(version.starts_with("3.0") || version.starts_with("3.1")) {
            let found = doc
                .get("openapi")
                .or_else(|| doc.get("swagger"))
                .map(Value::to_string)
                .unwrap_or_else(|| "no `openapi` key".into());
            return Err(SpecError::Version(found));
        }
        let server = doc
            .get("servers")
            .and_then(Value::as_array)
            .and_then(|s| s.first())
            .and_then(|s| s.get("url"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let mut operations = Vec::new();
        let mut names = BTreeSet::new();
        let paths = doc.get("paths").and_then(Value::as_object);
        for (path, item) in paths.into_iter().flatten() {
            let shared = item.get("parameters").cloned().unwrap_or(Value::Null);
            for method in METHODS {
                let Some(op) = item.get(method) else { continue };
                let tool = op
                    .get("operationId")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| derived_name(method, path));
                if !selected(&tool, op, include, exclude) {
                    continue;
                }
                if !names.insert(tool.clone()) {
                    return Err(SpecError::Duplicate(tool));
                }
                operations.push(operation(&doc, tool, method, path, &shared, op)?);
            }
        }
        Ok(Surface { operations, server })
    }

    /// The operation of tool `name`.
    pub fn get(&self, name: &str) -> Option<&Operation> {
        self.operations.iter().find(|o| o.tool == name)
    }

    /// The surface as one `tools/list` result page.
    pub fn tools_page(&self) -> Value {
        json!({ "tools": self.operations.iter().map(|o| o.definition.clone()).collect::<Vec<_>>() })
    }
}

/// `{method}_{path}` with non-alphanumeric runs as `_`.
fn derived_name(method: &str, path: &str) -> String {
    let mut out = String::from(method);
    let mut gap = true;
    for c in path.chars() {
        if c.is_ascii_alphanumeric() {
            if gap {
                out.push('_');
            }
            out.push(c);
            gap = false;
        } else {
            gap = true;
        }
    }
    out
}

/// Whether the configuration selects the operation.
fn selected(tool: &str, op: &Value, include: &[String], exclude: &[String]) -> bool {
    let tags: Vec<&str> = op
        .get("tags")
        .and_then(Value::as_array)
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let names = |list: &[String]| {
        list.iter().any(|s| match s.strip_prefix("tag:") {
            Some(tag) => tags.contains(&tag),
            None => s == tool,
        })
    };
    (include.is_empty() || names(include)) && !names(exclude)
}

fn operation(
    doc: &Value,
    tool: String,
    method: &str,
    path: &str,
    shared: &Value,
    op: &Value,
) -> Result<Operation, SpecError> {
    let bad = |why: String| SpecError::Operation {
        operation: tool.clone(),
        why,
    };
    let mut params: Vec<Param> = Vec::new();
    // Operation parameters override path-level ones of the same name and place.
    let lists = [op.get("parameters"), Some(shared)];
    for list in lists.into_iter().flatten() {
        for p in list.as_array().into_iter().flatten() {
            let p = resolve(doc, p, 0)?;
            let name = p.get("name").and_then(Value::as_str).unwrap_or("");
            let location = match p.get("in").and_then(Value::as_str) {
                Some("path") => Location::Path,
                Some("query") => Location::Query,
                Some("header") => Location::Header,
                Some("cookie") => {
                    return Err(bad(format!("cookie parameter `{name}` is not supported")))
                }
                other => return Err(bad(format!("parameter `{name}` in {other:?}"))),
            };
            if name.is_empty() {
                return Err(bad("a parameter without a name".into()));
            }
            if location == Location::Header {
                // OpenAPI itself ignores these; the credential and framing
                // headers are toolgate's to set, never an agent's.
                if RESERVED_HEADERS
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(name))
                {
                    continue;
                }
                if !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
                {
                    return Err(bad(format!(
                        "header parameter `{name}` is not a header name"
                    )));
                }
            }
            if params
                .iter()
                .any(|q| q.name == name && q.location == location)
            {
                continue;
            }
            if params.iter().any(|q| q.name == name) {
                return Err(bad(format!("parameter `{name}` appears in two places")));
            }
            let schema = p
                .get("schema")
                .map(|s| schema_of(doc, s, &mut Vec::new(), 0))
                .transpose()?
                .unwrap_or_else(|| json!({}));
            params.push(Param {
                name: name.to_owned(),
                location,
                required: location == Location::Path
                    || p.get("required").and_then(Value::as_bool) == Some(true),
                explode: p.get("explode").and_then(Value::as_bool).unwrap_or(true),
                schema: with_description(schema, p.get("description")),
            });
        }
    }
    for p in params.iter().filter(|p| p.location == Location::Path) {
        if !path.contains(&format!("{{{}}}", p.name)) {
            return Err(bad(format!(
                "path parameter `{}` is not in `{path}`",
                p.name
            )));
        }
    }
    let mut properties = Map::new();
    let mut required: Vec<Value> = Vec::new();
    for p in &params {
        properties.insert(p.name.clone(), p.schema.clone());
        if p.required {
            required.push(json!(p.name));
        }
    }
    let body = match op.get("requestBody") {
        None => Body::None,
        Some(rb) => {
            let rb = resolve(doc, rb, 0)?;
            let content = rb.get("content").and_then(Value::as_object);
            let media = content.and_then(|c| {
                c.iter()
                    .find(|(k, _)| k.split(';').next().map(str::trim) == Some("application/json"))
            });
            let Some((_, media)) = media else {
                let kinds: Vec<&String> = content.map(|c| c.keys().collect()).unwrap_or_default();
                return Err(bad(format!(
                    "request body {kinds:?} is not supported (only application/json)"
                )));
            };
            let body_required = rb.get("required").and_then(Value::as_bool) == Some(true);
            let schema = media
                .get("schema")
                .map(|s| schema_of(doc, s, &mut Vec::new(), 0))
                .transpose()?
                .unwrap_or_else(|| json!({}));
            match schema.get("properties").and_then(Value::as_object) {
                Some(props) if schema.get("type").and_then(Value::as_str) == Some("object") => {
                    let inner: Vec<&str> = schema
                        .get("required")
                        .and_then(Value::as_array)
                        .map(|r| r.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    let mut fields = Vec::new();
                    for (k, v) in props {
                        let arg = if params.iter().any(|p| &p.name == k) {
                            format!("body_{k}")
                        } else {
                            k.clone()
                        };
                        if properties.contains_key(&arg) {
                            return Err(bad(format!("body property `{k}` clashes with `{arg}`")));
                        }
                        properties.insert(arg.clone(), v.clone());
                        fields.push((arg, k.clone()));
                    }
                    if body_required {
                        for r in inner {
                            if let Some((arg, _)) = fields.iter().find(|(_, k)| k == r) {
                                required.push(json!(arg));
                            }
                        }
                    }
                    Body::Flattened {
                        fields,
                        required: body_required,
                    }
                }
                _ => {
                    if properties.contains_key("body") {
                        return Err(bad("a parameter named `body` clashes with the body".into()));
                    }
                    properties.insert("body".into(), schema);
                    if body_required {
                        required.push(json!("body"));
                    }
                    Body::Whole {
                        required: body_required,
                    }
                }
            }
        }
    };
    let mut input =
        json!({ "type": "object", "properties": properties, "additionalProperties": false });
    if !required.is_empty() {
        input["required"] = Value::Array(required);
    }
    let description = [op.get("summary"), op.get("description")]
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join("\n\n");
    let mut definition = json!({ "name": tool, "inputSchema": input });
    if !description.is_empty() {
        definition["description"] = json!(description);
    }
    Ok(Operation {
        tool,
        method: Arc::from(method.to_ascii_uppercase()),
        path: Arc::from(path),
        params,
        body,
        definition,
    })
}

/// `schema` with `description` added when it has none.
fn with_description(mut schema: Value, description: Option<&Value>) -> Value {
    if let (Some(obj), Some(d)) = (schema.as_object_mut(), description) {
        obj.entry("description").or_insert_with(|| d.clone());
    }
    schema
}

/// Follows `v`'s `$ref` (once, at the top) within `doc`.
fn resolve<'d>(doc: &'d Value, v: &'d Value, depth: usize) -> Result<&'d Value, SpecError> {
    let Some(r) = v.get("$ref").and_then(Value::as_str) else {
        return Ok(v);
    };
    if depth > MAX_DEPTH {
        return Err(SpecError::Reference(r.to_owned()));
    }
    let target = lookup(doc, r)?;
    resolve(doc, target, depth + 1)
}

/// The value a local reference `#/a/b` points at.
fn lookup<'d>(doc: &'d Value, r: &str) -> Result<&'d Value, SpecError> {
    let pointer = r
        .strip_prefix('#')
        .ok_or_else(|| SpecError::Reference(r.to_owned()))?;
    doc.pointer(pointer)
        .ok_or_else(|| SpecError::Reference(r.to_owned()))
}

/// `schema` with every local reference in it replaced by its target; a
/// reference already being expanded (a cycle) becomes `{}`.
fn schema_of(
    doc: &Value,
    schema: &Value,
    stack: &mut Vec<String>,
    depth: usize,
) -> Result<Value, SpecError> {
    if depth > MAX_DEPTH {
        return Ok(json!({}));
    }
    match schema {
        Value::Object(obj) => {
            if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
                if stack.iter().any(|s| s == r) {
                    return Ok(json!({}));
                }
                let target = lookup(doc, r)?;
                stack.push(r.to_owned());
                let out = schema_of(doc, target, stack, depth + 1);
                stack.pop();
                return out;
            }
            let mut out = Map::new();
            for (k, v) in obj {
                out.insert(k.clone(), schema_of(doc, v, stack, depth + 1)?);
            }
            Ok(Value::Object(out))
        }
        Value::Array(items) => Ok(Value::Array(
            items
                .iter()
                .map(|v| schema_of(doc, v, stack, depth + 1))
                .collect::<Result<_, _>>()?,
        )),
        other => Ok(other.clone()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const BILLING: &str = r##"{
      "openapi": "3.1.0",
      "servers": [{"url": "http://127.0.0.1:9301"}],
      "paths": {
        "/invoices": {
          "get": {"operationId": "listInvoices", "tags": ["invoices"],
                  "parameters": [{"name": "status", "in": "query", "schema": {"type": "string"}},
                                 {"name": "ids", "in": "query", "explode": false,
                                  "schema": {"type": "array", "items": {"type": "string"}}}]}
        },
        "/invoices/{id}": {
          "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
          "get": {"operationId": "getInvoice", "tags": ["invoices"], "summary": "One invoice"},
          "delete": {"tags": ["admin"]}
        },
        "/refunds": {
          "post": {"operationId": "createRefund", "tags": ["refunds"],
                   "parameters": [{"name": "X-Request-Id", "in": "header", "schema": {"type": "string"}}],
                   "requestBody": {"required": true, "content": {"application/json":
                      {"schema": {"$ref": "#/components/schemas/Refund"}}}}}
        }
      },
      "components": {"schemas": {
        "Refund": {"type": "object", "required": ["invoice_id", "amount"],
                   "properties": {"invoice_id": {"type": "string"}, "amount": {"type": "number"},
                                  "parent": {"$ref": "#/components/schemas/Refund"}}}
      }}
    }"##;

    #[test]
    fn every_operation_is_a_tool_named_by_operation_id_or_method_and_path() {
        let s = Surface::parse(BILLING, &[], &[]).unwrap();
        let names: Vec<&str> = s.operations.iter().map(|o| o.tool.as_str()).collect();
        assert_eq!(
            names,
            [
                "listInvoices",
                "getInvoice",
                "delete_invoices_id",
                "createRefund"
            ]
        );
        assert_eq!(s.server.as_deref(), Some("http://127.0.0.1:9301"));
        let get = s.get("getInvoice").unwrap();
        assert_eq!((&*get.method, &*get.path), ("GET", "/invoices/{id}"));
        assert_eq!(get.definition["description"], "One invoice");
        assert_eq!(get.definition["inputSchema"]["required"], json!(["id"]));
    }

    #[test]
    fn a_json_object_body_is_flattened_with_its_required_members_and_cycles_cut() {
        let s = Surface::parse(BILLING, &[], &[]).unwrap();
        let refund = s.get("createRefund").unwrap();
        let input = &refund.definition["inputSchema"];
        assert_eq!(input["properties"]["amount"]["type"], "number");
        assert_eq!(input["properties"]["X-Request-Id"]["type"], "string");
        assert_eq!(input["required"], json!(["invoice_id", "amount"]));
        assert_eq!(input["additionalProperties"], false);
        // The body's own schema is expanded; its reference back into itself
        // is cut to "any".
        assert_eq!(input["properties"]["parent"], json!({}));
    }

    #[test]
    fn include_and_exclude_take_names_and_tags() {
        let only = |inc: &[&str], exc: &[&str]| {
            let inc: Vec<String> = inc.iter().map(|s| (*s).to_owned()).collect();
            let exc: Vec<String> = exc.iter().map(|s| (*s).to_owned()).collect();
            let s = Surface::parse(BILLING, &inc, &exc).unwrap();
            s.operations.into_iter().map(|o| o.tool).collect::<Vec<_>>()
        };
        assert_eq!(
            only(&["tag:invoices", "createRefund"], &[]),
            ["listInvoices", "getInvoice", "createRefund"]
        );
        assert_eq!(
            only(&[], &["tag:invoices"]),
            ["delete_invoices_id", "createRefund"]
        );
    }

    #[test]
    fn unsupported_documents_and_operations_say_what_and_where() {
        assert!(matches!(
            Surface::parse(r#"{"swagger":"2.0","paths":{}}"#, &[], &[]),
            Err(SpecError::Version(_))
        ));
        let form = r#"{"openapi":"3.0.3","paths":{"/up":{"post":{"operationId":"upload",
            "requestBody":{"content":{"multipart/form-data":{"schema":{}}}}}}}}"#;
        let e = Surface::parse(form, &[], &[]).unwrap_err().to_string();
        assert!(
            e.contains("`upload`") && e.contains("multipart/form-data"),
            "{e}"
        );
        let remote = r#"{"openapi":"3.0.3","paths":{"/a":{"get":{"operationId":"a",
            "parameters":[{"$ref":"other.json#/p"}]}}}}"#;
        assert!(matches!(
            Surface::parse(remote, &[], &[]),
            Err(SpecError::Reference(_))
        ));
        let twice = r#"{"openapi":"3.0.3","paths":{"/a":{"get":{"operationId":"x"}},"/b":{"get":{"operationId":"x"}}}}"#;
        assert_eq!(
            Surface::parse(twice, &[], &[]),
            Err(SpecError::Duplicate("x".into()))
        );
    }

    #[test]
    fn credential_and_framing_headers_are_never_arguments() {
        let doc = r#"{"openapi":"3.0.3","paths":{"/a":{"get":{"operationId":"a","parameters":[
            {"name":"Authorization","in":"header","schema":{"type":"string"}},
            {"name":"content-length","in":"header","schema":{"type":"string"}},
            {"name":"X-Trace","in":"header","schema":{"type":"string"}}]}}}}"#;
        let s = Surface::parse(doc, &[], &[]).unwrap();
        let names: Vec<&str> = s
            .get("a")
            .unwrap()
            .params
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["X-Trace"]);
        let bad = r#"{"openapi":"3.0.3","paths":{"/a":{"get":{"operationId":"a","parameters":[
            {"name":"X-A\r\nX-B","in":"header"}]}}}}"#;
        assert!(Surface::parse(bad, &[], &[]).is_err());
    }

    #[test]
    fn a_body_property_named_like_a_parameter_is_body_prefixed() {
        let doc = r#"{"openapi":"3.0.3","paths":{"/items/{id}":{"put":{"operationId":"put",
            "parameters":[{"name":"id","in":"path","required":true,"schema":{"type":"string"}}],
            "requestBody":{"content":{"application/json":{"schema":{"type":"object",
              "properties":{"id":{"type":"integer"},"name":{"type":"string"}}}}}}}}}}"#;
        let s = Surface::parse(doc, &[], &[]).unwrap();
        let op = s.get("put").unwrap();
        assert_eq!(
            op.body,
            Body::Flattened {
                fields: vec![
                    ("body_id".into(), "id".into()),
                    ("name".into(), "name".into())
                ],
                required: false
            }
        );
        assert_eq!(
            op.definition["inputSchema"]["properties"]["body_id"]["type"],
            "integer"
        );
    }
}
