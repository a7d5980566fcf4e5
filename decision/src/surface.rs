//! An upstream's prompts, resources and resource templates, as fetched with
//! `prompts/list`, `resources/list` and `resources/templates/list`.
//!
//! Like tools, each definition is rendered once, at catalog build, with the
//! name agents see: prompts as `{prefix}__{prompt}`, resources and
//! templates as `toolgate://{upstream}/{uri}`
//! ([`toolgate_core::resource_uri`]). An agent's lists are then
//! concatenations of pre-rendered definitions.

use simd_json::prelude::*;
use simd_json::tape::Value;
use toolgate_core::jsonrpc::{write_str, write_value, JsonParser};
use toolgate_core::resource_uri;
use toolgate_core::toolname::ToolNamer;

/// The list results of one upstream, page by page (each a `result` object).
/// A list the upstream does not offer is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// `tools/list` pages.
    pub tools: Vec<Vec<u8>>,
    /// `prompts/list` pages.
    pub prompts: Vec<Vec<u8>>,
    /// `resources/list` pages.
    pub resources: Vec<Vec<u8>>,
    /// `resources/templates/list` pages.
    pub templates: Vec<Vec<u8>>,
}

impl Listing {
    /// A listing of tools only (an upstream kind without prompts or resources).
    pub fn of_tools(tools: Vec<Vec<u8>>) -> Self {
        Self {
            tools,
            ..Self::default()
        }
    }
}

/// One prompt, resource or template of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its name or URI on the upstream.
    pub name: String,
    /// Its name or URI as agents see it.
    pub exposed: String,
    /// The definition as agents see it (compact JSON object).
    pub json: String,
    /// SHA-256 (hex) of `json`: what pins compare (prompts).
    pub sha256: String,
    /// Held back by pinning (a prompt changed since approved, or new and
    /// not yet approved): hidden from the list, refused on get.
    pub quarantined: bool,
}

/// The pins key of prompt `exposed`: prompts and tools are pinned in one
/// file, and a prompt may share its name with a tool.
pub fn prompt_pin_key(exposed: &str) -> String {
    format!("prompt:{exposed}")
}

/// The prompts, resources and templates of one upstream, in upstream order.
#[derive(Debug, Clone, Default)]
pub struct Surface {
    /// Prompts (`prompts/list`).
    pub prompts: Vec<Entry>,
    /// Concrete resources (`resources/list`).
    pub resources: Vec<Entry>,
    /// Resource templates (`resources/templates/list`).
    pub templates: Vec<Entry>,
}

impl Surface {
    /// Builds the surface of upstream `idx` (named `upstream`) from its
    /// listing. Pages that are not JSON objects, and entries without their
    /// key, are skipped; a prompt shadowed by another upstream's prefix is
    /// not exposed.
    pub fn from_listing(idx: usize, upstream: &str, namer: &ToolNamer, listing: &Listing) -> Self {
        let mut parser = JsonParser::new();
        let mut each = |pages: &[Vec<u8>],
                        list: &str,
                        key: &str,
                        f: &mut dyn FnMut(&str) -> Option<String>| {
            let mut out: Vec<Entry> = Vec::new();
            for page in pages {
                let Ok(tape) = parser.parse(page) else {
                    continue;
                };
                let Some(items) = tape.as_value().get(list).and_then(|t| t.as_array()) else {
                    continue;
                };
                for item in items.iter() {
                    let Some(name) = item.get(key).and_then(|n| n.into_string()) else {
                        continue;
                    };
                    if out.iter().any(|e| e.name == name) {
                        continue;
                    }
                    let Some(exposed) = f(name) else { continue };
                    let json = render(item, key, &exposed);
                    out.push(Entry {
                        name: name.to_owned(),
                        sha256: crate::pins::definition_hash(&json),
                        json,
                        exposed,
                        quarantined: false,
                    });
                }
            }
            out
        };
        let prompts = each(&listing.prompts, "prompts", "name", &mut |n| {
            namer.expose(idx, n)
        });
        let resources = each(&listing.resources, "resources", "uri", &mut |u| {
            Some(resource_uri::expose(upstream, u))
        });
        let templates = each(
            &listing.templates,
            "resourceTemplates",
            "uriTemplate",
            &mut |u| Some(resource_uri::expose(upstream, u)),
        );
        Self {
            prompts,
            resources,
            templates,
        }
    }

    /// The prompt named `name` on the upstream.
    pub fn prompt(&self, name: &str) -> Option<&Entry> {
        self.prompts.iter().find(|p| p.name == name)
    }

    /// The declared `arguments` of prompt `name`: (name, required).
    pub fn prompt_arguments(&self, name: &str) -> Option<Vec<(String, bool)>> {
        let p = self.prompt(name)?;
        let v: serde_json::Value = serde_json::from_str(&p.json).ok()?;
        Some(
            v.get("arguments")
                .and_then(|a| a.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|x| {
                            let n = x.get("name")?.as_str()?.to_owned();
                            let req = x.get("required").and_then(|r| r.as_bool()) == Some(true);
                            Some((n, req))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        )
    }
}

/// `item` as a JSON object with `key` set to `exposed` first.
pub(crate) fn render(item: Value<'_, '_>, key: &str, exposed: &str) -> String {
    let mut out = Vec::with_capacity(256);
    out.push(b'{');
    write_str(key, &mut out);
    out.push(b':');
    write_str(exposed, &mut out);
    if let Some(obj) = item.as_object() {
        for (k, v) in obj.iter() {
            if k == key {
                continue;
            }
            out.push(b',');
            write_str(k, &mut out);
            out.push(b':');
            write_value(v, &mut out);
        }
    }
    out.push(b'}');
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_resources_and_templates_are_renamed_into_the_upstreams_namespace() {
        let mut namer = ToolNamer::default();
        assert!(namer.add("docs").is_ok());
        let listing = Listing {
            tools: vec![],
            prompts: vec![br#"{"prompts":[{"name":"summarize","arguments":[{"name":"topic","required":true},{"name":"tone"}]},{"name":"summarize"}]}"#.to_vec()],
            resources: vec![
                br#"{"resources":[{"uri":"file:///public/readme.md","name":"readme","mimeType":"text/markdown"}],"nextCursor":"2"}"#.to_vec(),
                br#"{"resources":[{"name":"no uri"},{"uri":"file:///secret/key"}]}"#.to_vec(),
            ],
            templates: vec![br#"{"resourceTemplates":[{"uriTemplate":"file:///public/{name}","name":"public"}]}"#.to_vec()],
        };
        let s = Surface::from_listing(0, "docs", &namer, &listing);
        assert_eq!(s.prompts.len(), 1, "a duplicate is dropped");
        assert_eq!(s.prompts[0].exposed, "docs__summarize");
        assert!(s.prompts[0]
            .json
            .starts_with(r#"{"name":"docs__summarize","arguments""#));
        assert_eq!(
            s.prompt_arguments("summarize"),
            Some(vec![("topic".into(), true), ("tone".into(), false)])
        );
        let uris: Vec<&str> = s.resources.iter().map(|r| r.exposed.as_str()).collect();
        assert_eq!(
            uris,
            [
                "toolgate://docs/file:///public/readme.md",
                "toolgate://docs/file:///secret/key"
            ]
        );
        assert!(s.resources[0]
            .json
            .contains(r#""mimeType":"text/markdown""#));
        assert_eq!(
            s.templates[0].exposed,
            "toolgate://docs/file:///public/{name}"
        );
        assert!(s.templates[0]
            .json
            .starts_with(r#"{"uriTemplate":"toolgate://docs/file:///public/{name}""#));
    }
}
