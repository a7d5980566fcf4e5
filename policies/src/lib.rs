//! toolgate-policies: configuration and policy data that ships with toolgate.
//!
//! Today: example configurations under `examples/`, each checked by the same
//! code `toolgate check` runs. Cedar schemas and policy sets join them here.

#![warn(missing_docs)]

/// The example configuration (the tour in the README and `docs/` use it).
pub const EXAMPLE_CONFIG: &str = include_str!("../examples/toolgate.toml");

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    #[test]
    fn readme_policy_examples_pass_their_cases() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let cfg = toolgate_core::config::load(&dir.join("policy-demo.toml")).unwrap();
        let bundle = toolgate_decision::policy::load(&cfg.policy_files).unwrap();
        assert_eq!(bundle.names.len(), 7);
        let snap =
            toolgate_decision::Snapshot::build(&cfg, &[]).with_policies(&cfg, Arc::new(bundle));
        let text = std::fs::read_to_string(dir.join("policy-tests/readme-examples.toml"))
            .unwrap_or_default();
        let cases = toolgate_decision::policy::cases::parse(&text).unwrap();
        assert!(cases.cases.len() >= 10);
        let results = toolgate_decision::policy::cases::run(&snap, &cases.cases);
        let failed: Vec<_> = results.iter().filter(|r| !r.passed()).collect();
        assert!(failed.is_empty(), "{failed:#?}");
    }

    fn sessions_example() -> toolgate_decision::Snapshot {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let cfg = toolgate_core::config::load(&dir.join("sessions.toml")).unwrap();
        let bundle = toolgate_decision::policy::load(&cfg.policy_files).unwrap();
        let errors =
            bundle.validate(toolgate_decision::Snapshot::build(&cfg, &[]).cedar_schema(&cfg));
        assert!(errors.is_empty(), "{errors:?}");
        toolgate_decision::Snapshot::build(&cfg, &[]).with_policies(&cfg, Arc::new(bundle))
    }

    #[test]
    fn session_policy_examples_pass_their_sequences() {
        let snap = sessions_example();
        assert!(snap.sessions_used);
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let text = std::fs::read_to_string(dir.join("policy-tests/sessions.toml")).unwrap();
        let cases = toolgate_decision::policy::cases::parse(&text).unwrap();
        let results = toolgate_decision::policy::cases::run(&snap, &cases.cases);
        let failed: Vec<_> = results.iter().filter(|r| !r.passed()).collect();
        assert!(failed.is_empty(), "{failed:#?}");
    }

    #[test]
    fn at_most_fifty_distinct_customers_an_hour() {
        let snap = sessions_example();
        let case = |n: usize, at: u64, expect: &str| {
            format!(
                "[[case]]\nname = \"read {n}\"\nsession = \"bulk\"\nagent = \"assistant\"\n\
                 tool = \"crm__get_customer\"\nargs = {{ customer_id = \"c-{n}\" }}\n\
                 at_s = {at}\nexpect = \"{expect}\"\n"
            )
        };
        let mut text = String::new();
        for n in 0..50 {
            text.push_str(&case(n, 0, "allow"));
        }
        // Once fifty are read, no more reads this hour, of new customers or old.
        text.push_str(&case(50, 10, "deny"));
        text.push_str(&case(0, 20, "deny"));
        // An hour later the window has slid past them.
        text.push_str(&case(51, 3600, "allow"));
        let cases = toolgate_decision::policy::cases::parse(&text).unwrap();
        let results = toolgate_decision::policy::cases::run(&snap, &cases.cases);
        let failed: Vec<_> = results.iter().filter(|r| !r.passed()).collect();
        assert!(failed.is_empty(), "{failed:#?}");
    }

    #[test]
    fn a_recorded_call_is_re_decided_with_the_groups_its_token_gave() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let cfg = toolgate_core::config::load(&dir.join("policy-demo.toml")).unwrap();
        let bundle = toolgate_decision::policy::load(&cfg.policy_files).unwrap();
        let snap =
            toolgate_decision::Snapshot::build(&cfg, &[]).with_policies(&cfg, Arc::new(bundle));
        let mut rec = serde_json::json!({
            "method": "tools/call", "agent": "support-bot", "user": "bob", "customer": "support-bot",
            "tool": "crm__delete_record", "verdict": "allow", "args_redacted": "{\"record_id\":\"R-1\"}",
            "groups": ["admins"],
        });
        let redecide = |r: &serde_json::Value| {
            toolgate_decision::policy::simulate::redecide(&snap, r)
                .map(|v| v.as_str())
                .unwrap()
        };
        assert_eq!(redecide(&rec), "allow", "bob's token made him an admin");
        rec.as_object_mut().unwrap().remove("groups");
        assert_eq!(
            redecide(&rec),
            "deny",
            "bob is no admin in the configuration"
        );
    }

    #[test]
    fn a_case_expecting_the_wrong_outcome_fails() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let cfg = toolgate_core::config::load(&dir.join("policy-demo.toml")).unwrap();
        let bundle = toolgate_decision::policy::load(&cfg.policy_files).unwrap();
        let snap =
            toolgate_decision::Snapshot::build(&cfg, &[]).with_policies(&cfg, Arc::new(bundle));
        let cases = toolgate_decision::policy::cases::parse(
            "[[case]]\nname = \"x\"\nagent = \"support-bot\"\ntool = \"ops__send_email\"\nargs = { to = \"eve@evil.test\" }\nexpect = \"allow\"\n",
        )
        .unwrap();
        let r = toolgate_decision::policy::cases::run(&snap, &cases.cases);
        assert!(!r[0].passed());
        assert_eq!(r[0].got, "deny");
    }

    #[test]
    fn every_example_config_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") {
                let r = toolgate_core::config::load(&path);
                assert!(
                    r.is_ok(),
                    "{}: {}",
                    path.display(),
                    r.err().map(|e| e.to_string()).unwrap_or_default()
                );
                checked += 1;
            }
        }
        assert!(
            checked >= 1,
            "no example configs found in {}",
            dir.display()
        );
    }

    #[test]
    fn example_attaches_tools_to_both_agents() {
        let cfg = toolgate_core::config::parse(super::EXAMPLE_CONFIG, "example", Path::new("."));
        let cfg = cfg.unwrap();
        assert_eq!(cfg.config.agents.len(), 2);
        assert!(cfg.config.agents.iter().all(|a| !a.tools.is_empty()));
    }

    #[test]
    fn example_shows_every_output_rule_kind() {
        let cfg = toolgate_core::config::parse(super::EXAMPLE_CONFIG, "example", Path::new("."));
        let cfg = cfg.unwrap();
        let r = &cfg.output_rules;
        assert!(r.iter().any(|r| !r.detectors.is_empty()));
        assert!(r
            .iter()
            .any(|r| !r.drop_fields.is_empty() && !r.mask_fields.is_empty()));
        assert!(r.iter().any(|r| !r.patterns.is_empty()));
        assert!(r.iter().any(|r| !r.drop_where.is_empty()));
        assert!(r.iter().any(|r| !r.refuse_when.is_empty()));
        assert!(r.iter().any(|r| !r.agents.is_empty()));
    }
}
