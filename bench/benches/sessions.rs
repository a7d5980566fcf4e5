//! Session-aware decisions: what a call pays for `context.session` on top
//! of today's decision — entering its session (the lock-free lookup),
//! reading the facts, building the Cedar context, and recording the call —
//! with 10 000 live sessions in the table; and the full Cedar evaluation
//! of the shipped session policies (`policies/examples/sessions.toml`)
//! beside the same evaluation without them.
//!
//! `cargo bench -p toolgate-bench --bench sessions`
#![expect(
    clippy::panic,
    reason = "a benchmark with a broken fixture must stop, not measure nothing"
)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use toolgate_core::jsonrpc::JsonParser;
use toolgate_decision::policy::{CallFacts, Engine, PairDecision, Slice, Verdict};
use toolgate_decision::session::{SessionView, Sessions};
use toolgate_decision::Snapshot;

const T0: u64 = 1_800_000_000;

fn example() -> (toolgate_core::config::ValidConfig, Snapshot) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples/sessions.toml");
    let Ok(cfg) = toolgate_core::config::load(&path) else {
        panic!("{} does not load", path.display())
    };
    let Ok(bundle) = toolgate_decision::policy::load(&cfg.policy_files) else {
        panic!("session policies do not load")
    };
    let snap = Snapshot::build(&cfg, &[]).with_policies(&cfg, Arc::new(bundle));
    (cfg, snap)
}

/// The assistant's refund of `args` decided by Cedar over `slice`.
fn decide_refund(
    parser: &mut JsonParser,
    args: &[u8],
    engine: &Engine,
    slice: &Slice,
    session: Option<SessionView<'_>>,
) -> bool {
    let tape = parser
        .parse(black_box(args))
        .unwrap_or_else(|_| panic!("json"));
    let facts = CallFacts {
        agent: "assistant",
        user: None,
        groups: None,
        tool: "billing__refund",
        upstream: "billing",
        customer: "assistant",
        args: Some(tape.as_value()),
        session,
    };
    matches!(engine.evaluate(slice, &facts), Verdict::Allow { .. })
}

fn bench(c: &mut Criterion) {
    let (_cfg, snap) = example();
    let Some(engine) = snap.engine.clone() else {
        panic!("no engine")
    };
    let Some(agent) = snap.agent_by_id("assistant") else {
        panic!("no agent")
    };
    let Some(route) = agent.tools.get("billing__refund") else {
        panic!("no route")
    };
    let PairDecision::Evaluate(slice) = &route.decision else {
        panic!("the refund pair must be evaluated per call")
    };
    let table = Arc::new(Sessions::new(16 * 1024, 1800, snap.distinct.len()));
    for i in 0..10_000u32 {
        let k = table.key(&[b"bench", &i.to_le_bytes()]);
        table
            .enter(k, T0)
            .commit(&table.recorded(1, "crm__get_customer", &[], None));
    }
    let key = table.key(&[b"bench", &77u32.to_le_bytes()]);
    let args = br#"{"amount":10,"customer_id":"c-1"}"#.to_vec();
    let mut parser = JsonParser::new();
    let mut g = c.benchmark_group("sessions");
    g.bench_function("enter_facts_commit_10k_sessions", |b| {
        let tape = parser.parse(&args).unwrap_or_else(|_| panic!("json"));
        let recorded = table.recorded(
            route.labels,
            &route.exposed,
            &snap.distinct,
            Some(tape.as_value()),
        );
        b.iter(|| {
            let e = table.enter(black_box(key), T0 + 1);
            let f = e.facts(recorded.tool);
            e.commit(&recorded);
            f.calls
        })
    });
    let facts = table.enter(key, T0 + 1).facts(7);
    let view = SessionView {
        facts: &facts,
        labels: &snap.label_names,
        distinct: &snap.distinct,
    };
    g.bench_function("session_context_to_cedar_all_fields", |b| {
        b.iter(|| black_box(&view).to_cedar(u16::MAX, u32::MAX).is_ok())
    });
    let (fields, labels) = slice.session_fields();
    g.bench_function("session_context_to_cedar_refund_slice", |b| {
        b.iter(|| black_box(&view).to_cedar(fields, labels).is_ok())
    });
    g.bench_function("decide_refund_with_session_policies", |b| {
        b.iter(|| decide_refund(&mut parser, &args, &engine, slice, Some(view)))
    });
    // Today's decision for comparison: the same call under a baseline
    // permit and a forbid on its arguments, no session.
    let (cfg, _) = example();
    let plain = toolgate_decision::policy::from_sources(&[(
        "plain.cedar".into(),
        r#"@id("baseline") permit(principal, action, resource);
           @id("big-refunds") forbid(principal, action, resource) when { context.args has amount && context.args.amount > 1000 };"#
            .to_owned(),
    )])
    .unwrap_or_else(|_| panic!("plain policies"));
    let plain = Snapshot::build(&cfg, &[]).with_policies(&cfg, Arc::new(plain));
    let Some(plain_engine) = plain.engine.clone() else {
        panic!("no engine")
    };
    let Some(PairDecision::Evaluate(plain_slice)) = plain
        .agent_by_id("assistant")
        .and_then(|a| a.tools.get("billing__refund"))
        .map(|r| r.decision.clone())
    else {
        panic!("the plain refund pair must be evaluated per call")
    };
    g.bench_function("decide_refund_args_only_no_session", |b| {
        b.iter(|| decide_refund(&mut parser, &args, &plain_engine, &plain_slice, None))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
