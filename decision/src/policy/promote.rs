//! Promoting shadow policies: the text of a policy file with its `@shadow`
//! policies made enforced (the annotation removed) and its
//! `@shadow("retire")` policies removed — everything else, comments and
//! layout included, as it was.

use std::str::FromStr;

use cedar_policy::PolicySet;

/// What promoting one file did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Promoted {
    /// The file's new text.
    pub text: String,
    /// Shadow policies now enforced.
    pub enforced: usize,
    /// Retired policies removed.
    pub retired: usize,
}

/// The `@shadow` annotation's byte range in `policy`, if any.
fn shadow_annotation(policy: &str) -> Option<std::ops::Range<usize>> {
    let mut from = 0;
    while let Some(at) = policy[from..].find("@shadow") {
        let start = from + at;
        let mut end = start + "@shadow".len();
        let rest = &policy[end..];
        // `@shadowy` is another annotation.
        if rest
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            from = end;
            continue;
        }
        let trimmed = rest.trim_start();
        if trimmed.starts_with('(') {
            let close = trimmed.find(')')?;
            end += rest.len() - trimmed.len() + close + 1;
        }
        // The line break after it goes too.
        let after = &policy[end..];
        let spaces = after.len() - after.trim_start_matches([' ', '\t']).len();
        if after[spaces..].starts_with('\n') {
            end += spaces + 1;
        }
        return Some(start..end);
    }
    None
}

/// Promotes the shadow policies of file text `text`.
pub fn promote(text: &str) -> Result<Promoted, String> {
    let set = PolicySet::from_str(text).map_err(|e| e.to_string())?;
    let policies = super::load::in_source_order(&set);
    let mut out = String::with_capacity(text.len());
    let mut done = Promoted::default();
    let mut at = 0;
    for p in policies {
        let Some(mark) = p.annotation("shadow") else {
            continue;
        };
        let Some(source) = p.to_cedar() else {
            return Err(format!("policy `{}` has no source text", p.id()));
        };
        let Some(found) = text[at..].find(&source) else {
            return Err(format!("policy `{}` not found in its file", p.id()));
        };
        let start = at + found;
        out.push_str(&text[at..start]);
        if mark == "retire" {
            done.retired += 1;
            let mut end = start + source.len();
            if text[end..].starts_with('\n') {
                end += 1;
            }
            at = end;
        } else {
            done.enforced += 1;
            match shadow_annotation(&source) {
                Some(r) => {
                    out.push_str(&source[..r.start]);
                    out.push_str(&source[r.end..]);
                }
                None => out.push_str(&source),
            }
            at = start + source.len();
        }
    }
    out.push_str(&text[at..]);
    done.text = out;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_policies_become_enforced_and_retired_ones_go_comments_kept() {
        let text = "// base\n@id(\"a\")\npermit(principal, action, resource);\n\n// old\n@id(\"b\")\n@shadow(\"retire\")\nforbid(principal, action, resource) when { context.args.x == 1 };\n\n// new\n@id(\"c\")\n@shadow\nforbid(principal, action, resource) when { context.args.x == 2 };\n";
        let p = promote(text).unwrap();
        assert_eq!((p.enforced, p.retired), (1, 1));
        assert_eq!(
            p.text,
            "// base\n@id(\"a\")\npermit(principal, action, resource);\n\n// old\n\n// new\n@id(\"c\")\nforbid(principal, action, resource) when { context.args.x == 2 };\n"
        );
        let again = promote(&p.text).unwrap();
        assert_eq!((again.enforced, again.retired, again.text), (0, 0, p.text));
        assert!(promote("permit(principal action resource);").is_err());
    }
}
