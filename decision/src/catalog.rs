//! An upstream's tool catalog, as fetched with `tools/list`.
//!
//! Each tool definition is re-rendered once, at catalog build, with the name
//! agents see (`{prefix}__{tool}`); an agent's `tools/list` is then a
//! concatenation of pre-rendered definitions. Arguments that a stateless-era
//! upstream expects mirrored in `Mcp-Param-*` headers (the `x-mcp-header`
//! schema annotation) are extracted here too.

use std::collections::HashMap;

use simd_json::prelude::*;
use simd_json::tape::Value;
use toolgate_core::jsonrpc::JsonParser;
use toolgate_core::protocol::X_MCP_HEADER;
use toolgate_core::toolname::ToolNamer;

/// Why a `tools/list` result could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// Not JSON.
    #[error("the tools/list result is not valid JSON")]
    NotJson,
    /// No `tools` array.
    #[error("the tools/list result has no `tools` array")]
    NoTools,
}

/// JSON type of an argument mirrored into a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// `"type": "string"`.
    String,
    /// `"type": "integer"`.
    Integer,
    /// `"type": "boolean"`.
    Boolean,
}

/// An argument mirrored into an `Mcp-Param-*` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderParam {
    /// Chain of `properties` keys from the schema root.
    pub path: Vec<String>,
    /// The header name, e.g. `Mcp-Param-Region`.
    pub header: String,
    /// Declared type.
    pub ty: ParamType,
}

/// One tool of an upstream.
#[derive(Debug, Clone)]
pub struct ToolDef {
    /// Name on the upstream.
    pub name: String,
    /// Name agents see, or `None` when shadowed by another upstream's prefix.
    pub exposed: Option<String>,
    /// The definition as agents see it (compact JSON object).
    pub json: String,
    /// Arguments mirrored into headers.
    pub header_params: Vec<HeaderParam>,
    /// SHA-256 (hex) of `json`: what tool pins compare.
    pub sha256: String,
    /// Held back by tool pinning (changed since approved, or new and not
    /// yet approved): hidden from `tools/list`, refused on call.
    pub quarantined: bool,
}

/// A definition under tool pinning: a tool's or a prompt's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned<'c> {
    /// Its key in the pins file.
    pub key: String,
    /// A prompt (else a tool).
    pub prompt: bool,
    /// Its name on the upstream.
    pub name: &'c str,
    /// SHA-256 (hex) of its definition.
    pub sha256: &'c str,
    /// Held back by pinning.
    pub quarantined: bool,
    /// The definition as agents see it.
    pub json: &'c str,
}

/// The tools of one upstream.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Tools in upstream order.
    pub tools: Vec<ToolDef>,
    index: HashMap<String, usize>,
    /// Tool names the upstream listed more than once (first kept).
    pub duplicates: Vec<String>,
    /// The upstream's prompts, resources and resource templates.
    pub surface: crate::surface::Surface,
}

impl Catalog {
    /// This catalog with each exposed tool's and prompt's quarantine
    /// decided by `hold` (given its pins key and digest).
    pub fn with_quarantine(&self, hold: impl Fn(&str, &str) -> bool) -> Self {
        let mut c = self.clone();
        for t in &mut c.tools {
            t.quarantined = t.exposed.as_deref().is_some_and(|e| hold(e, &t.sha256));
        }
        for p in &mut c.surface.prompts {
            p.quarantined = hold(&crate::surface::prompt_pin_key(&p.exposed), &p.sha256);
        }
        c
    }

    /// Every pinned definition: each exposed tool (key: its name), then
    /// each prompt (key: [`crate::surface::prompt_pin_key`]).
    pub fn pinned(&self) -> Vec<Pinned<'_>> {
        let tools = self.tools.iter().filter_map(|t| {
            Some(Pinned {
                key: t.exposed.clone()?,
                prompt: false,
                name: &t.name,
                sha256: &t.sha256,
                quarantined: t.quarantined,
                json: &t.json,
            })
        });
        let prompts = self.surface.prompts.iter().map(|p| Pinned {
            key: crate::surface::prompt_pin_key(&p.exposed),
            prompt: true,
            name: &p.name,
            sha256: &p.sha256,
            quarantined: p.quarantined,
            json: &p.json,
        });
        tools.chain(prompts).collect()
    }

    /// Builds the catalog of upstream `idx` from the `result` objects of its
    /// `tools/list` pages.
    pub fn from_pages(
        idx: usize,
        namer: &ToolNamer,
        pages: &[Vec<u8>],
    ) -> Result<Self, CatalogError> {
        let mut cat = Catalog::default();
        let mut parser = JsonParser::new();
        for page in pages {
            let tape = parser.parse(page).map_err(|_| CatalogError::NotJson)?;
            let tools = tape
                .as_value()
                .get("tools")
                .and_then(|t| t.as_array())
                .ok_or(CatalogError::NoTools)?;
            for tool in tools.iter() {
                let Some(name) = tool.get("name").and_then(|n| n.into_string()) else {
                    continue;
                };
                if cat.index.contains_key(name) {
                    cat.duplicates.push(name.to_owned());
                    continue;
                }
                let exposed = namer.expose(idx, name);
                let json = render(tool, exposed.as_deref().unwrap_or(name));
                let mut header_params = Vec::new();
                if let Some(schema) = tool.get("inputSchema") {
                    collect_header_params(schema, &mut Vec::new(), &mut header_params);
                }
                cat.index.insert(name.to_owned(), cat.tools.len());
                cat.tools.push(ToolDef {
                    name: name.to_owned(),
                    exposed,
                    sha256: crate::pins::definition_hash(&json),
                    json,
                    header_params,
                    quarantined: false,
                });
            }
        }
        Ok(cat)
    }

    /// Builds the catalog of upstream `idx`, named `upstream`, from all its
    /// lists: the tools as [`Catalog::from_pages`], with its prompts,
    /// resources and templates.
    pub fn from_listing(
        idx: usize,
        upstream: &str,
        namer: &ToolNamer,
        listing: &crate::surface::Listing,
    ) -> Result<Self, CatalogError> {
        let mut cat = Self::from_pages(idx, namer, &listing.tools)?;
        cat.surface = crate::surface::Surface::from_listing(idx, upstream, namer, listing);
        Ok(cat)
    }

    /// The tool named `name` on the upstream.
    pub fn get(&self, name: &str) -> Option<&ToolDef> {
        self.index.get(name).map(|&i| &self.tools[i])
    }
}

fn render(tool: Value<'_, '_>, exposed: &str) -> String {
    crate::surface::render(tool, "name", exposed)
}

fn collect_header_params(
    schema: Value<'_, '_>,
    path: &mut Vec<String>,
    out: &mut Vec<HeaderParam>,
) {
    if path.len() > 16 {
        return;
    }
    if !path.is_empty() {
        if let Some(token) = schema.get(X_MCP_HEADER).and_then(|t| t.into_string()) {
            let ty = match schema.get("type").and_then(|t| t.into_string()) {
                Some("string") => Some(ParamType::String),
                Some("integer") => Some(ParamType::Integer),
                Some("boolean") => Some(ParamType::Boolean),
                _ => None,
            };
            let valid_token = !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if let (Some(ty), true) = (ty, valid_token) {
                out.push(HeaderParam {
                    path: path.clone(),
                    header: format!("Mcp-Param-{token}"),
                    ty,
                });
            }
        }
    }
    if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
        for (k, sub) in props.iter() {
            path.push(k.to_owned());
            collect_header_params(sub, path, out);
            path.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namer() -> ToolNamer {
        let mut n = ToolNamer::default();
        assert!(n.add("crm").is_ok());
        n
    }

    #[test]
    fn tools_are_renamed_and_indexed() {
        let page = br#"{"tools":[{"name":"lookup","description":"d","inputSchema":{"type":"object","properties":{"region":{"type":"string","x-mcp-header":"Region"},"n":{"type":"object","properties":{"deep":{"type":"integer","x-mcp-header":"Deep"}}}}}},{"name":"lookup","description":"dup"}],"nextCursor":null}"#;
        let cat = Catalog::from_pages(0, &namer(), &[page.to_vec()]).unwrap_or_default();
        assert_eq!(cat.tools.len(), 1);
        assert_eq!(cat.duplicates, vec!["lookup".to_owned()]);
        let t = cat.get("lookup").cloned();
        let t = t.unwrap();
        assert_eq!(t.exposed.as_deref(), Some("crm__lookup"));
        assert!(
            t.json
                .starts_with(r#"{"name":"crm__lookup","description":"d""#),
            "{}",
            t.json
        );
        assert_eq!(t.header_params.len(), 2);
        assert!(t.header_params.iter().any(|h| h.path == ["n", "deep"]
            && h.header == "Mcp-Param-Deep"
            && h.ty == ParamType::Integer));
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(
            Catalog::from_pages(0, &namer(), &[b"nope".to_vec()]).err(),
            Some(CatalogError::NotJson)
        );
        assert_eq!(
            Catalog::from_pages(0, &namer(), &[b"{}".to_vec()]).err(),
            Some(CatalogError::NoTools)
        );
    }
}
