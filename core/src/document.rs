//! API description documents (OpenAPI) read as JSON values, whether written
//! as JSON or as YAML, so every reader of a document — the configuration
//! check, the tool surface — sees one shape.

use serde_json::{Map, Number, Value};

/// Why a document's text is not a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// JSON text (it starts with `{`) that does not parse.
    #[error("not valid JSON: {0}")]
    Json(String),
    /// YAML text that does not parse.
    #[error("not valid YAML: {0}")]
    Yaml(String),
    /// Parsed, but not a mapping at the top.
    #[error("the document is not an object")]
    NotObject,
}

/// Parses `text` as JSON when it starts with `{`, else as YAML (a superset
/// of JSON). YAML mapping keys that are numbers or booleans (`200:` under
/// `responses`) become their text; YAML tags are dropped.
pub fn parse(text: &str) -> Result<Value, DocumentError> {
    let text = text.trim_start_matches('\u{feff}');
    let v = if text.trim_start().starts_with('{') {
        serde_json::from_str::<Value>(text).map_err(|e| DocumentError::Json(e.to_string()))?
    } else {
        let y: serde_norway::Value =
            serde_norway::from_str(text).map_err(|e| DocumentError::Yaml(e.to_string()))?;
        from_yaml(y)
    };
    if v.is_object() {
        Ok(v)
    } else {
        Err(DocumentError::NotObject)
    }
}

fn from_yaml(y: serde_norway::Value) -> Value {
    use serde_norway::Value as Y;
    match y {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(from_yaml).collect()),
        Y::Mapping(m) => {
            let mut out = Map::with_capacity(m.len());
            for (k, v) in m {
                out.insert(key_text(k), from_yaml(v));
            }
            Value::Object(out)
        }
        Y::Tagged(t) => from_yaml(t.value),
    }
}

fn key_text(k: serde_norway::Value) -> String {
    use serde_norway::Value as Y;
    match k {
        Y::String(s) => s,
        Y::Bool(b) => b.to_string(),
        Y::Number(n) => n.to_string(),
        Y::Null => "null".into(),
        other => serde_json::to_string(&from_yaml(other)).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml_give_the_same_value() {
        let json = r#"{"openapi":"3.1.0","paths":{"/a":{"get":{"operationId":"a","responses":{"200":{"description":"ok"}}}}},"n":1.5,"t":true}"#;
        let yaml = "openapi: 3.1.0\npaths:\n  /a:\n    get:\n      operationId: a\n      responses:\n        200:\n          description: ok\nn: 1.5\nt: true\n";
        assert_eq!(parse(json).unwrap(), parse(yaml).unwrap());
    }

    #[test]
    fn bad_text_names_its_syntax() {
        assert!(matches!(parse("{\"a\":"), Err(DocumentError::Json(_))));
        assert!(matches!(
            parse("a: [1, 2\nb: c"),
            Err(DocumentError::Yaml(_))
        ));
        assert_eq!(parse("- 1\n- 2\n"), Err(DocumentError::NotObject));
        assert_eq!(parse("just text"), Err(DocumentError::NotObject));
    }

    #[test]
    fn alias_bombs_are_refused_not_expanded() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(matches!(parse(&doc), Err(DocumentError::Yaml(_))));
    }
}
