//! Exposed tool names: `{prefix}__{tool}`, and the route back to the upstream.
//!
//! The prefix is everything before the first `__`, and prefixes may not
//! contain `__`, so every exposed name routes to at most one upstream. A
//! name without a known prefix goes to the upstream with the empty prefix,
//! if there is one; that upstream's own tools that would route elsewhere are
//! shadowed and never exposed (see [`ToolNamer::expose`]).

/// Separator between an upstream's prefix and its tool name.
pub const SEPARATOR: &str = "__";

/// Maps exposed names to (upstream index, upstream tool name) and back.
#[derive(Debug, Clone, Default)]
pub struct ToolNamer {
    prefixes: Vec<String>,
    bare: Option<usize>,
}

impl ToolNamer {
    /// Registers the next upstream's prefix (upstreams are indexed in order).
    pub fn add(&mut self, prefix: &str) -> Result<(), String> {
        let idx = self.prefixes.len();
        self.prefixes.push(prefix.to_owned());
        if prefix.is_empty() {
            if self.bare.is_some() {
                return Err("only one upstream may have an empty prefix".to_owned());
            }
            self.bare = Some(idx);
        } else if self.prefixes[..idx].iter().any(|p| p == prefix) {
            return Err(format!("prefix `{prefix}` is used by another upstream"));
        }
        Ok(())
    }

    /// The upstream and upstream-side tool name an exposed name routes to.
    pub fn route<'n>(&self, exposed: &'n str) -> Option<(usize, &'n str)> {
        if let Some((prefix, tool)) = exposed.split_once(SEPARATOR) {
            if !prefix.is_empty() {
                if let Some(i) = self.prefixes.iter().position(|p| p == prefix) {
                    return (!tool.is_empty()).then_some((i, tool));
                }
            }
        }
        self.bare
            .map(|i| (i, exposed))
            .filter(|(_, t)| !t.is_empty())
    }

    /// The name agents see for `tool` of upstream `idx`, or `None` when that
    /// name would route to a different upstream (shadowed).
    pub fn expose(&self, idx: usize, tool: &str) -> Option<String> {
        let prefix = self.prefixes.get(idx)?;
        let name = if prefix.is_empty() {
            tool.to_owned()
        } else {
            format!("{prefix}{SEPARATOR}{tool}")
        };
        match self.route(&name) {
            Some((i, t)) if i == idx && t == tool => Some(name),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namer(prefixes: &[&str]) -> ToolNamer {
        let mut n = ToolNamer::default();
        for p in prefixes {
            assert!(n.add(p).is_ok());
        }
        n
    }

    #[test]
    fn prefixed_names_route_to_their_upstream() {
        let n = namer(&["crm", "mail"]);
        assert_eq!(n.route("crm__lookup"), Some((0, "lookup")));
        assert_eq!(n.route("mail__send__now"), Some((1, "send__now")));
        assert_eq!(n.route("crm__"), None);
        assert_eq!(n.route("nope__x"), None);
        assert_eq!(n.route("lookup"), None);
    }

    #[test]
    fn empty_prefix_takes_unprefixed_names() {
        let n = namer(&["crm", ""]);
        assert_eq!(n.route("lookup"), Some((1, "lookup")));
        assert_eq!(n.route("other__x"), Some((1, "other__x")));
        assert_eq!(n.expose(1, "lookup").as_deref(), Some("lookup"));
    }

    #[test]
    fn bare_tool_that_would_route_elsewhere_is_shadowed() {
        let n = namer(&["crm", ""]);
        assert_eq!(n.expose(1, "crm__lookup"), None);
        assert_eq!(n.expose(0, "lookup").as_deref(), Some("crm__lookup"));
    }
}
