use std::sync::Arc;

use super::*;

const T0: u64 = 1_800_000_000;

fn call(labels: u32, tool: u32) -> Recorded {
    Recorded {
        labels,
        tool,
        distinct: [0; MAX_DISTINCT],
    }
}

#[test]
fn a_session_counts_its_recorded_calls_by_label_and_tool() {
    let t = Arc::new(Sessions::new(16, 1800, 0));
    let k = t.key(&[b"bot", b"alice"]);
    for i in 0..3 {
        let e = t.enter(k, T0 + i);
        let f = e.facts(7);
        assert!(f.known);
        assert_eq!(f.calls, i as u32);
        assert_eq!(f.tool_calls, i as u32);
        e.commit(&call(0b01, 7));
    }
    let e = t.enter(k, T0 + 10);
    let f = e.facts(8);
    assert_eq!(f.tool_calls, 0, "another tool");
    e.commit(&call(0b10, 8));
    let f = t.enter(k, T0 + 11).facts(7);
    assert_eq!((f.calls, f.tool_calls), (4, 3));
    assert_eq!(f.labels, 0b11);
    assert_eq!(f.last_labels, 0b10);
    assert_eq!(&f.label_calls[..2], &[3, 1]);
    assert_eq!(f.age_s, 11);
    assert_eq!((f.calls_last_minute, f.calls_last_hour), (4, 4));
}

#[test]
fn a_refused_call_records_nothing_and_counts_in_flight_only_while_open() {
    let t = Arc::new(Sessions::new(16, 1800, 0));
    let k = t.key(&[b"s"]);
    let open = t.enter(k, T0);
    let other = t.enter(k, T0);
    assert_eq!(other.facts(1).in_flight, 1, "the first call is still open");
    drop(open); // refused
    drop(other);
    let f = t.enter(k, T0).facts(1);
    assert_eq!((f.calls, f.in_flight), (0, 0));
}

#[test]
fn windows_slide_and_an_idle_session_starts_again() {
    let t = Arc::new(Sessions::new(16, 1800, 0));
    let k = t.key(&[b"s"]);
    t.enter(k, T0).commit(&call(1, 1));
    t.enter(k, T0 + 100).commit(&call(1, 1));
    let f = t.enter(k, T0 + 130).facts(1);
    assert_eq!((f.calls_last_minute, f.calls_last_hour, f.calls), (1, 2, 2));
    assert_eq!(f.label_calls_last_minute[0], 1);
    let f = t.enter(k, T0 + 130 + 1801).facts(1);
    assert_eq!(
        (f.calls, f.labels, f.age_s),
        (0, 0, 0),
        "idle past the timeout"
    );
    assert!(f.known);
}

#[test]
fn a_full_table_makes_new_sessions_unknown_and_never_evicts_a_live_one() {
    let t = Arc::new(Sessions::new(2, 1800, 0));
    let a = t.key(&[b"a"]);
    t.enter(a, T0).commit(&call(1, 1));
    let mut unknown = 0;
    for i in 0..50u32 {
        let k = t.key(&[&i.to_le_bytes()]);
        let e = t.enter(k, T0);
        if !e.facts(1).known {
            unknown += 1;
        }
        e.commit(&call(0, 1));
    }
    assert!(unknown >= 48, "only two slots: {unknown}");
    let f = t.enter(a, T0 + 1).facts(1);
    assert!(f.known);
    assert_eq!(f.calls, 1, "the live session kept its state");
    // Once idle, its slot serves a new session.
    let n = t.key(&[b"new"]);
    assert!(t.enter(n, T0 + 5000).facts(1).known);
}

#[test]
fn distinct_values_are_counted_over_the_last_hour_and_saturate() {
    let t = Arc::new(Sessions::new(4, 7200, 1));
    let k = t.key(&[b"s"]);
    let with = |v: u32| Recorded {
        labels: 0,
        tool: 1,
        distinct: [v, 0, 0, 0],
    };
    for v in [5, 6, 5, 7] {
        t.enter(k, T0).commit(&with(v));
    }
    assert_eq!(t.enter(k, T0).facts(1).distinct_last_hour[0], 3);
    assert_eq!(t.enter(k, T0 + 3600).facts(1).distinct_last_hour[0], 0);
    for v in 0..(DISTINCT as u32 + 20) {
        t.enter(k, T0 + 4000).commit(&with(v + 100));
    }
    assert_eq!(
        t.enter(k, T0 + 4000).facts(1).distinct_last_hour[0],
        DISTINCT as u32
    );
}

#[test]
fn sessions_are_one_across_threads() {
    let t = Arc::new(Sessions::new(64, 1800, 0));
    let k = t.key(&[b"shared"]);
    std::thread::scope(|s| {
        for _ in 0..2 {
            let t = Arc::clone(&t);
            s.spawn(move || {
                for _ in 0..500 {
                    t.enter(k, T0).commit(&call(1, 1));
                }
            });
        }
    });
    let f = t.enter(k, T0).facts(1);
    assert_eq!(
        (f.calls, f.label_calls[0], f.tool_calls),
        (1000, 1000, 1000)
    );
}

#[test]
fn the_view_writes_the_record_and_the_cedar_context() {
    let mut f = SessionFacts::unknown(0xab);
    f.known = true;
    f.calls = 2;
    f.labels = 0b10;
    f.label_calls[1] = 2;
    f.distinct_last_hour[0] = 1;
    let labels: Vec<Arc<str>> = vec![Arc::from("money"), Arc::from("reads_pii")];
    let distinct: Vec<Arc<str>> = vec![Arc::from("customer_id")];
    let v = SessionView {
        facts: &f,
        labels: &labels,
        distinct: &distinct,
    };
    let mut out = Vec::new();
    v.write_json(&mut out);
    let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(j["id"], "00000000000000ab");
    assert_eq!(j["labels"], serde_json::json!(["reads_pii"]));
    assert_eq!(j["label_calls"], serde_json::json!({"reads_pii": 2}));
    assert_eq!(j["distinct_last_hour"]["customer_id"], 1);
    assert!(v.to_cedar(u16::MAX, u32::MAX).is_ok());
    let read = fields_read(
        r#"forbid(principal, action, resource) when { context.session.label_calls.money > 1 && context.session["known"] };"#,
    );
    assert_eq!(read, 1 << 10 | 1 << 1, "label_calls and known, not calls");
    assert_eq!(
        fields_read("permit(principal, action, resource) when { context.args.calls > 1 };"),
        0
    );
}

#[test]
fn the_cache_key_holds_what_the_slice_reads_and_nothing_else() {
    let fields = fields_read(
        r#"forbid(principal, action, resource) when { context.session.label_calls.money >= 5 || context.session.in_flight > 0 };"#,
    );
    let key = |f: &SessionFacts| {
        let mut out = Vec::new();
        f.cache_key(fields, 0b1, &mut out);
        out
    };
    let mut a = SessionFacts::unknown(1);
    a.label_calls[0] = 3;
    let mut b = a.clone();
    b.calls = 99; // not read
    b.label_calls[1] = 7; // a label the slice does not name
    b.id = 2; // not read
    assert_eq!(key(&a), key(&b));
    b.label_calls[0] = 4;
    assert_ne!(key(&a), key(&b));
    let mut c = a.clone();
    c.in_flight = 1;
    assert_ne!(key(&a), key(&c));
}

#[test]
fn shared_state_as_lua_writes_it_is_read_into_the_table() {
    // cjson writes empty lists as `{}`.
    let json =
        br#"{"started":1799999000,"seen":1800000000,"calls":3,"labels":{"zz_money":2,"zz_pii":1},
        "last":{},"tools":{"billing__refund":2,"crm__get":1},
        "ring":[[1799999990,["zz_money"]],[1799999995,{}],[1800000000,["zz_money","zz_pii"]]],
        "distinct":{"customer_id":{"7":1799999990,"9":1796000000}}}"#;
    let state = shared::SharedState::parse(json).unwrap();
    assert_eq!(state.calls, 3);
    assert!(state.last.is_empty());
    assert_eq!(state.ring.len(), 3);
    let t = Arc::new(Sessions::new(16, 1800, 1).shared());
    let k = t.key(&[b"s"]);
    assert!(t.needs_state(k, T0));
    assert!(
        !t.enter(k, T0).facts(1).known,
        "shared and not read in: unknown"
    );
    let distinct: Vec<Arc<str>> = vec![Arc::from("customer_id")];
    assert!(t.install(k, T0, &state, &distinct));
    assert!(!t.needs_state(k, T0));
    let money = labels::bit("zz_money").unwrap();
    let pii = labels::bit("zz_pii").unwrap();
    let f = t.enter(k, T0).facts(t.value_hash(b"billing__refund"));
    assert!(f.known);
    assert_eq!((f.calls, f.tool_calls, f.age_s), (3, 2, 1000));
    assert_eq!(f.labels, money | pii);
    assert_eq!(f.last_labels, 0);
    assert_eq!(f.label_calls[money.trailing_zeros() as usize], 2);
    assert_eq!(f.calls_last_minute, 3);
    assert_eq!(
        f.distinct_last_hour[0], 1,
        "the value seen 4000 s ago is out of the hour"
    );
    t.mark_stale(k);
    assert!(t.needs_state(k, T0));
    assert!(shared::SharedState::parse(b"{\"calls\":1}").is_err());
    assert_eq!(shared::shared_key(&[b"a"]), shared::shared_key(&[b"a"]));
    assert_ne!(
        shared::shared_key(&[b"a", b"b"]),
        shared::shared_key(&[b"ab"])
    );
}
