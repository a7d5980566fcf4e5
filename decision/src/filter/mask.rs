//! Writing masks over matched spans.

use sha2::{Digest, Sha256};
use toolgate_core::output::MaskStyle;

/// A span of text to mask, with the label and style of the rule masking it.
#[derive(Debug, Clone, Copy)]
pub struct Span<'l> {
    /// First byte (a char boundary).
    pub start: usize,
    /// One past the last byte (a char boundary).
    pub end: usize,
    /// Detector, pattern or field name shown in the mask.
    pub label: &'l str,
    /// How the mask is written.
    pub style: MaskStyle,
}

/// Appends the mask of `value` under `label` in `style`.
pub fn write_mask(value: &str, label: &str, style: MaskStyle, out: &mut String) {
    out.push_str("[REDACTED:");
    out.push_str(label);
    match style {
        MaskStyle::Label => {}
        MaskStyle::Last4 => {
            // Keep the last four letters or digits, only when that is a small
            // part of the value (a short value would be mostly revealed).
            let alnum: Vec<char> = value
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect();
            if alnum.len() >= 8 {
                out.push_str(":****");
                out.extend(&alnum[alnum.len() - 4..]);
            }
        }
        MaskStyle::Hash => {
            let digest = Sha256::digest(value.as_bytes());
            out.push_str(":sha256:");
            out.push_str(&hex::encode(&digest[..6]));
        }
    }
    out.push(']');
}

/// `text` with every span replaced by its mask. Spans must be sorted by
/// start, non-overlapping, and on char boundaries; bytes outside them are
/// copied unchanged.
pub fn mask(text: &str, spans: &[Span<'_>]) -> String {
    let mut out = String::with_capacity(text.len() + 16 * spans.len());
    let mut at = 0;
    for s in spans {
        out.push_str(&text[at..s.start]);
        write_mask(&text[s.start..s.end], s.label, s.style, &mut out);
        at = s.end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn styles() {
        let mut out = String::new();
        write_mask("4111 1111 1111 1111", "card", MaskStyle::Label, &mut out);
        assert_eq!(out, "[REDACTED:card]");
        out.clear();
        write_mask("4111 1111 1111 1111", "card", MaskStyle::Last4, &mut out);
        assert_eq!(out, "[REDACTED:card:****1111]");
        out.clear();
        write_mask("a@b.io", "email", MaskStyle::Last4, &mut out);
        assert_eq!(out, "[REDACTED:email]");
        out.clear();
        write_mask("x", "card", MaskStyle::Hash, &mut out);
        assert_eq!(out, "[REDACTED:card:sha256:2d711642b726]");
    }

    #[test]
    fn bytes_outside_spans_are_kept() {
        let spans = [Span {
            start: 3,
            end: 6,
            label: "p",
            style: MaskStyle::Label,
        }];
        assert_eq!(mask("é-abc-é", &spans), "é-[REDACTED:p]-é");
    }
}
