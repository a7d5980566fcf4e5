//! The `[limits]` check on the hot path: 10 000 customers × 100 tools, three
//! rules applying to every call (a per-customer day quota with tool costs,
//! a per-customer-and-tool hour quota, a per-agent rate), the counters
//! already placed — what a call pays once its customer has been seen; and
//! the same rules with the quotas on a time zone's calendar. Every call
//! measured passes (checked after each run): a refused call would measure
//! giving units back instead.
//!
//! `cargo bench -p toolgate-bench --bench limits`
#![expect(
    clippy::panic,
    reason = "a benchmark with a broken fixture must stop, not measure nothing"
)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use toolgate_core::config::LimitsConfig;
use toolgate_limits::{Call, Limits};

const CUSTOMERS: usize = 10_000;
const TOOLS: usize = 100;

fn limits(time_zone: Option<&str>) -> Limits {
    let zone = time_zone.map_or(String::new(), |z| format!("time_zone = \"{z}\"\n"));
    let rules = r#"
max_counters = 400000

[[rules]]
id = "day"
customer = "*"
quota = { units = 1000000000, per = "day" }
cost = { "crm__tool7" = 10 }

[[rules]]
id = "hour-per-tool"
customer = "*"
tool = "*"
quota = { units = 1000000000, per = "hour" }

[[rules]]
id = "agent-rate"
agent = "*"
rate = { calls_per_s = 1000000000, burst = 1000000 }
"#;
    let cfg: LimitsConfig =
        toml::from_str(&format!("{zone}{rules}")).unwrap_or_else(|e| panic!("limits: {e}"));
    Limits::new(
        &cfg,
        Limits::table(&cfg),
        std::hash::RandomState::new(),
        None,
    )
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn bench(c: &mut Criterion) {
    let l = limits(None);
    let customers: Vec<String> = (0..CUSTOMERS).map(|i| format!("customer-{i:05}")).collect();
    let tools: Vec<String> = (0..TOOLS).map(|i| format!("crm__tool{i}")).collect();
    let now = now_ns();
    // Place every counter first: the steady state of a busy gateway.
    for (i, cu) in customers.iter().enumerate() {
        for t in tools.iter().skip(i % 7).step_by(7).take(14) {
            let call = Call {
                customer: cu,
                agent: "agent-1",
                user: None,
                tool: t,
                upstream: "crm",
            };
            let _ = l.take(&call, now);
        }
    }
    let mut n = 0usize;
    let mut refused = 0u64;
    c.bench_function("limits_take_3_rules_10k_customers_100_tools", |b| {
        b.iter(|| {
            n = n.wrapping_add(7919);
            let i = n % CUSTOMERS;
            let call = Call {
                customer: &customers[i],
                agent: "agent-1",
                user: None,
                tool: &tools[(i % 7) + 7 * (n % 14)],
                upstream: "crm",
            };
            // Time moves on with every call, so the rate (one call a
            // nanosecond) keeps passing.
            let ok = l.take(black_box(&call), now + n as u64).is_ok();
            refused += u64::from(!ok);
            black_box(ok)
        })
    });
    assert_eq!(refused, 0, "a measured call was refused");
    // The same three rules for one busy customer: its counters stay in
    // the cache, so this is the check's own work. Then the quotas on
    // India's calendar (hours from :30 UTC): the window is the one cached
    // for the rule, found again only when it ends.
    let zoned = limits(Some("Asia/Kolkata"));
    for (name, l) in [
        ("limits_take_3_rules_one_hot_customer", &l),
        ("limits_take_3_rules_one_hot_customer_time_zone", &zoned),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| {
                n = n.wrapping_add(1);
                let call = Call {
                    customer: &customers[0],
                    agent: "agent-1",
                    user: None,
                    tool: &tools[7 * (n % 14)],
                    upstream: "crm",
                };
                let ok = l.take(black_box(&call), now + n as u64).is_ok();
                refused += u64::from(!ok);
                black_box(ok)
            })
        });
        assert_eq!(refused, 0, "{name}: a measured call was refused");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
