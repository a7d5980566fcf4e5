use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::*;

/// 2026-12-06T22:03:04Z, in ns.
const NOW: u64 = 1_796_594_584 * 1_000_000_000;
const S: u64 = 1_000_000_000;

fn limits(rules: &str, max_counters: usize) -> Limits {
    let cfg: LimitsConfig =
        toml::from_str(&format!("max_counters = {max_counters}\n{rules}")).unwrap();
    Limits::new(
        &cfg,
        Limits::table(&cfg),
        std::hash::RandomState::new(),
        None,
    )
}

fn call<'a>(customer: &'a str, tool: &'a str) -> Call<'a> {
    Call {
        customer,
        agent: "bot",
        user: None,
        tool,
        upstream: "crm",
    }
}

fn passes(l: &Limits, c: &Call<'_>, now: u64) -> bool {
    l.take(c, now).is_ok()
}

#[test]
fn a_day_quota_per_customer_counts_each_customer_apart() {
    let l = limits(
        "[[rules]]\nid = \"day\"\ncustomer = \"*\"\nquota = { units = 3, per = \"day\" }\n",
        1024,
    );
    let acme = call("acme", "crm__lookup");
    for left in [2, 1, 0] {
        let s = l.take(&acme, NOW).unwrap().tightest.unwrap();
        assert_eq!((&*s.id, s.limit, s.remaining), ("day", 3, left));
        assert_eq!(s.window_s, 86_400);
    }
    let Err(Refused::Exceeded {
        standing,
        quota,
        retry_after_s,
    }) = l.take(&acme, NOW)
    else {
        panic!("the fourth call passed");
    };
    // Until midnight UTC.
    assert!(quota);
    assert_eq!(retry_after_s, 1_796_601_600 - 1_796_594_584);
    assert_eq!((standing.remaining, standing.reset_s), (0, retry_after_s));
    assert!(passes(&l, &call("globex", "crm__lookup"), NOW));
    // The next day starts afresh.
    assert!(passes(&l, &acme, NOW + retry_after_s * S));
}

#[test]
fn the_most_specific_rule_of_a_family_wins_over_the_default() {
    let l = limits(
        "[[rules]]\nid = \"default\"\ncustomer = \"*\"\nquota = { units = 1, per = \"day\" }\n\
         [[rules]]\nid = \"acme-plan\"\ncustomer = \"acme\"\nquota = { units = 3, per = \"day\" }\n",
        1024,
    );
    let acme = call("acme", "t");
    assert_eq!(
        (0..5).filter(|_| passes(&l, &acme, NOW)).count(),
        3,
        "acme has its plan, not the default"
    );
    let other = call("initech", "t");
    assert_eq!((0..5).filter(|_| passes(&l, &other, NOW)).count(), 1);
}

#[test]
fn tools_cost_their_weight_and_every_rule_must_pass() {
    let l = limits(
        "[[rules]]\nid = \"units\"\ncustomer = \"*\"\nquota = { units = 6, per = \"month\" }\ncost = { \"crm__export\" = 2 }\n\
         [[rules]]\nid = \"exports\"\ntool = \"crm__export\"\nquota = { units = 2, per = \"hour\" }\n",
        1024,
    );
    let export = call("acme", "crm__export");
    let lookup = call("acme", "crm__lookup");
    // units 2 of 6, exports 1 of 2: the call is charged its cost, 2 (the
    // larger of what its two quotas weigh it).
    assert_eq!(l.take(&export, NOW).unwrap().units, 2);
    assert!(passes(&l, &export, NOW)); // units 4 of 6, exports 2 of 2
                                       // The hour's exports are used up: refused, and the month's units it
                                       // would have cost are given back.
    assert!(matches!(
        l.take(&export, NOW),
        Err(Refused::Exceeded { standing, .. }) if &*standing.id == "exports"
    ));
    let passed = l.take(&lookup, NOW).unwrap();
    let s = passed.tightest.unwrap();
    assert_eq!((&*s.id, s.remaining, passed.units), ("units", 1, 1));
    assert!(passes(&l, &lookup, NOW));
    assert!(!passes(&l, &lookup, NOW));
}

#[test]
fn a_rate_passes_its_burst_then_one_call_per_interval() {
    let l = limits(
        "[[rules]]\nid = \"rate\"\nagent = \"*\"\nrate = { calls_per_s = 2, burst = 2 }\n",
        1024,
    );
    let c = call("acme", "t");
    assert!(passes(&l, &c, NOW));
    assert!(passes(&l, &c, NOW));
    let Err(Refused::Exceeded {
        quota,
        retry_after_s,
        ..
    }) = l.take(&c, NOW)
    else {
        panic!("over the burst");
    };
    assert!(!quota);
    assert_eq!(retry_after_s, 1);
    assert!(passes(&l, &c, NOW + S / 2));
    assert!(!passes(&l, &c, NOW + S / 2));
}

#[test]
fn a_user_selector_leaves_calls_without_a_user_alone() {
    let l = limits(
        "[[rules]]\nid = \"per-user\"\nuser = \"*\"\nquota = { units = 1, per = \"minute\" }\n",
        1024,
    );
    let anonymous = call("acme", "t");
    assert_eq!(l.take(&anonymous, NOW), Ok(Passed::default()));
    let alice = Call {
        user: Some("alice"),
        ..anonymous
    };
    assert!(passes(&l, &alice, NOW));
    assert!(!passes(&l, &alice, NOW));
}

#[test]
fn counts_are_exact_across_threads() {
    let l = Arc::new(limits(
        "[[rules]]\nid = \"day\"\ncustomer = \"*\"\nquota = { units = 25000, per = \"day\" }\n",
        1024,
    ));
    let passed = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (l, passed) = (Arc::clone(&l), Arc::clone(&passed));
            std::thread::spawn(move || {
                for _ in 0..10_000 {
                    if l.take(&call("acme", "t"), NOW).is_ok() {
                        passed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(passed.load(Ordering::Relaxed), 25_000);
}

#[test]
fn a_full_table_refuses_rather_than_lets_through() {
    let l = limits(
        "[[rules]]\nid = \"day\"\ncustomer = \"*\"\nquota = { units = 9, per = \"day\" }\n",
        16,
    );
    let ids: Vec<String> = (0..17).map(|i| format!("c{i}")).collect();
    for id in &ids[..16] {
        assert!(passes(&l, &call(id, "t"), NOW));
    }
    assert_eq!(l.take(&call(&ids[16], "t"), NOW), Err(Refused::TableFull));
    assert!(
        passes(&l, &call(&ids[0], "t"), NOW),
        "known customers go on"
    );
}

#[test]
fn counters_outlive_a_reload_that_keeps_the_rule() {
    let rules = "[[rules]]\nid = \"day\"\ncustomer = \"*\"\nquota = { units = 2, per = \"day\" }\n";
    let cfg: LimitsConfig = toml::from_str(rules).unwrap();
    let table = Limits::table(&cfg);
    let hasher = std::hash::RandomState::new();
    let before = Limits::new(&cfg, Arc::clone(&table), hasher.clone(), None);
    assert!(passes(&before, &call("acme", "t"), NOW));
    let after = Limits::new(&cfg, table, hasher, None);
    assert!(passes(&after, &call("acme", "t"), NOW));
    assert!(!passes(&after, &call("acme", "t"), NOW));
}

#[test]
fn a_refusal_after_many_rules_gives_every_one_back() {
    // Ten families (one quota per window and selector set), the last one
    // tight: each refused call must leave the nine others untouched.
    let mut rules = String::new();
    let sels = ["customer", "agent", "tool", "upstream"];
    let mut n = 0;
    for per in ["minute", "hour", "day"] {
        for sel in sels.iter().take(3) {
            rules.push_str(&format!(
                "[[rules]]\nid = \"r{n}\"\n{sel} = \"*\"\nquota = {{ units = 5, per = \"{per}\" }}\n"
            ));
            n += 1;
        }
    }
    rules.push_str(
        "[[rules]]\nid = \"tight\"\nupstream = \"*\"\nquota = { units = 1, per = \"month\" }\n",
    );
    let l = limits(&rules, 1024);
    let c = call("acme", "t");
    assert!(passes(&l, &c, NOW));
    for _ in 0..10 {
        assert!(!passes(&l, &c, NOW));
    }
    // Had the refusals kept their units, the customer's, agent's and
    // tool's 5-unit rules would be spent: four more calls (each through
    // another upstream, so the tight rule lets it pass) fit exactly.
    let upstreams = ["u1", "u2", "u3", "u4", "u5"];
    for u in &upstreams[..4] {
        assert!(passes(&l, &Call { upstream: u, ..c }, NOW), "{u}");
    }
    assert!(!passes(
        &l,
        &Call {
            upstream: upstreams[4],
            ..c
        },
        NOW
    ));
}

#[test]
fn quota_counters_name_what_they_count_and_roll_with_the_window() {
    let l = limits(
        "[[rules]]\nid = \"day\"\ncustomer = \"*\"\nquota = { units = 5, per = \"day\" }\ncost = { \"crm__export\" = 3 }\n\
         [[rules]]\nid = \"rate\"\ncustomer = \"*\"\nrate = { calls_per_s = 100 }\n",
        1024,
    );
    assert!(passes(&l, &call("acme", "crm__export"), NOW));
    assert!(passes(&l, &call("acme", "crm__lookup"), NOW));
    assert!(
        !passes(&l, &call("acme", "crm__export"), NOW),
        "3 + 1 + 3 > 5"
    );
    let counters = l.quota_counters(NOW);
    assert_eq!(
        counters.len(),
        1,
        "rates are not quota counters: {counters:?}"
    );
    let q = &counters[0];
    assert_eq!(
        (&*q.rule, q.key.clone(), q.used, q.remaining, q.units),
        ("day", vec![("customer", "acme".to_owned())], 4, 1, 5)
    );
    assert_eq!(
        (q.window_start_s, q.reset_s),
        (1_796_515_200, 1_796_601_600 - 1_796_594_584)
    );
    // The next day the same counter reads empty.
    let next = l.quota_counters(NOW + 86_400 * S);
    assert_eq!((next[0].used, next[0].remaining), (0, 5));
}

/// A shared rate of 10 calls/s with a burst of 8 over two replicas:
/// this replica's share is 5 calls/s with a burst of 4, a lease 2 calls.
fn shared_rate(up: bool) -> (Limits, std::sync::mpsc::Receiver<shared::Refill>) {
    let cfg: LimitsConfig = toml::from_str(
        "[[rules]]\nid = \"rate\"\ncustomer = \"*\"\nrate = { calls_per_s = 10, burst = 8 }\n\
         [[rules]]\nid = \"once\"\ntool = \"once\"\nquota = { units = 1, per = \"day\" }\n",
    )
    .unwrap();
    let (sharing, rx) = Sharing::detached(20, 2, up);
    let l = Limits::new(
        &cfg,
        Arc::new(Table::new(1024, true)),
        std::hash::RandomState::new(),
        Some(Arc::new(sharing)),
    );
    (l, rx)
}

#[test]
fn a_shared_rate_spends_reserved_calls_then_this_replicas_share() {
    let (l, rx) = shared_rate(true);
    let c = call("acme", "t");
    // Nothing reserved yet: the share's burst passes, and is owed.
    assert_eq!((0..6).filter(|_| passes(&l, &c, NOW)).count(), 4);
    let asked: Vec<shared::Refill> = rx.try_iter().collect();
    let (mut reserve, mut pay) = (None, None);
    for r in &asked {
        match r.ask {
            shared::Ask::Rate(shared::RateAsk {
                pay: true, amount, ..
            }) => pay = Some(amount),
            shared::Ask::Rate(shared::RateAsk {
                pay: false,
                amount,
                interval_us,
                tolerance_us,
            }) => reserve = Some((r.slot, amount, interval_us, tolerance_us)),
            shared::Ask::Quota(_) => panic!("a quota asked for"),
        }
        assert_eq!(r.key, "toolgate:rate:rate:acme");
    }
    assert_eq!(
        asked.len(),
        2,
        "one reservation in flight and one payment: {asked:?}"
    );
    let (index, amount, interval_us, tolerance_us) = reserve.unwrap();
    assert_eq!((amount, interval_us, tolerance_us), (2, 100_000, 700_000));
    assert!(pay.is_some());
    let slot = l.table.at(index).unwrap();
    assert_eq!(
        l.table.share(index).unwrap().owed.load(Ordering::Acquire),
        4,
        "the four calls are owed"
    );
    // Redis reserves two calls: both pass, then the share is spent.
    shared::grant_calls(slot, 2, NOW / S);
    assert_eq!((0..4).filter(|_| passes(&l, &c, NOW)).count(), 2);
    // Reserved calls are made within the next second or not at all.
    shared::grant_calls(slot, 2, NOW / S);
    assert!(passes(&l, &c, NOW + 2 * S - 1));
    assert_eq!(slot.granted.load(Ordering::Acquire) & USED_MASK, 1);
    let share_before = slot.value.load(Ordering::Acquire);
    assert!(passes(&l, &c, NOW + 2 * S));
    assert_eq!(
        slot.granted.load(Ordering::Acquire) & USED_MASK,
        1,
        "not spent"
    );
    assert_ne!(
        slot.value.load(Ordering::Acquire),
        share_before,
        "the call came from the share"
    );
}

#[test]
fn a_refused_call_gives_back_its_reserved_call() {
    let (l, rx) = shared_rate(true);
    let first = call("acme", "once");
    assert!(
        passes(&l, &first, NOW),
        "the share lets the first call pass"
    );
    // The rate's counter is the one a reservation was asked for.
    let index = rx
        .try_iter()
        .find(|r| matches!(r.ask, shared::Ask::Rate(shared::RateAsk { pay: false, .. })))
        .unwrap()
        .slot;
    let slot = l.table.at(index).unwrap();
    shared::grant_calls(slot, 2, NOW / S);
    // The rate passes it (a reserved call), the day quota refuses it: the
    // reserved call goes back.
    assert!(!passes(&l, &first, NOW));
    assert_eq!(slot.granted.load(Ordering::Acquire) & USED_MASK, 2);
}

#[test]
fn without_redis_a_shared_rate_is_held_to_this_replicas_share() {
    let (l, rx) = shared_rate(false);
    let c = call("acme", "t");
    assert_eq!((0..6).filter(|_| passes(&l, &c, NOW)).count(), 4);
    let Err(Refused::Exceeded { retry_after_s, .. }) = l.take(&c, NOW) else {
        panic!("over the share");
    };
    assert_eq!(retry_after_s, 1);
    // 5 calls/s: one more after 200 ms.
    assert!(passes(&l, &c, NOW + S / 5));
    assert!(!passes(&l, &c, NOW + S / 5));
    assert_eq!(
        rx.try_iter().count(),
        0,
        "nothing is asked of Redis, nothing owed"
    );
}

#[test]
fn the_keyed_hash_tells_apart_every_length_and_every_last_byte() {
    let seed = (0x1234_5678_9abc_def0, 0x0fed_cba9_8765_4321 | 1);
    let mut seen = std::collections::HashSet::new();
    let text = b"customer-00042-with-a-long-name";
    for n in 0..=text.len() {
        assert!(seen.insert(keyed_hash(seed, &text[..n])), "length {n}");
        // The same length, another last byte, or a zero where there was none.
        let mut other = text[..n].to_vec();
        if let Some(last) = other.last_mut() {
            *last ^= 1;
            assert!(seen.insert(keyed_hash(seed, &other)), "last byte at {n}");
        }
    }
    assert_ne!(keyed_hash(seed, b"a"), keyed_hash(seed, b"a\0"));
}
