//! `[output]` and `[[output_rules]]`.

use serde::Deserialize;
use toml::Spanned;

/// `[output]`: limits of output filtering.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Largest upstream result an output rule is applied to, bytes. Default
    /// 4194304; a larger result of a tool with output rules is refused rather
    /// than forwarded unfiltered.
    #[serde(default = "default_max_result_bytes")]
    pub max_result_bytes: usize,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            max_result_bytes: default_max_result_bytes(),
        }
    }
}

pub(crate) fn default_max_result_bytes() -> usize {
    4 * 1024 * 1024
}

/// `[[output_rules]]`: one output rule, applied to the results of the tools
/// (and agents) it names before they reach the agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputRuleConfig {
    /// Rule name, unique; appears in audit records.
    pub name: Spanned<String>,
    /// Exposed tool names the rule covers; `*` matches any run of
    /// characters (`crm__*` covers an upstream). Required, non-empty.
    pub tools: Vec<Spanned<String>>,
    /// Agent ids the rule applies to. Default: every agent.
    #[serde(default)]
    pub agents: Vec<Spanned<String>>,
    /// Paths removed from structured results (`$.card`, `$.customers[*].ssn`). Default none.
    #[serde(default)]
    pub drop_fields: Vec<Spanned<String>>,
    /// Paths whose value is replaced by a mask. Default none.
    #[serde(default)]
    pub mask_fields: Vec<Spanned<String>>,
    /// Detectors whose matches are masked anywhere in the result: `card`,
    /// `email`, `phone`, `iban`, `aws_key`, `github_token`, `slack_token`,
    /// `private_key`, `jwt`, or `secrets` for the last five. Default none.
    #[serde(default)]
    pub detectors: Vec<Spanned<String>>,
    /// Operator patterns masked anywhere in the result. Default none.
    #[serde(default)]
    pub patterns: Vec<PatternConfig>,
    /// Mask style: `label` (default), `last4` or `hash`.
    #[serde(default)]
    pub style: Option<Spanned<String>>,
    /// Conditions dropping array elements (`tier == "internal"`). Default none.
    #[serde(default)]
    pub drop_where: Vec<Spanned<String>>,
    /// Conditions refusing the whole result (`detected(private_key)`). Default none.
    #[serde(default)]
    pub refuse_when: Vec<Spanned<String>>,
    /// What the rule filters: `"results"` (default: what tools return),
    /// `"arguments"` (what agents send: data-loss prevention on outgoing
    /// calls; field paths are rooted at the arguments object) and/or
    /// `"descriptions"` (tool definitions in `tools/list`, e.g. to hide
    /// internal host names; paths rooted at the definition).
    #[serde(default)]
    pub applies_to: Vec<Spanned<String>>,
}

/// One operator pattern of an output rule: `{ name = "employee_id", regex = "EMP-[0-9]{6}" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    /// Name in mask labels and audit records.
    pub name: Spanned<String>,
    /// Regular expression, Rust `regex` syntax.
    pub regex: Spanned<String>,
}
