//! Filters applied to tool results, and property tests of the masker.

use super::*;
use proptest::prelude::*;
use serde_json::{json, Value as Json};
use std::path::Path;

fn rules(toml_rules: &str) -> Vec<OutputRule> {
    let text =
        format!("[[upstreams]]\nname = \"crm\"\nurl = \"http://127.0.0.1:1/mcp\"\n{toml_rules}");
    toolgate_core::config::parse(&text, "t", Path::new("."))
        .unwrap()
        .output_rules
}

fn filter(toml_rules: &str) -> OutputFilter {
    let rules = rules(toml_rules);
    let picked: Vec<&OutputRule> = rules.iter().collect();
    OutputFilter::compile(&picked, 1 << 20)
}

/// Applies `f` to a tool result; returns what the agent would get.
fn apply(f: &OutputFilter, result: &Json) -> (Json, Verdict) {
    let raw = result.to_string();
    let mut outer = JsonParser::new();
    let mut inner = JsonParser::new();
    let tape = outer.parse(raw.as_bytes()).unwrap();
    let mut w = f.walker(&mut inner);
    let mut out = vec![b'{'];
    for (i, (k, v)) in tape
        .as_value()
        .as_object()
        .into_iter()
        .flat_map(|o| o.iter())
        .enumerate()
    {
        if i > 0 {
            out.push(b',');
        }
        write_str(k, &mut out);
        out.push(b':');
        w.write_member(k, v, &mut out);
    }
    out.push(b'}');
    let got = serde_json::from_slice(&out).unwrap();
    (got, w.finish())
}

fn counts(v: &Verdict) -> Vec<(String, &'static str, String, u32)> {
    v.redactions
        .iter()
        .map(|r| {
            (
                r.rule.to_string(),
                r.kind.as_str(),
                r.target.to_string(),
                r.count,
            )
        })
        .collect()
}

fn customers() -> Json {
    json!({"customers": [
        {"id": "c1", "email": "ada@example.com", "card": "4111 1111 1111 1111", "ssn": "078-05-1120",
         "tier": "gold", "orders": [{"no": "4111 1111 1111 1112", "items": [["a", 1]]}]},
        {"id": "c2", "email": "bob@example.org", "card": "5555555555554444", "ssn": "219-09-9999",
         "tier": "internal", "orders": []}
    ]})
}

fn result_of(structured: &Json) -> Json {
    json!({
        "content": [{"type": "text", "text": structured.to_string()}],
        "structuredContent": structured,
        "isError": false
    })
}

#[test]
fn detectors_mask_cards_and_keep_luhn_invalid_order_numbers() {
    let f =
        filter("[[output_rules]]\nname = \"pii\"\ntools = [\"crm__*\"]\ndetectors = [\"card\"]\n");
    let (got, v) = apply(&f, &result_of(&customers()));
    let sc = &got["structuredContent"]["customers"];
    assert_eq!(sc[0]["card"], "[REDACTED:card]");
    assert_eq!(sc[1]["card"], "[REDACTED:card]");
    assert_eq!(sc[0]["orders"][0]["no"], "4111 1111 1111 1112");
    assert_eq!(sc[0]["email"], "ada@example.com");
    let text: Json =
        serde_json::from_str(got["content"][0]["text"].as_str().unwrap_or("")).unwrap_or_default();
    assert_eq!(text["customers"][1]["card"], "[REDACTED:card]");
    // two in structuredContent, two in the text block
    assert_eq!(
        counts(&v),
        vec![("pii".into(), "detector", "card".into(), 4)]
    );
    assert!(!v.refused);
}

#[test]
fn fields_are_dropped_and_masked_by_path_in_both_roots() {
    let f = filter(
        "[[output_rules]]\nname = \"f\"\ntools = [\"crm__*\"]\ndrop_fields = [\"$.customers[*].ssn\"]\nmask_fields = [\"$.customers[*].email\"]\nstyle = \"last4\"\n",
    );
    let (got, v) = apply(&f, &result_of(&customers()));
    for root in [
        got["structuredContent"].clone(),
        serde_json::from_str(got["content"][0]["text"].as_str().unwrap_or("")).unwrap_or_default(),
    ] {
        let c = &root["customers"];
        assert!(
            c[0].get("ssn").is_none() && c[1].get("ssn").is_none(),
            "{root}"
        );
        assert_eq!(c[0]["email"], "[REDACTED:email:****ecom]");
        assert_eq!(c[0]["card"], "4111 1111 1111 1111");
    }
    assert_eq!(
        counts(&v),
        vec![
            ("f".into(), "field", "$.customers[*].ssn".into(), 4),
            ("f".into(), "field", "$.customers[*].email".into(), 4)
        ]
    );
}

/// Found by the `output_mask` fuzz target: the IBAN glued to the digits
/// of a phone number is no IBAN until the phone number is masked, and then
/// it stands alone. The masked text is scanned again until nothing is left.
#[test]
fn what_masking_uncovers_is_masked_too() {
    let f = filter(
        "[[output_rules]]\nname = \"pii\"\ntools = [\"*\"]\ndetectors = [\"card\", \"email\", \"phone\", \"iban\", \"secrets\", \"gov_id\"]\n",
    );
    let text = "HK1+2\u{5}\0+23222222CA2223CA22222222222)2+";
    let (got, v) = apply(&f, &json!({"content": [{"type": "text", "text": text}]}));
    let out = got["content"][0]["text"].as_str().unwrap_or_default();
    assert!(out.contains("[REDACTED:phone]"), "{out}");
    assert!(out.contains("[REDACTED:iban]"), "{out}");
    let scanner = detect::Scanner::new(detect::DetectorSet::of(&Detector::ALL));
    let mut found = Vec::new();
    scanner.scan(out.as_bytes(), &mut found);
    assert!(found.is_empty(), "{out}: {found:?}");
    assert!(!v.refused);
}

#[test]
fn drop_where_removes_matching_records() {
    let f = filter(
        "[[output_rules]]\nname = \"internal\"\ntools = [\"crm__*\"]\ndrop_where = ['tier == \"internal\"']\n",
    );
    let (got, v) = apply(&f, &result_of(&customers()));
    let c = got["structuredContent"]["customers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["id"], "c1");
    assert_eq!(
        counts(&v),
        vec![(
            "internal".into(),
            "drop_where",
            "tier == \"internal\"".into(),
            2
        )]
    );
}

#[test]
fn drop_where_detected_removes_only_records_holding_the_value() {
    let f = filter(
        "[[output_rules]]\nname = \"k\"\ntools = [\"crm__*\"]\ndrop_where = [\"detected(aws_key)\"]\n",
    );
    let data = json!({"rows": [{"a": "x"}, {"a": "key AKIAIOSFODNN7EXAMPLE"}, {"a": "y"}]});
    let (got, v) = apply(&f, &json!({"structuredContent": data}));
    assert_eq!(
        got["structuredContent"],
        json!({"rows": [{"a": "x"}, {"a": "y"}]})
    );
    assert_eq!(counts(&v)[0].3, 1);
}

#[test]
fn refuse_when_refuses_results_with_a_private_key() {
    let f = filter(
        "[[output_rules]]\nname = \"keys\"\ntools = [\"crm__*\"]\nrefuse_when = [\"detected(private_key)\", '$.classification == \"secret\"']\n",
    );
    let pem =
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----";
    assert!(f.needs_walk(json!({"t": pem}).to_string().as_bytes()));
    let (_, v) = apply(
        &f,
        &json!({"content": [{"type": "text", "text": format!("notes: {pem}")}]}),
    );
    assert!(v.refused);
    assert_eq!(
        counts(&v),
        vec![(
            "keys".into(),
            "refuse_when",
            "detected(private_key)".into(),
            1
        )]
    );
    let (_, v) = apply(
        &f,
        &json!({"structuredContent": {"classification": "secret"}}),
    );
    assert!(v.refused);
    let (_, v) = apply(
        &f,
        &json!({"structuredContent": {"classification": "public"}}),
    );
    assert_eq!(v, Verdict::default());
}

#[test]
fn operator_patterns_share_one_pass_with_detectors() {
    let f = filter(
        "[[output_rules]]\nname = \"p\"\ntools = [\"crm__*\"]\ndetectors = [\"email\"]\npatterns = [{ name = \"emp\", regex = 'EMP-[0-9]{6}' }]\nstyle = \"hash\"\n",
    );
    let (got, v) = apply(
        &f,
        &json!({"content": [{"type": "text", "text": "EMP-123456 wrote to a@example.com"}]}),
    );
    let t = got["content"][0]["text"].as_str().unwrap_or("");
    assert!(
        t.starts_with("[REDACTED:emp:sha256:") && t.contains(" wrote to [REDACTED:email:sha256:"),
        "{t}"
    );
    assert_eq!(v.redactions.len(), 2);
}

#[test]
fn results_without_candidates_need_no_walk() {
    let f = filter(
        "[[output_rules]]\nname = \"pii\"\ntools = [\"crm__*\"]\ndetectors = [\"card\", \"email\", \"phone\", \"iban\", \"secrets\"]\n",
    );
    let clean =
        json!({"content": [{"type": "text", "text": "order 42 shipped 2024-01-02, total 19.99"}]});
    assert!(!f.needs_walk(clean.to_string().as_bytes()));
    assert!(f.needs_walk(br#"{"t":"a@example.com"}"#));
    let fields =
        filter("[[output_rules]]\nname = \"f\"\ntools = [\"crm__*\"]\ndrop_fields = [\"$.x\"]\n");
    assert!(fields.needs_walk(b"{}"));
}

#[test]
fn gov_id_masks_ssns_and_ninos_in_records_and_keeps_never_issued_ones() {
    let f = filter(
        "[[output_rules]]\nname = \"ids\"\ntools = [\"crm__*\"]\ndetectors = [\"gov_id\"]\nstyle = \"last4\"\n",
    );
    let data = json!({"people": [
        {"ssn": "078-05-1120", "nino": "AB 12 34 56 C", "note": "old id 666-12-3456"},
        {"ssn": "900-12-3456", "nino": "QQ123456C", "note": "file AB123456C, ssn 219 09 9999"}
    ]});
    let (got, v) = apply(&f, &json!({"structuredContent": data}));
    assert_eq!(
        got["structuredContent"],
        json!({"people": [
            {"ssn": "[REDACTED:us_ssn:****1120]", "nino": "[REDACTED:uk_nino:****456C]", "note": "old id 666-12-3456"},
            {"ssn": "900-12-3456", "nino": "QQ123456C",
             "note": "file [REDACTED:uk_nino:****456C], ssn [REDACTED:us_ssn:****9999]"}
        ]})
    );
    assert_eq!(
        counts(&v),
        vec![
            ("ids".into(), "detector", "us_ssn".into(), 2),
            ("ids".into(), "detector", "uk_nino".into(), 2)
        ]
    );
}

#[test]
fn numbers_holding_card_numbers_become_masked_strings() {
    let f =
        filter("[[output_rules]]\nname = \"c\"\ntools = [\"crm__*\"]\ndetectors = [\"card\"]\n");
    let (got, _) = apply(
        &f,
        &json!({"structuredContent": {"pan": 4111111111111111u64, "n": 7}}),
    );
    assert_eq!(
        got["structuredContent"],
        json!({"pan": "[REDACTED:card]", "n": 7})
    );
}

const SENSITIVE: &[&str] = &[
    "4111 1111 1111 1111",
    "5555-5555-5555-4444",
    "378282246310005",
    "ada.lovelace@example.com",
    "x_y+tag@mail.example.co.uk",
    "+44 20 7946 0958",
    "(555) 123-4567",
    "DE89 3704 0044 0532 0130 00",
    "GB82WEST12345698765432",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_0123456789abcdefghijABCDEFGHIJ012345",
    "xoxb-1234567890-ABCDEFghij",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk",
    "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5owkEYFKHpCE5\n-----END EC PRIVATE KEY-----",
    "078-05-1120",
    "219 09 9999",
    "AB123456C",
    "JG 10 37 21 D",
];

/// Look-alikes every detector must leave alone: Luhn-invalid cards, SSNs
/// in ranges never issued, NINOs with prefixes never allocated.
const LOOKALIKES: &[&str] = &[
    "4111 1111 1111 1112",
    "666-12-3456",
    "900-12-3456",
    "123-00-4567",
    "123-45-0000",
    "QQ123456C",
    "GB 12 34 56 A",
    "AB123456E",
];

fn all_detectors() -> OutputFilter {
    filter(
        "[[output_rules]]\nname = \"all\"\ntools = [\"crm__*\"]\ndetectors = [\"card\", \"email\", \"phone\", \"iban\", \"secrets\", \"gov_id\"]\n",
    )
}

/// What a piece of text is: free text, a sensitive value, or a look-alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Free,
    Sensitive,
    Lookalike,
}

fn piece() -> impl Strategy<Value = (String, Kind)> {
    prop_oneof![
        3 => "[a-z0-9 ,;:!?éß漢\\n\"\\\\]{0,24}".prop_map(|s| (s, Kind::Free)),
        1 => proptest::sample::select(SENSITIVE).prop_map(|s| (format!(" ; {s} ; "), Kind::Sensitive)),
        1 => proptest::sample::select(LOOKALIKES).prop_map(|s| (format!(" ; {s} ; "), Kind::Lookalike)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the detectors find is masked, nothing detectable is left,
    /// and every byte outside a match is kept.
    #[test]
    fn masker_leaves_no_detected_value_and_keeps_other_bytes(pieces in proptest::collection::vec(piece(), 0..12)) {
        let f = all_detectors();
        let text: String = pieces.iter().map(|(p, _)| p.as_str()).collect();
        let (got, _) = apply(&f, &json!({"content": [{"type": "text", "text": text}]}));
        let out = got["content"][0]["text"].as_str().unwrap_or_default().to_owned();

        let mut found = Vec::new();
        f.scanner.scan(text.as_bytes(), &mut found);
        let mut expected = String::new();
        let mut at = 0;
        for m in &found {
            expected.push_str(&text[at..m.start]);
            expected.push_str(&format!("[REDACTED:{}]", m.detector.name()));
            at = m.end;
        }
        expected.push_str(&text[at..]);
        prop_assert_eq!(&out, &expected);

        let mut again = Vec::new();
        f.scanner.scan(out.as_bytes(), &mut again);
        prop_assert!(again.is_empty(), "left: {:?}", again);
        for (p, kind) in &pieces {
            let value = p.trim_matches(|c| c == ' ' || c == ';');
            match kind {
                Kind::Sensitive => prop_assert!(!out.contains(value), "{} survived in {}", value, out),
                Kind::Lookalike => prop_assert!(out.contains(p.as_str()), "{} was masked in {}", value, out),
                Kind::Free => {}
            }
        }
    }

    /// The raw-JSON prefilter never says "nothing here" when decoding the
    /// strings would reveal a match.
    #[test]
    fn prefilter_never_misses_what_the_walk_finds(pieces in proptest::collection::vec(piece(), 0..8)) {
        let f = all_detectors();
        let text: String = pieces.iter().map(|(p, _)| p.as_str()).collect();
        let raw = json!({"content": [{"type": "text", "text": text}]}).to_string();
        let mut found = Vec::new();
        f.scanner.scan(text.as_bytes(), &mut found);
        if !found.is_empty() {
            prop_assert!(f.needs_walk(raw.as_bytes()));
        }
    }
}
