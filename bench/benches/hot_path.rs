//! Hot-path microbenchmarks: HTTP head parse, JSON-RPC view, permission
//! lookup, audit record encode, audit ring push/pop, output-rule scanning.
#![expect(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark with a broken fixture must stop, not measure nothing"
)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use simd_json::prelude::*;
use toolgate_core::audit::AuditRecord;
use toolgate_core::config::Durability;
use toolgate_core::identity::{format_key, key_hash};
use toolgate_core::jsonrpc::{JsonParser, RpcRequest, ToolCall};
use toolgate_decision::{Catalog, Snapshot};
use toolgate_ingress::http::head::{parse_head, Limits};
use toolgate_sinks::{audit_ring, AuditHealth, AuditProducer};

fn call_body(arg_bytes: usize) -> Vec<u8> {
    format!(
        r#"{{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{{"name":"crm__lookup_customer","arguments":{{"customer_id":"c-42","note":"{}"}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#,
        "x".repeat(arg_bytes)
    )
    .into_bytes()
}

fn http_head(c: &mut Criterion) {
    let req = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAuthorization: Bearer tg_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: crm__lookup_customer\r\nContent-Length: 1024\r\n\r\n";
    let limits = Limits {
        max_header_bytes: 16384,
        max_headers: 64,
        max_body_bytes: 1 << 20,
    };
    let mut g = c.benchmark_group("http");
    g.throughput(Throughput::Bytes(req.len() as u64));
    g.bench_function("parse_head_mcp_call", |b| {
        b.iter(|| {
            parse_head(black_box(req), &limits)
                .ok()
                .flatten()
                .map(|h| h.len)
        })
    });
    g.finish();
}

fn jsonrpc_view(c: &mut Criterion) {
    let mut g = c.benchmark_group("jsonrpc");
    for size in [64usize, 1024, 16 * 1024] {
        let body = call_body(size);
        let mut parser = JsonParser::new();
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(format!("view_tools_call_{size}b_args"), |b| {
            b.iter(|| {
                let tape = parser.parse(black_box(&body)).ok()?;
                let rpc = RpcRequest::from_tape(&tape).ok()?;
                ToolCall::from_request(&rpc).ok().map(|c| c.name.len())
            })
        });
    }
    g.finish();
}

fn permission_lookup(c: &mut Criterion) {
    // 1000 agents × 100 attached tools over 10 upstreams.
    let mut text = String::new();
    for u in 0..10 {
        text.push_str(&format!(
            "[[upstreams]]\nname = \"u{u}\"\nurl = \"http://127.0.0.1:{}/mcp\"\n",
            9000 + u
        ));
    }
    for a in 0..1000u32 {
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&a.to_be_bytes());
        let (_, hash) = format_key(&seed);
        let tools: Vec<String> = (0..100)
            .map(|t| format!("\"u{}__tool{}\"", t % 10, t))
            .collect();
        text.push_str(&format!(
            "[[agents]]\nid = \"agent{a}\"\napi_key_sha256 = \"{hash}\"\ntools = [{}]\n",
            tools.join(",")
        ));
    }
    let cfg = toolgate_core::config::parse(&text, "bench", Path::new(".")).unwrap();
    let catalogs: Vec<_> = (0..10)
        .map(|u| {
            let page = format!(
                r#"{{"tools":[{}]}}"#,
                (0..100)
                    .map(|t| format!(r#"{{"name":"tool{t}","inputSchema":{{"type":"object"}}}}"#))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            Catalog::from_pages(u, &cfg.namer, &[page.into_bytes()])
                .ok()
                .map(Arc::new)
        })
        .collect();
    let snap = Snapshot::build(&cfg, &catalogs);
    let mut seed = [0u8; 32];
    seed[..4].copy_from_slice(&777u32.to_be_bytes());
    let key = format_key(&seed).0;
    let mut g = c.benchmark_group("permission");
    g.bench_function("identify_and_route_1k_agents_100_tools", |b| {
        b.iter(|| {
            let agent = snap.agent_by_key(&key_hash(black_box(key.as_bytes())))?;
            snap.route(agent, black_box("u7__tool57"))
                .map(|r| r.upstream)
        })
    });
    g.bench_function("route_only_1k_agents_100_tools", |b| {
        let agent = snap.agent_by_key(&key_hash(key.as_bytes())).expect("agent");
        b.iter(|| {
            snap.route(agent, black_box("u7__tool57"))
                .map(|r| r.upstream)
        })
    });
    g.finish();
}

fn record() -> AuditRecord {
    AuditRecord {
        shard: 1,
        seq: 123_456,
        user: None,
        latency_us: 812,
        ..toolgate_bench::sample_record()
    }
}

fn audit(c: &mut Criterion) {
    let mut g = c.benchmark_group("audit");
    let r = record();
    let mut out = Vec::with_capacity(1024);
    g.bench_function("encode_json_record", |b| {
        b.iter(|| {
            out.clear();
            black_box(&r).encode_json(&mut out);
            out.len()
        })
    });
    let (w, mut consumer) = audit_ring(1024);
    let health = AuditHealth::new(1, Durability::Batch);
    let mut producer = AuditProducer::new(0, w, health);
    g.bench_function("ring_admit_commit_pop", |b| {
        b.iter(|| {
            if let Ok(a) = producer.admit() {
                producer.commit(a, record());
            }
            consumer.pop().ok().map(|r| r.seq)
        })
    });
    g.finish();
}

/// 1k agents × 100 tools × 200 policies: a precompiled pair, a cache hit, and
/// a full Cedar evaluation with argument conditions.
fn decision(c: &mut Criterion) {
    use toolgate_decision::policy::{CallFacts, DecisionCache, PairDecision, Verdict};
    let mut text = String::new();
    for u in 0..10 {
        text.push_str(&format!(
            "[[upstreams]]\nname = \"u{u}\"\nurl = \"http://127.0.0.1:{}/mcp\"\n",
            9000 + u
        ));
    }
    let dir = std::env::temp_dir().join(format!("toolgate-bench-policies-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let mut policies = String::new();
    for i in 0..200 {
        let (g, u, t) = (i % 20, i % 10, i % 100);
        if i % 4 == 0 {
            policies.push_str(&format!(
                "permit(principal in Toolgate::Group::\"g{g}\", action == Toolgate::Action::\"u{u}__tool{t}\", resource);\n"
            ));
        } else {
            policies.push_str(&format!(
                "permit(principal in Toolgate::Group::\"g{g}\", action == Toolgate::Action::\"u{u}__tool{t}\", resource) when {{ context.args.n < {i} && context.args.to like \"*@example.com\" }};\n"
            ));
        }
    }
    let _ = std::fs::write(dir.join("bench.cedar"), policies);
    text.push_str(&format!(
        "[policies]\nfiles = [\"{}\"]\nwatch = false\n",
        dir.join("bench.cedar").display()
    ));
    for a in 0..1000u32 {
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&a.to_be_bytes());
        let (_, hash) = format_key(&seed);
        let tools: Vec<String> = (0..100)
            .map(|t| format!("\"u{}__tool{}\"", t % 10, t))
            .collect();
        text.push_str(&format!(
            "[[agents]]\nid = \"agent{a}\"\napi_key_sha256 = \"{hash}\"\ngroups = [\"g{}\"]\ntools = [{}]\n",
            a % 20,
            tools.join(",")
        ));
    }
    let cfg = toolgate_core::config::parse(&text, "bench", Path::new(".")).unwrap();
    let bundle = toolgate_decision::policy::load(&cfg.policy_files).unwrap();
    let snap = Snapshot::build(&cfg, &[]).with_policies(&cfg, Arc::new(bundle));
    let engine = snap.engine.clone().expect("engine");
    // agent0 is in g0, and u0__tool0 has an unconditional permit for g0
    // (policy 0); agent1 is in g1, and u1__tool1 has a conditional one (policy 1).
    let fixed = snap.agents[0].tools.get("u0__tool0").expect("route");
    assert!(matches!(
        fixed.decision,
        PairDecision::Fixed(Verdict::Allow { .. })
    ));
    let dynamic = snap.agents[1].tools.get("u1__tool1").expect("route");
    let PairDecision::Evaluate(slice) = &dynamic.decision else {
        panic!("expected a pair needing evaluation")
    };
    let args = br#"{"n":0,"to":"ada@example.com"}"#.to_vec();
    let mut parser = JsonParser::new();
    let mut g = c.benchmark_group("decision");
    g.bench_function("decide_precompiled_pair_1k_agents_200_policies", |b| {
        b.iter(|| match &black_box(fixed).decision {
            PairDecision::Fixed(v) => matches!(v, Verdict::Allow { .. }),
            PairDecision::Evaluate(_) => false,
        })
    });
    let mut cache = DecisionCache::new(16 * 1024);
    let allow = Verdict::Allow {
        policies: Arc::from([]),
    };
    let _ = cache.get_or_insert(&[b"1", b"agent0", b"u1__tool1", b"", &args], || {
        allow.clone()
    });
    g.bench_function("decide_cache_hit_64b_args", |b| {
        b.iter(|| {
            cache.get_or_insert(
                &[b"1", b"agent0", b"u1__tool1", b"", black_box(&args)],
                || allow.clone(),
            )
        })
    });
    g.bench_function("decide_full_cedar_eval_arg_conditions", |b| {
        b.iter(|| {
            let tape = parser.parse(black_box(&args)).expect("json");
            let facts = CallFacts {
                agent: "agent1",
                user: None,
                groups: None,
                tool: "u1__tool1",
                upstream: "u1",
                customer: "agent1",
                args: Some(tape.as_value()),
                session: None,
            };
            matches!(engine.evaluate(slice, &facts), Verdict::Allow { .. })
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tool result of about `size` bytes: order rows as structuredContent and
/// as JSON text; with `matches`, every eighth row carries an e-mail and a
/// Luhn-valid card number.
fn tool_result(size: usize, matches: bool) -> Vec<u8> {
    let mut rows = Vec::new();
    let mut len = 0;
    let mut i = 0;
    while len * 2 < size {
        let row = if matches && i % 8 == 0 {
            format!(
                r#"{{"id":"r-{i:05}","name":"Widget {i}","status":"shipped","qty":{},"price":19.99,"date":"2024-01-02","note":"contact ada{i}@example.com, card 4111 1111 1111 1111"}}"#,
                i % 7
            )
        } else {
            format!(
                r#"{{"id":"r-{i:05}","name":"Widget {i}","status":"shipped","qty":{},"price":19.99,"date":"2024-01-02","note":"left at the front door, customer happy"}}"#,
                i % 7
            )
        };
        len += row.len() + 1;
        rows.push(row);
        i += 1;
    }
    let structured = format!(r#"{{"rows":[{}]}}"#, rows.join(","));
    let mut text = Vec::new();
    toolgate_core::jsonrpc::write_str(&structured, &mut text);
    let mut out = Vec::with_capacity(size + 256);
    out.extend_from_slice(
        br#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"#,
    );
    out.extend_from_slice(&text);
    out.extend_from_slice(br#"}],"structuredContent":"#);
    out.extend_from_slice(structured.as_bytes());
    out.extend_from_slice(br#","isError":false}}"#);
    out
}

fn all_detectors_filter() -> toolgate_decision::OutputFilter {
    let text = r#"
[[upstreams]]
name = "crm"
url = "http://127.0.0.1:9101/mcp"
[[output_rules]]
name = "all"
tools = ["crm__*"]
detectors = ["card", "email", "phone", "iban", "secrets", "gov_id"]
"#;
    let cfg = toolgate_core::config::parse(text, "bench", Path::new(".")).unwrap();
    let rules: Vec<_> = cfg.output_rules.iter().collect();
    toolgate_decision::OutputFilter::compile(&rules, 1 << 30)
}

/// Output rules with every detector on: the raw pre-scan that lets a clean
/// result through untouched, the detector pass alone, and the whole walk
/// (parse, scan, mask, re-encode) of results with matches.
fn scan(c: &mut Criterion) {
    use toolgate_core::output::Detector;
    use toolgate_decision::filter::detect::{DetectorSet, Scanner};
    let filter = all_detectors_filter();
    let scanner = Scanner::new(DetectorSet::of(&Detector::ALL));
    let mut g = c.benchmark_group("scan");
    for (name, size) in [("1kib", 1024usize), ("64kib", 64 * 1024), ("1mib", 1 << 20)] {
        let clean = tool_result(size, false);
        assert!(!filter.needs_walk(&clean), "fixture must not match");
        g.throughput(Throughput::Bytes(clean.len() as u64));
        g.bench_function(format!("all_detectors_{name}_no_match"), |b| {
            b.iter(|| filter.needs_walk(black_box(&clean)))
        });
        let dirty = tool_result(size, true);
        assert!(filter.needs_walk(&dirty), "fixture must match");
        g.throughput(Throughput::Bytes(dirty.len() as u64));
        let mut found = Vec::new();
        g.bench_function(format!("all_detectors_{name}_with_matches_scan"), |b| {
            b.iter(|| {
                found.clear();
                scanner.scan(black_box(&dirty), &mut found);
                found.len()
            })
        });
        let mut outer = JsonParser::new();
        let mut inner = JsonParser::new();
        let mut out = Vec::with_capacity(dirty.len());
        g.bench_function(format!("all_detectors_{name}_with_matches_filter"), |b| {
            b.iter(|| {
                let Ok(tape) = outer.parse(black_box(&dirty)) else {
                    panic!("fixture parses");
                };
                let Some(result) = tape.as_value().get("result") else {
                    panic!("fixture has a result");
                };
                out.clear();
                let mut w = filter.walker(&mut inner);
                for (k, v) in result.as_object().into_iter().flat_map(|o| o.iter()) {
                    w.write_member(k, v, &mut out);
                }
                w.finish().redactions.len()
            })
        });
    }
    g.finish();
}

/// Bearer credentials as the shard checks them: API key digest lookup, JWT
/// signature and claims with the key already parsed (RS256, ES256, EdDSA), and a
/// sub-token's MAC, expiry and revocation check.
fn identity(c: &mut Criterion) {
    use toolgate_core::jwt::{ClaimRules, Verifier};
    use toolgate_core::secret::Secret;
    use toolgate_core::subtoken;

    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/jwt.json")).expect("fixture");
    let rules = ClaimRules {
        issuer: "https://idp.example.com".into(),
        audience: "https://toolgate.example.com/mcp".into(),
        agent_claim: "azp".into(),
        groups_claim: Some("groups".into()),
        customer_claim: None,
        leeway_s: 30,
    };
    let verifier = Verifier::from_jwks(&fixture["jwks"].to_string(), rules).expect("jwks");
    let now = fixture["now"].as_u64().unwrap_or_default();
    let mut g = c.benchmark_group("identity");
    for alg in ["rs256", "es256", "eddsa"] {
        let token = fixture[alg]
            .as_str()
            .unwrap_or_default()
            .as_bytes()
            .to_vec();
        if verifier.verify(&token, now).is_err() {
            panic!("{alg} fixture token does not verify");
        }
        g.bench_function(format!("jwt_verify_{alg}_cached_key"), |b| {
            b.iter(|| verifier.verify(black_box(&token), now).is_ok())
        });
    }
    let key = Secret::new(vec![7u8; 32]);
    let claims = subtoken::Claims {
        jti: "0123456789abcdef0123456789abcdef".into(),
        agent: "agent0".into(),
        user: Some("alice".into()),
        tools: Some(vec!["crm__lookup_customer".into()]),
        customer: None,
        iat: now,
        exp: now + 3600,
    };
    let token = subtoken::mint(&key, &claims);
    let revoked = (0..1000).map(|i| format!("{i:032x}")).collect();
    let st = subtoken::Verifier::new(key, revoked);
    if st.verify(token.as_bytes(), now).is_err() {
        panic!("sub-token fixture does not verify");
    }
    g.bench_function("subtoken_verify_1k_revoked", |b| {
        b.iter(|| st.verify(black_box(token.as_bytes()), now).is_ok())
    });
    let (key_text, _) = format_key(&[9u8; 32]);
    g.bench_function("api_key_digest", |b| {
        b.iter(|| key_hash(black_box(key_text.as_bytes())))
    });
    g.finish();
}

criterion_group!(
    benches,
    identity,
    http_head,
    jsonrpc_view,
    permission_lookup,
    audit,
    decision,
    scan
);
criterion_main!(benches);
