//! The output-rule scanner and masker on a tool result: every detector on,
//! masks written as labels. Invariant: no value a detector finds survives
//! masking — the result as the agent would get it, scanned again, holds
//! nothing (unless the filter refused the whole result). Never a panic.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use simd_json::prelude::*;
use toolgate_core::jsonrpc::JsonParser;
use toolgate_core::output::Detector;
use toolgate_decision::filter::detect::{DetectorSet, Scanner};
use toolgate_decision::filter::OutputFilter;

fn fixtures() -> &'static (OutputFilter, Scanner) {
    static F: OnceLock<(OutputFilter, Scanner)> = OnceLock::new();
    F.get_or_init(|| {
        let text = "[[upstreams]]\nname = \"crm\"\nurl = \"http://127.0.0.1:1/mcp\"\n\n\
            [[output_rules]]\nname = \"all\"\ntools = [\"*\"]\n\
            detectors = [\"card\", \"email\", \"phone\", \"iban\", \"secrets\", \"gov_id\"]\n";
        let cfg = match toolgate_core::config::parse(text, "fuzz.toml", Path::new(".")) {
            Ok(c) => c,
            Err(e) => panic!("fixture config: {e}"),
        };
        let rules: Vec<_> = cfg.output_rules.iter().collect();
        let filter = OutputFilter::compile(&rules, 1 << 20);
        (filter, Scanner::new(DetectorSet::of(&Detector::ALL)))
    })
}

fn strings<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let (filter, scanner) = fixtures();
    let text = String::from_utf8_lossy(data);
    let result = serde_json::json!({"content": [{"type": "text", "text": text}], "isError": false});
    let raw = result.to_string().into_bytes();
    let mut outer = JsonParser::new();
    let mut inner = JsonParser::new();
    let Ok(tape) = outer.parse(&raw) else {
        panic!("serde_json wrote JSON the parser refuses");
    };
    let mut walker = filter.walker(&mut inner);
    let mut out = Vec::new();
    walker.write_body(tape.as_value(), &mut out);
    let verdict = walker.finish();
    if verdict.refused {
        return;
    }
    let seen: serde_json::Value = match serde_json::from_slice(&out) {
        Ok(v) => v,
        Err(e) => panic!("the masked result is not JSON: {e}"),
    };
    let mut all = Vec::new();
    strings(&seen, &mut all);
    let mut found = Vec::new();
    for s in all {
        scanner.scan(s.as_bytes(), &mut found);
        assert!(
            found.is_empty(),
            "{:?} survived masking in {s:?}",
            found.iter().map(|f| f.detector).collect::<Vec<_>>()
        );
    }
});
