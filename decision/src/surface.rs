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

    /// The variables of the first template that `uri` (the upstream's
    /// own) matches, with their values: what a read of a URI made from a
    /// template gives policy as `context.args`. `None` when no template
    /// matches.
    pub fn template_vars(&self, uri: &str) -> Option<Vec<(String, String)>> {
        self.templates
            .iter()
            .find_map(|t| match_template(&t.name, uri))
    }

    /// Every variable name of the templates.
    pub fn template_var_names(&self) -> Vec<String> {
        self.templates
            .iter()
            .flat_map(|t| parts(&t.name).into_iter())
            .filter_map(|p| match p {
                Part::Var(name, _) => Some(name.to_owned()),
                Part::Literal(_) => None,
            })
            .collect()
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

/// A piece of a URI template (RFC 6570, the forms MCP servers use).
#[derive(Debug, PartialEq, Eq)]
enum Part<'t> {
    Literal(&'t str),
    /// A variable and whether it may hold `/` (`{+var}` and `{#var}`
    /// expand reserved characters; `{var}` does not).
    Var(&'t str, bool),
}

/// The literal and variable parts of `template`; an expression with
/// several variables or a modifier (`{a,b}`, `{var*}`, `{?q}`) makes the
/// template one that matches nothing.
fn parts(template: &str) -> Vec<Part<'_>> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            out.push(Part::Literal(&rest[..open]));
        }
        let Some(close) = rest[open..].find('}') else {
            return Vec::new();
        };
        let expr = &rest[open + 1..open + close];
        let (name, reserved) = match expr.as_bytes().first() {
            Some(b'+' | b'#') => (&expr[1..], true),
            _ => (expr, false),
        };
        let plain = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
        if !plain {
            return Vec::new();
        }
        out.push(Part::Var(name, reserved));
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        out.push(Part::Literal(rest));
    }
    out
}

/// The variables of `template` that make it `uri`, when it does: each
/// variable takes at least one character, `{var}` never a `/`; the first
/// way that fits wins.
fn match_template(template: &str, uri: &str) -> Option<Vec<(String, String)>> {
    let parts = parts(template);
    if parts.is_empty() || !parts.iter().any(|p| matches!(p, Part::Var(..))) {
        return None;
    }
    let mut vars = Vec::new();
    let mut budget = MATCH_STEPS;
    fits(&parts, uri, &mut vars, &mut budget).then_some(vars)
}

/// Most steps one match may take: an upstream's template is untrusted,
/// and a template of several `{+var}` against a long URI would otherwise
/// backtrack without bound. Past it, the template does not match.
const MATCH_STEPS: u32 = 4096;

fn fits(parts: &[Part<'_>], uri: &str, vars: &mut Vec<(String, String)>, budget: &mut u32) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return uri.is_empty();
    };
    if *budget == 0 {
        return false;
    }
    *budget -= 1;
    match first {
        Part::Literal(l) => uri
            .strip_prefix(l)
            .is_some_and(|after| fits(rest, after, vars, budget)),
        Part::Var(name, reserved) => {
            let limit = if *reserved {
                uri.len()
            } else {
                uri.find('/').unwrap_or(uri.len())
            };
            for end in (1..=limit).rev().filter(|&e| uri.is_char_boundary(e)) {
                if *budget == 0 {
                    return false;
                }
                vars.push(((*name).to_owned(), uri[..end].to_owned()));
                if fits(rest, &uri[end..], vars, budget) {
                    return true;
                }
                vars.pop();
            }
            false
        }
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
    fn template_variables_are_read_back_from_a_uri() {
        let vars = |t: &str, u: &str| match_template(t, u);
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            vars("file:///public/pages/{page}", "file:///public/pages/guide"),
            Some(vec![pair("page", "guide")])
        );
        assert_eq!(
            vars(
                "crm://customers/{id}/orders/{order}",
                "crm://customers/c-1/orders/o-9"
            ),
            Some(vec![pair("id", "c-1"), pair("order", "o-9")])
        );
        // A simple variable never takes a path segment separator.
        assert_eq!(
            vars("file:///public/pages/{page}", "file:///public/pages/a/b"),
            None
        );
        assert_eq!(
            vars("file:///{+path}", "file:///a/b/c"),
            Some(vec![pair("path", "a/b/c")])
        );
        assert_eq!(
            vars("file:///public/pages/{page}", "file:///public/pages/"),
            None
        );
        assert_eq!(
            vars("file:///x", "file:///x"),
            None,
            "no variables, nothing to read"
        );
        assert_eq!(
            vars("file:///{a,b}", "file:///1,2"),
            None,
            "unsupported forms match nothing"
        );
        // Backtracking is bounded: many reserved variables against a long
        // URI that cannot match end quickly, unmatched.
        let long = format!("file:///{}", "a".repeat(2000));
        assert_eq!(vars("file:///{+a}{+b}{+c}{+d}{+e}z", &long), None);
    }

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
