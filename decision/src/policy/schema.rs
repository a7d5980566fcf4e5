//! The Cedar schema toolgate validates policies against, generated from the
//! configuration and the upstreams' tool catalogs.
//!
//! One action per exposed tool, and one each for `prompts/get` (on a
//! `Prompt`, `context.args` the union of the known prompts' arguments, as
//! strings) and `resources/read` (on a `Resource`, `context.uri`,
//! `context.args` the union of the known templates' variables, as
//! strings). A tool's `context.args` record is derived from the tool's MCP
//! `inputSchema`: `string` → `String`, `integer` → `Long`,
//! `boolean` → `Bool`, `array` → `Set`, `object` with `properties` →
//! `Record` (required as the schema says). Arguments with no Cedar type
//! (`number`, untyped, unions) are left out of the record, so a policy that
//! reads them fails validation instead of failing at run time. A tool whose
//! catalog is not known gets an empty `args` record.

use serde_json::{json, Map, Value as Json};

use super::NAMESPACE;

fn cedar_type(schema: &Json, depth: usize) -> Option<Json> {
    if depth > 16 {
        return None;
    }
    match schema.get("type")?.as_str()? {
        "string" => Some(json!({"type": "String"})),
        "integer" => Some(json!({"type": "Long"})),
        "boolean" => Some(json!({"type": "Boolean"})),
        "array" => {
            let element = cedar_type(schema.get("items")?, depth + 1)?;
            Some(json!({"type": "Set", "element": element}))
        }
        "object" => Some(record(schema, depth + 1)),
        _ => None,
    }
}

fn record(schema: &Json, depth: usize) -> Json {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Json::as_array)
        .map(|r| r.iter().filter_map(Json::as_str).collect())
        .unwrap_or_default();
    let mut attrs = Map::new();
    if let Some(props) = schema.get("properties").and_then(Json::as_object) {
        for (name, sub) in props {
            if let Some(mut t) = cedar_type(sub, depth) {
                if let Some(o) = t.as_object_mut() {
                    o.insert(
                        "required".into(),
                        Json::Bool(required.contains(&name.as_str())),
                    );
                }
                attrs.insert(name.clone(), t);
            }
        }
    }
    json!({"type": "Record", "attributes": attrs})
}

/// What `context.session` counts by name: labels and counted arguments.
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    /// Every label a tool can have.
    pub labels: Vec<String>,
    /// `[sessions] distinct`.
    pub distinct: Vec<String>,
    /// Every argument name a known prompt declares (`context.args` of
    /// `prompts/get`, all strings, none required).
    pub prompt_args: Vec<String>,
    /// Every variable name of the known resource templates (`context.args`
    /// of `resources/read`, all strings, none required).
    pub template_vars: Vec<String>,
}

/// `context.session`'s type: the facts of [`crate::session::SessionFacts`]
/// with one counter per label and per counted argument.
fn session_type(v: &Vocabulary) -> Json {
    let long = || json!({"type": "Long"});
    let counters = |names: &[String]| {
        let attrs: Map<String, Json> = names.iter().map(|n| (n.clone(), long())).collect();
        json!({"type": "Record", "attributes": attrs})
    };
    let labels = json!({"type": "Set", "element": {"type": "String"}});
    json!({"type": "Record", "attributes": {
        "id": {"type": "String"},
        "known": {"type": "Boolean"},
        "calls": long(),
        "calls_last_minute": long(),
        "calls_last_hour": long(),
        "tool_calls": long(),
        "in_flight": long(),
        "age_s": long(),
        "labels": labels,
        "last_labels": labels,
        "label_calls": counters(&v.labels),
        "label_calls_last_minute": counters(&v.labels),
        "label_calls_last_hour": counters(&v.labels),
        "distinct_last_hour": counters(&v.distinct),
    }})
}

/// The schema, in Cedar's JSON schema format, for `tools`: (exposed name,
/// the tool's MCP `inputSchema` when known); `context.session` counts what
/// `vocabulary` names.
pub fn schema_json(tools: &[(String, Option<Json>)], vocabulary: &Vocabulary) -> Json {
    let session = session_type(vocabulary);
    let mut actions = Map::new();
    for (name, input) in tools {
        let args = match input {
            Some(s) => record(s, 0),
            None => json!({"type": "Record", "attributes": {}}),
        };
        actions.insert(
            name.clone(),
            json!({
                "appliesTo": {
                    "principalTypes": ["Agent"],
                    "resourceTypes": ["Tool"],
                    "context": {"type": "Record", "attributes": {
                        "args": args,
                        "tool": {"type": "String"},
                        "upstream": {"type": "String"},
                        "customer": {"type": "String"},
                        "user": {"type": "Entity", "name": "User", "required": false},
                        "session": session
                    }}
                }
            }),
        );
    }
    let optional_strings = |names: &[String]| -> Map<String, Json> {
        names
            .iter()
            .map(|n| (n.clone(), json!({"type": "String", "required": false})))
            .collect()
    };
    let prompt_args = optional_strings(&vocabulary.prompt_args);
    let template_vars = optional_strings(&vocabulary.template_vars);
    let target = |kind: &str, attribute: &str, args: Json| {
        json!({
            "appliesTo": {
                "principalTypes": ["Agent"],
                "resourceTypes": [kind],
                "context": {"type": "Record", "attributes": {
                    "args": args,
                    attribute: {"type": "String"},
                    "upstream": {"type": "String"},
                    "customer": {"type": "String"},
                    "user": {"type": "Entity", "name": "User", "required": false},
                    "session": session
                }}
            }
        })
    };
    actions.insert(
        "prompts/get".into(),
        target(
            "Prompt",
            "prompt",
            json!({"type": "Record", "attributes": prompt_args}),
        ),
    );
    actions.insert(
        "resources/read".into(),
        target(
            "Resource",
            "uri",
            json!({"type": "Record", "attributes": template_vars}),
        ),
    );
    json!({ NAMESPACE: {
        "entityTypes": {
            "Prompt": {"memberOfTypes": ["Upstream"], "shape": {"type": "Record", "attributes": {
                "labels": {"type": "Set", "element": {"type": "String"}}
            }}},
            "Resource": {"memberOfTypes": ["Upstream"], "shape": {"type": "Record", "attributes": {
                "labels": {"type": "Set", "element": {"type": "String"}}
            }}},
            "Group": {},
            "User": {"memberOfTypes": ["Group"]},
            "Agent": {"memberOfTypes": ["Group"]},
            "Upstream": {},
            "Tool": {"memberOfTypes": ["Upstream"], "shape": {"type": "Record", "attributes": {
                "labels": {"type": "Set", "element": {"type": "String"}}
            }}}
        },
        "actions": actions
    }})
}
