//! `[[output_rules]]`.

use toml::Spanned;

use crate::output::{self, Condition, Detector, FieldPath, MaskStyle, OutputRule};
use crate::toolname::ToolNamer;

use super::super::*;

/// Largest compiled size of one operator pattern, bytes: keeps a pattern
/// from costing the gateway unbounded memory.
pub const PATTERN_SIZE_LIMIT: usize = 1 << 20;

pub(crate) fn validate_output_rules(
    config: &Config,
    namer: &ToolNamer,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) -> Vec<OutputRule> {
    if config.output.max_result_bytes < 1024 {
        err(
            None,
            "`output.max_result_bytes` must be at least 1024".to_owned(),
        );
    }
    let mut rules = Vec::with_capacity(config.output_rules.len());
    for r in &config.output_rules {
        let name = r.name.get_ref();
        let line = at(&r.name.span());
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        {
            err(
                line,
                format!(
                    "output rule name `{name}` must be non-empty letters, digits, `_`, `-` or `.`"
                ),
            );
        }
        if config
            .output_rules
            .iter()
            .filter(|o| o.name.get_ref() == name)
            .count()
            > 1
        {
            err(
                line,
                format!("output rule name `{name}` is used more than once"),
            );
        }
        if r.tools.is_empty() {
            err(
                line,
                format!("output rule `{name}`: `tools` must name at least one tool (globs such as `crm__*` allowed)"),
            );
        }
        for t in &r.tools {
            let t_ref = t.get_ref();
            if !t_ref.contains('*') && namer.route(t_ref).is_none() {
                err(
                    at(&t.span()),
                    format!("output rule `{name}`: tool `{t_ref}` names no configured upstream (expected `{{prefix}}__{{tool}}` or a glob)"),
                );
            }
        }
        for a in &r.agents {
            if !config.agents.iter().any(|c| c.id.get_ref() == a.get_ref()) {
                err(
                    at(&a.span()),
                    format!(
                        "output rule `{name}`: agent `{}` is not configured",
                        a.get_ref()
                    ),
                );
            }
        }
        let paths = |list: &[Spanned<String>], err: &mut dyn FnMut(Option<usize>, String)| {
            let mut out = Vec::new();
            for p in list {
                match FieldPath::parse(p.get_ref()) {
                    Ok(fp) => out.push(fp),
                    Err(e) => err(at(&p.span()), format!("output rule `{name}`: {e}")),
                }
            }
            out
        };
        let drop_fields = paths(&r.drop_fields, err);
        let mask_fields = paths(&r.mask_fields, err);
        let mut detectors = Vec::new();
        for d in &r.detectors {
            match Detector::parse(d.get_ref()) {
                Some(ds) => {
                    for d in ds {
                        if !detectors.contains(&d) {
                            detectors.push(d);
                        }
                    }
                }
                None => err(
                    at(&d.span()),
                    format!(
                        "output rule `{name}`: unknown detector `{}`; known: {}, {}",
                        d.get_ref(),
                        Detector::ALL.map(|d| d.name()).join(", "),
                        Detector::GROUPS.join(", ")
                    ),
                ),
            }
        }
        let mut patterns = Vec::new();
        for p in &r.patterns {
            let pname = p.name.get_ref();
            if pname.is_empty()
                || !pname
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                err(
                    at(&p.name.span()),
                    format!("output rule `{name}`: pattern name `{pname}` must be letters, digits, `_` or `-`"),
                );
            } else if Detector::parse(pname).is_some() {
                err(
                    at(&p.name.span()),
                    format!("output rule `{name}`: pattern name `{pname}` is a detector's name"),
                );
            }
            match regex::RegexBuilder::new(p.regex.get_ref())
                .size_limit(PATTERN_SIZE_LIMIT)
                .build()
            {
                Ok(re) if re.is_match("") => err(
                    at(&p.regex.span()),
                    format!("output rule `{name}`: pattern `{pname}` matches the empty string"),
                ),
                Ok(_) => patterns.push(output::Pattern {
                    name: pname.clone(),
                    regex: p.regex.get_ref().clone(),
                }),
                Err(e) => err(
                    at(&p.regex.span()),
                    format!(
                        "output rule `{name}`: pattern `{pname}` is not a valid regex: {}",
                        e.to_string().lines().last().unwrap_or("").trim()
                    ),
                ),
            }
        }
        let style = match &r.style {
            None => MaskStyle::default(),
            Some(s) => MaskStyle::parse(s.get_ref()).unwrap_or_else(|| {
                err(
                    at(&s.span()),
                    format!(
                        "output rule `{name}`: `style = \"{}\"` must be `label`, `last4` or `hash`",
                        s.get_ref()
                    ),
                );
                MaskStyle::default()
            }),
        };
        let conditions = |list: &[Spanned<String>], err: &mut dyn FnMut(Option<usize>, String)| {
            let mut out = Vec::new();
            for c in list {
                match Condition::parse(c.get_ref()) {
                    Ok(Condition::Detected(d))
                        if Detector::parse(&d).is_none_or(|v| v.len() != 1)
                            && !patterns.iter().any(|p| p.name == d) =>
                    {
                        err(
                            at(&c.span()),
                            format!("output rule `{name}`: `detected({d})` names no detector and no pattern of this rule"),
                        )
                    }
                    Ok(cond) => out.push((c.get_ref().trim().to_owned(), cond)),
                    Err(e) => err(at(&c.span()), format!("output rule `{name}`: {e}")),
                }
            }
            out
        };
        let drop_where = conditions(&r.drop_where, err);
        let refuse_when = conditions(&r.refuse_when, err);
        if drop_fields.is_empty()
            && mask_fields.is_empty()
            && detectors.is_empty()
            && r.patterns.is_empty()
            && drop_where.is_empty()
            && refuse_when.is_empty()
            && r.drop_where.is_empty()
            && r.refuse_when.is_empty()
        {
            err(
                line,
                format!("output rule `{name}` does nothing: give it fields, detectors, patterns or conditions"),
            );
        }
        let mut results = r.applies_to.is_empty();
        let (mut arguments, mut descriptions) = (false, false);
        for a in &r.applies_to {
            match a.get_ref().as_str() {
                "results" => results = true,
                "arguments" => arguments = true,
                "descriptions" => descriptions = true,
                other => err(
                    at(&a.span()),
                    format!("output rule `{name}`: `applies_to` takes \"results\", \"arguments\" and \"descriptions\", not `{other}`"),
                ),
            }
        }
        rules.push(OutputRule {
            results,
            arguments,
            descriptions,
            name: name.clone(),
            tools: r.tools.iter().map(|t| t.get_ref().clone()).collect(),
            agents: r.agents.iter().map(|a| a.get_ref().clone()).collect(),
            drop_fields,
            mask_fields,
            detectors,
            patterns,
            style,
            drop_where,
            refuse_when,
        });
    }
    rules
}
