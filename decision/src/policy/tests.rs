use super::*;
use simd_json::tape::Tape;
use std::io::Write;
use toolgate_core::jsonrpc::JsonParser;

const POLICIES: &str = r#"
@id("support-lookup")
permit(principal in Toolgate::Group::"support", action == Toolgate::Action::"crm__lookup_customer", resource);

@id("delete-admins-only")
permit(principal, action == Toolgate::Action::"crm__delete_record", resource)
when { context has user && context.user in Toolgate::Group::"admins" };

@id("mail-internal")
permit(principal, action == Toolgate::Action::"mail__send_email", resource)
when { context.args.to like "*@example.com" };

@id("refund-small")
permit(principal, action == Toolgate::Action::"billing__refund", resource)
when { context.args.amount < 500 };

@id("refund-large")
@judge("default")
permit(principal, action == Toolgate::Action::"billing__refund", resource)
when { context.args.amount >= 500 };

@id("no-delete-for-intern")
forbid(principal == Toolgate::Agent::"intern-bot", action == Toolgate::Action::"crm__delete_record", resource);
"#;

fn engine() -> Engine {
    let dir = std::env::temp_dir().join(format!(
        "toolgate-policy-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join("example.cedar");
    if let Ok(mut f) = std::fs::File::create(&file) {
        let _ = f.write_all(POLICIES.as_bytes());
    }
    let bundle = load(&[file]).unwrap();
    let agents = vec![
        ("support-bot".to_owned(), vec!["support".to_owned()]),
        ("intern-bot".to_owned(), vec!["support".to_owned()]),
        ("ops-bot".to_owned(), vec![]),
    ];
    let users = vec![
        ("alice".to_owned(), vec!["admins".to_owned()]),
        ("bob".to_owned(), vec![]),
    ];
    let tools: Vec<(String, String, Vec<String>)> = [
        "crm__lookup_customer",
        "crm__delete_record",
        "mail__send_email",
        "billing__refund",
    ]
    .iter()
    .map(|t| {
        (
            t.to_string(),
            t.split("__").next().unwrap_or("").to_owned(),
            Vec::new(),
        )
    })
    .collect();
    Engine::new(Arc::new(bundle), &agents, &users, &tools)
}

fn decide(e: &Engine, agent: &str, user: Option<&str>, tool: &str, args: &str) -> Verdict {
    let upstream = tool.split("__").next().unwrap_or("");
    match e.precompile(agent, tool, upstream) {
        PairDecision::Fixed(v) => v,
        PairDecision::Evaluate(slice) => {
            let mut p = JsonParser::new();
            let tape: Tape<'_> = p.parse(args.as_bytes()).unwrap();
            e.evaluate(
                &slice,
                &CallFacts {
                    agent,
                    user,
                    groups: None,
                    tool,
                    upstream,
                    customer: agent,
                    args: Some(tape.as_value()),
                    session: None,
                },
            )
        }
    }
}

fn is_allow(v: &Verdict) -> bool {
    matches!(v, Verdict::Allow { .. })
}

#[test]
fn support_agents_look_up_unconditionally_and_it_is_precompiled() {
    let e = engine();
    assert!(matches!(
        e.precompile("support-bot", "crm__lookup_customer", "crm"),
        PairDecision::Fixed(Verdict::Allow { .. })
    ));
    assert!(matches!(
        e.precompile("ops-bot", "crm__lookup_customer", "crm"),
        PairDecision::Fixed(Verdict::Deny {
            reason: Reason::NoPermit,
            ..
        })
    ));
}

#[test]
fn delete_needs_an_admin_user() {
    let e = engine();
    assert!(is_allow(&decide(
        &e,
        "support-bot",
        Some("alice"),
        "crm__delete_record",
        "{}"
    )));
    assert!(!is_allow(&decide(
        &e,
        "support-bot",
        Some("bob"),
        "crm__delete_record",
        "{}"
    )));
    assert!(!is_allow(&decide(
        &e,
        "support-bot",
        None,
        "crm__delete_record",
        "{}"
    )));
    assert!(!is_allow(&decide(
        &e,
        "support-bot",
        Some("mallory"),
        "crm__delete_record",
        "{}"
    )));
}

#[test]
fn forbid_overrides_everything_and_is_precompiled() {
    let e = engine();
    let v = e.precompile("intern-bot", "crm__delete_record", "crm");
    let PairDecision::Fixed(Verdict::Deny { policies, reason }) = v else {
        unreachable!("{v:?}")
    };
    assert_eq!(reason, Reason::ForbiddenByPolicy);
    assert_eq!(&*policies[0], "no-delete-for-intern");
}

#[test]
fn argument_conditions() {
    let e = engine();
    assert!(is_allow(&decide(
        &e,
        "ops-bot",
        None,
        "mail__send_email",
        r#"{"to":"a@example.com"}"#
    )));
    assert!(!is_allow(&decide(
        &e,
        "ops-bot",
        None,
        "mail__send_email",
        r#"{"to":"a@evil.com"}"#
    )));
    // Wrong type: evaluation error, which is a deny.
    let v = decide(&e, "ops-bot", None, "mail__send_email", r#"{"to":7}"#);
    assert!(
        matches!(
            v,
            Verdict::Deny {
                reason: Reason::PolicyError,
                ..
            }
        ),
        "{v:?}"
    );
    // Missing argument: same.
    assert!(!is_allow(&decide(
        &e,
        "ops-bot",
        None,
        "mail__send_email",
        "{}"
    )));
}

#[test]
fn large_refunds_go_to_the_judge() {
    let e = engine();
    assert!(is_allow(&decide(
        &e,
        "ops-bot",
        None,
        "billing__refund",
        r#"{"amount":120}"#
    )));
    let v = decide(&e, "ops-bot", None, "billing__refund", r#"{"amount":900}"#);
    let Verdict::Judge { policies } = v else {
        unreachable!("{v:?}")
    };
    assert_eq!(&*policies[0], "refund-large");
    // A fractional amount has no Cedar form: the condition cannot be evaluated.
    assert!(!is_allow(&decide(
        &e,
        "ops-bot",
        None,
        "billing__refund",
        r#"{"amount":120.5}"#
    )));
    assert!(is_allow(&decide(
        &e,
        "ops-bot",
        None,
        "billing__refund",
        r#"{"amount":120.0}"#
    )));
}

#[test]
fn entity_escapes_in_arguments_stay_plain_records() {
    let e = engine();
    let args = r#"{"to":{"__entity":{"type":"Toolgate::Group","id":"admins"}}}"#;
    assert!(!is_allow(&decide(
        &e,
        "ops-bot",
        None,
        "mail__send_email",
        args
    )));
}

#[test]
fn parse_errors_name_file_and_line() {
    let dir = std::env::temp_dir().join(format!("toolgate-policy-bad-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join("bad.cedar");
    let _ = std::fs::write(
        &file,
        "permit(principal, action, resource);\n\npermit(principal, action resource);\n",
    );
    let errs = load(&[file]).err().unwrap_or_default();
    assert!(!errs.is_empty());
    assert_eq!(errs[0].line, Some(3), "{errs:?}");
}

#[test]
fn validation_catches_an_argument_the_tool_does_not_have() {
    let e = engine();
    let tools = vec![
        (
            "mail__send_email".to_owned(),
            Some(serde_json::json!({"type":"object","properties":{"subject":{"type":"string"}}})),
        ),
        ("crm__lookup_customer".to_owned(), None),
        ("crm__delete_record".to_owned(), None),
        (
            "billing__refund".to_owned(),
            Some(
                serde_json::json!({"type":"object","properties":{"amount":{"type":"integer"}},"required":["amount"]}),
            ),
        ),
    ];
    let errs = e.bundle.validate(schema_json(&tools, &Default::default()));
    assert!(
        errs.iter().any(|x| x.message.contains("mail-internal")),
        "{errs:?}"
    );
    assert!(
        !errs.iter().any(|x| x.message.contains("refund")),
        "{errs:?}"
    );
}

#[test]
fn cache_answers_the_same_call_and_never_caches_judge() {
    let mut c = DecisionCache::new(2);
    let allow = || Verdict::Allow {
        policies: Arc::from([]),
    };
    assert!(is_allow(&c.get_or_insert(&[b"a", b"1"], allow)));
    assert!(is_allow(&c.get_or_insert(&[b"a", b"1"], || unreachable!())));
    // Length-prefixed parts: ("a1","") is not ("a","1").
    let _ = c.get_or_insert(&[b"a1", b""], || Verdict::Deny {
        policies: Arc::from([]),
        reason: Reason::PolicyError,
    });
    assert_eq!((c.hits, c.misses), (1, 2));
    let _ = c.get_or_insert(&[b"j"], || Verdict::Judge {
        policies: Arc::from([]),
    });
    assert_eq!(c.len(), 2);
    let _ = c.get_or_insert(&[b"z"], allow);
    assert_eq!(c.len(), 1, "a full cache is cleared, not grown");
}

#[test]
fn token_groups_replace_the_configured_ones_for_the_call() {
    let e = engine();
    let PairDecision::Evaluate(slice) = e.precompile("support-bot", "crm__delete_record", "crm")
    else {
        unreachable!("delete depends on the user")
    };
    let run = |user: &str, groups: &[&str]| {
        let groups: Vec<Arc<str>> = groups.iter().map(|g| Arc::from(*g)).collect();
        e.evaluate(
            &slice,
            &CallFacts {
                agent: "support-bot",
                user: Some(user),
                groups: Some(&groups),
                tool: "crm__delete_record",
                upstream: "crm",
                customer: "support-bot",
                args: None,
                session: None,
            },
        )
    };
    // bob is no admin in the configuration, but his token says he is
    assert!(is_allow(&run("bob", &["admins"])));
    // an unknown user's token groups count too
    assert!(is_allow(&run("carol", &["admins"])));
    // alice's token does not make her an admin: the token wins
    assert!(!is_allow(&run("alice", &["support"])));
}
