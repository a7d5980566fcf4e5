use std::path::{Path, PathBuf};

use crate::output::MaskStyle;

use super::*;

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8080"
shards = 2

[[upstreams]]
name = "crm"
url = "http://127.0.0.1:9101/mcp"

[[agents]]
id = "support-bot"
api_key_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
tools = ["crm__lookup_customer"]

[audit]
dir = "audit"
"#;

#[test]
fn issue_contract_config_parses() {
    let v = parse(GOOD, "t.toml", Path::new("/etc/toolgate")).map_err(|e| e.to_string());
    let v = v.unwrap();
    assert_eq!(v.listen.port(), 8080);
    assert_eq!(v.audit_dir, Path::new("/etc/toolgate/audit"));
    assert_eq!(v.upstreams[0].entry.timeout_ms, 30_000);
}

#[test]
fn unknown_key_is_reported_with_its_line() {
    let text = GOOD.replace("shards = 2", "shards = 2\nshard = 3");
    let e = parse(&text, "t.toml", Path::new("."))
        .err()
        .map(|e| e.errors);
    let e = e.unwrap_or_default();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, Some(5));
    assert!(e[0].message.contains("shard"), "{}", e[0].message);
}

#[test]
fn type_error_is_reported_with_its_line() {
    let text = GOOD.replace("shards = 2", "shards = \"two\"");
    let e = parse(&text, "t.toml", Path::new("."))
        .err()
        .map(|e| e.errors)
        .unwrap_or_default();
    assert_eq!(e[0].line, Some(4));
}

#[test]
fn tool_of_unknown_upstream_is_an_error_with_its_line() {
    let text = GOOD.replace("crm__lookup_customer", "mail__send");
    let e = parse(&text, "t.toml", Path::new("."))
        .err()
        .map(|e| e.errors)
        .unwrap_or_default();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, Some(13));
    assert!(e[0].message.contains("`mail__send`"));
}

#[test]
fn prompts_and_resources_of_unknown_upstreams_are_errors_with_their_lines() {
    let text = GOOD.replace(
        "tools = [\"crm__lookup_customer\"]",
        "tools = [\"crm__lookup_customer\"]\nprompts = [\"crm__*\", \"mail__greet\"]\n\
         resources = [\"toolgate://crm/file:///*\", \"toolgate://mail/x:/y\", \"file:///etc\"]",
    );
    let e = parse(&text, "t.toml", Path::new("."))
        .err()
        .map(|e| e.errors)
        .unwrap_or_default();
    let got: Vec<(Option<usize>, bool)> = e
        .iter()
        .map(|e| (e.line, e.message.contains("names no configured upstream")))
        .collect();
    assert_eq!(
        got,
        [(Some(14), true), (Some(15), true), (Some(15), true)],
        "{e:?}"
    );
    assert!(e[0].message.contains("prompt `mail__greet`"));
    assert!(e[1].message.contains("resource `toolgate://mail/x:/y`"));
    assert!(e[2].message.contains("resource `file:///etc`"));
}

#[test]
fn bad_hash_and_bad_url_are_both_reported() {
    let text = GOOD
        .replace("9f86d0", "zz")
        .replace("http://127.0.0.1:9101/mcp", "ftp://x");
    let e = parse(&text, "t.toml", Path::new("."))
        .err()
        .map(|e| e.errors)
        .unwrap_or_default();
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(e[0].line, Some(8));
    assert_eq!(e[1].line, Some(12));
}

const RULES: &str = r#"
[[output_rules]]
name = "pii"
tools = ["crm__*"]
agents = ["support-bot"]
drop_fields = ["$.customers[*].ssn"]
mask_fields = ["$.card"]
detectors = ["card", "email", "secrets"]
patterns = [{ name = "emp", regex = 'EMP-[0-9]{6}' }]
style = "last4"
drop_where = ['tier == "internal"']
refuse_when = ["detected(private_key)", "detected(emp)"]
"#;

#[test]
fn output_rules_parse_into_their_vocabulary() {
    let text = format!("{GOOD}{RULES}");
    let v = parse(&text, "t.toml", Path::new(".")).map_err(|e| e.to_string());
    let v = v.unwrap();
    assert_eq!(v.config.output.max_result_bytes, 4 * 1024 * 1024);
    let r = &v.output_rules[0];
    assert_eq!(r.detectors.len(), 7);
    assert_eq!(r.style, MaskStyle::Last4);
    assert_eq!(r.drop_fields[0].text, "$.customers[*].ssn");
    assert_eq!(r.refuse_when.len(), 2);
}

#[test]
fn bad_output_rules_are_reported_with_their_lines() {
    let text = format!("{GOOD}{RULES}")
        .replace("\"secrets\"]", "\"ssn\"]")
        .replace("EMP-[0-9]{6}", "EMP-[0-9")
        .replace("$.customers[*].ssn", "$.customers[x]")
        .replace("\"last4\"", "\"stars\"")
        .replace("detected(emp)", "detected(nope)")
        .replace("agents = [\"support-bot\"]", "agents = [\"ghost\"]");
    let e = parse(&text, "t.toml", Path::new("."))
        .err()
        .map(|e| e.errors)
        .unwrap_or_default();
    let lines: Vec<_> = e.iter().map(|e| e.line).collect();
    assert_eq!(
        lines,
        vec![Some(21), Some(22), Some(24), Some(25), Some(26), Some(28)],
        "{e:?}"
    );
    assert!(e[0].message.contains("agent `ghost`"), "{}", e[0].message);
    assert!(
        e[2].message.contains("unknown detector `ssn`"),
        "{}",
        e[2].message
    );
    assert!(
        e[3].message.contains("not a valid regex"),
        "{}",
        e[3].message
    );
    assert!(e[5].message.contains("detected(nope)"), "{}", e[5].message);
}

#[test]
fn audit_sinks_parse_with_defaults() {
    let text = format!(
            "{GOOD}segment_bytes = 4096\ndurability = \"record\"\n\n[[audit.sinks]]\nname = \"siem\"\nkind = \"syslog\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:5514\"\n"
        );
    let v = parse(&text, "t.toml", Path::new(".")).map_err(|e| e.to_string());
    let v = v.unwrap();
    assert_eq!(v.config.audit.durability, Durability::Record);
    assert_eq!(v.config.audit.segment_bytes, 4096);
    assert_eq!(v.config.audit.arguments, AuditArguments::Redacted);
    assert_eq!(v.config.audit.segment_max_age_s, None);
    assert_eq!(v.config.audit.writer_priority, WriterPriority::Background);
    let s = &v.config.audit.sinks[0];
    assert_eq!((s.facility, s.batch_records), (13, 256));
    assert_eq!(
        s.transport.as_ref().map(|t| *t.get_ref()),
        Some(SinkTransport::Tcp)
    );
    assert_eq!(v.sink_targets[0].address.map(|a| a.port()), Some(5514));
}

#[test]
fn an_upstream_at_a_metadata_address_is_refused_with_its_line() {
    let text = GOOD.replace(
        "http://127.0.0.1:9101/mcp",
        "http://169.254.169.254/latest/meta-data/",
    );
    let e = parse(&text, "t.toml", Path::new("."))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("instance-metadata"), "{e}");
    assert!(e.contains("t.toml:"), "{e}");
}

#[test]
fn audit_writer_defaults_to_shards_and_parses_thread() {
    let v = parse(GOOD, "t.toml", Path::new(".")).map_err(|e| e.to_string());
    assert_eq!(
        v.map(|v| v.config.audit.writer).ok(),
        Some(AuditWriterMode::Shards)
    );
    let v = parse(
        &format!("{GOOD}writer = \"thread\"\n"),
        "t.toml",
        Path::new("."),
    )
    .map_err(|e| e.to_string());
    assert_eq!(
        v.map(|v| v.config.audit.writer).ok(),
        Some(AuditWriterMode::Thread)
    );
    let e = parse(
        &format!("{GOOD}writer = \"both\"\n"),
        "t.toml",
        Path::new("."),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("both"), "{e}");
}

#[test]
fn writer_priority_parses_and_unknown_values_are_refused() {
    let v = parse(
        &format!("{GOOD}writer_priority = \"normal\"\n"),
        "t.toml",
        Path::new("."),
    )
    .map_err(|e| e.to_string());
    assert_eq!(
        v.map(|v| v.config.audit.writer_priority).ok(),
        Some(WriterPriority::Normal)
    );
    let e = parse(
        &format!("{GOOD}writer_priority = \"realtime\"\n"),
        "t.toml",
        Path::new("."),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("realtime"), "{e}");
}

#[test]
fn segment_max_age_parses_and_zero_is_refused() {
    let v = parse(
        &format!("{GOOD}segment_max_age_s = 3600\n"),
        "t.toml",
        Path::new("."),
    );
    let v = v.map_err(|e| e.to_string());
    assert_eq!(
        v.map(|v| v.config.audit.segment_max_age_s).ok(),
        Some(Some(3600))
    );
    let e = parse(
        &format!("{GOOD}segment_max_age_s = 0\n"),
        "t.toml",
        Path::new("."),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        e.contains("`audit.segment_max_age_s` must be above 0"),
        "{e}"
    );
}

#[test]
fn audit_arguments_modes_parse_and_raw_is_refused() {
    for (text, want) in [
        ("digest", AuditArguments::Digest),
        ("omit", AuditArguments::Omit),
        ("redacted", AuditArguments::Redacted),
    ] {
        let v = parse(
            &format!("{GOOD}arguments = \"{text}\"\n"),
            "t.toml",
            Path::new("."),
        );
        let v = v.map_err(|e| e.to_string());
        assert_eq!(v.map(|v| v.config.audit.arguments).ok(), Some(want));
    }
    let e = parse(
        &format!("{GOOD}arguments = \"raw\"\n"),
        "t.toml",
        Path::new("."),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("`raw`") && e.contains("redacted"), "{e}");
}

#[test]
fn bad_sink_address_and_duplicate_name_are_reported_with_lines() {
    let sink = "\n[[audit.sinks]]\nname = \"s\"\nkind = \"syslog\"\ntransport = \"udp\"\naddress = \"nowhere\"\n";
    let text = format!("{GOOD}{sink}{}", sink.replace("nowhere", "127.0.0.1:1"));
    let e = parse(&text, "t.toml", Path::new("."))
        .err()
        .map(|e| e.errors)
        .unwrap_or_default();
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(e[0].line, Some(22));
    assert!(e[0].message.contains("`nowhere`"));
    assert!(e[1].message.contains("more than once"));
}

#[test]
fn soar_sinks_parse_and_their_rules_are_checked() {
    let good = format!(
            "{GOOD}\n[[audit.sinks]]\nname = \"soar\"\nkind = \"soar\"\nurl = \"http://127.0.0.1:8080/hook\"\nmax_keys = 50\n\n[[audit.sinks.rules]]\nname = \"burst\"\nkind = \"deny_rate\"\nthreshold = 5\nwindow_s = 60\nagents = [\"billing-*\"]\n\n[[audit.sinks.rules]]\nname = \"judged\"\nkind = \"judge\"\njudge_outcomes = [\"deny\"]\ncooldown_s = 30\n"
        );
    let v = parse(&good, "t.toml", Path::new(".")).map_err(|e| e.to_string());
    let v = v.unwrap();
    let s = &v.config.audit.sinks[0];
    assert_eq!((s.kind, s.max_keys, s.rules.len()), (SinkKind::Soar, 50, 2));
    assert_eq!(s.rules[0].kind, SoarRuleKind::DenyRate);
    assert_eq!(s.rules[1].cooldown_s, Some(30));
    let bad = good
        .replace("threshold = 5\n", "")
        .replace(
            "judge_outcomes = [\"deny\"]",
            "judge_outcomes = [\"maybe\"]",
        )
        .replace("name = \"judged\"", "name = \"burst\"");
    let e = parse(&bad, "t.toml", Path::new("."))
        .err()
        .map(|e| e.errors)
        .unwrap_or_default();
    let msgs: Vec<&str> = e.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(e.len(), 3, "{msgs:?}");
    assert!(msgs[0].contains("needs `threshold` and `window_s`"));
    assert!(msgs[1].contains("used more than once"));
    assert!(msgs[2].contains("judge outcome `maybe`"));
    assert!(e.iter().all(|e| e.line.is_some()));
    let none = format!(
            "{GOOD}\n[[audit.sinks]]\nname = \"soar\"\nkind = \"soar\"\nurl = \"http://127.0.0.1:8080/hook\"\n"
        );
    let e = parse(&none, "t.toml", Path::new("."))
        .err()
        .map(|e| e.to_string());
    assert!(e.is_some_and(|e| e.contains("at least one `[[audit.sinks.rules]]`")));
}

#[test]
fn http_sinks_parse_and_are_checked() {
    let text = format!(
            "{GOOD}\n[[audit.sinks]]\nname = \"hec\"\nkind = \"splunk_hec\"\nurl = \"https://splunk.example/services/collector/event\"\ngzip = true\n[audit.sinks.token]\nenv = \"HEC_TOKEN\"\n\n[[audit.sinks]]\nname = \"es\"\nkind = \"elasticsearch\"\nurl = \"http://127.0.0.1:9200\"\nformat = \"toolgate\"\n"
        );
    let v = parse(&text, "t.toml", Path::new("/etc/tg")).map_err(|e| e.to_string());
    let v = v.unwrap();
    let hec = &v.sink_targets[0];
    let url = hec.url.clone().unwrap();
    assert!(url.https);
    assert_eq!(
        (url.url.port, url.url.path.as_str()),
        (443, "/services/collector/event")
    );
    assert_eq!(hec.server_name, "splunk.example");
    assert_eq!(
        hec.token,
        Some(crate::secret::SecretSource::Env("HEC_TOKEN".into()))
    );
    assert_eq!(v.config.audit.sinks[1].format, SinkFormat::Toolgate);
    assert_eq!(
        v.sink_targets[1].url.as_ref().map(|u| u.url.port),
        Some(9200)
    );

    let bad = format!(
            "{GOOD}\n[[audit.sinks]]\nname = \"hec\"\nkind = \"splunk_hec\"\nurl = \"ftp://x\"\naddress = \"127.0.0.1:1\"\n"
        );
    let e = parse(&bad, "t.toml", Path::new("."))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("`address` is for syslog sinks"), "{e}");
    assert!(
        e.contains("`ftp://x` is not an `http[s]://host:port/path` URL"),
        "{e}"
    );
    assert!(e.contains("`splunk_hec` needs a `token`"), "{e}");
    let bad = format!(
            "{GOOD}\n[[audit.sinks]]\nname = \"s\"\nkind = \"syslog\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:1\"\nca_file = \"ca.pem\"\n"
        );
    let e = parse(&bad, "t.toml", Path::new("."))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("need `transport = \"tls\"`"), "{e}");
}

#[test]
fn unknown_sink_transport_is_an_error() {
    let text = format!("{GOOD}\n[[audit.sinks]]\nname = \"s\"\nkind = \"syslog\"\ntransport = \"carrier-pigeon\"\naddress = \"127.0.0.1:1\"\n");
    assert!(parse(&text, "t.toml", Path::new(".")).is_err());
}

#[test]
fn two_empty_prefixes_are_refused() {
    let text = r#"
[[upstreams]]
name = "a"
url = "http://127.0.0.1:1/mcp"
prefix = ""
[[upstreams]]
name = "b"
url = "http://127.0.0.1:2/mcp"
prefix = ""
"#;
    let e = parse(text, "t.toml", Path::new("."))
        .err()
        .map(|e| e.errors)
        .unwrap_or_default();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, Some(9));
}

fn errors_of(text: &str) -> Vec<ConfigError> {
    parse(text, "t.toml", Path::new("/nonexistent"))
        .err()
        .map(|e| e.errors)
        .unwrap_or_default()
}

#[test]
fn missing_jwks_file_is_reported_with_its_line() {
    let text = "[auth.jwt]\nissuer = \"https://idp\"\naudience = \"https://gate\"\njwks_file = \"jwks.json\"\n";
    let e = errors_of(text);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, Some(4));
    assert!(e[0]
        .message
        .starts_with("cannot read the JWKS file `jwks.json`"));
}

#[test]
fn applies_to_takes_results_and_arguments() {
    let rule = "[[upstreams]]\nname = \"crm\"\nurl = \"http://127.0.0.1:1/mcp\"\n[[output_rules]]\nname = \"r\"\ntools = [\"crm__*\"]\ndetectors = [\"card\"]\n";
    let e = errors_of(&format!("{rule}applies_to = [\"requests\"]\n"));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, Some(8));
    assert!(e[0].message.contains("`applies_to`"));
    let v = parse(
        &format!("{rule}applies_to = [\"arguments\"]\n"),
        "t",
        Path::new("."),
    )
    .unwrap();
    assert!(v.output_rules[0].arguments && !v.output_rules[0].results);
    let v = parse(rule, "t", Path::new(".")).unwrap();
    assert!(!v.output_rules[0].arguments && v.output_rules[0].results);
}

#[test]
fn jwks_needs_exactly_one_source() {
    let head = "[auth.jwt]\nissuer = \"https://idp\"\naudience = \"https://gate\"\n";
    let e = errors_of(head);
    assert!(e[0]
        .message
        .contains("exactly one of `jwks_file` and `jwks_url`"));
    let e = errors_of(&format!(
        "{head}jwks_file = \"j.json\"\njwks_url = \"https://idp/jwks\"\n"
    ));
    assert!(e[0]
        .message
        .contains("exactly one of `jwks_file` and `jwks_url`"));
    let e = errors_of(&format!(
        "{head}jwks_url = \"https://idp/jwks\"\njwks_ca_file = \"nope.pem\"\n"
    ));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, Some(5));
    assert!(e[0].message.contains("nope.pem"));
}

#[test]
fn credential_needs_exactly_one_source_and_a_free_header() {
    let up =
        "[[upstreams]]\nname = \"crm\"\nurl = \"http://127.0.0.1:1/mcp\"\n[upstreams.credential]\n";
    let e = errors_of(&format!("{up}env = \"A\"\nfile = \"b\"\n"));
    assert_eq!(e.len(), 1);
    assert!(e[0]
        .message
        .contains("exactly one of `env`, `file`, `command` and `oauth`"));
    let e = errors_of(&format!("{up}header = \"Host\"\nenv = \"A\"\n"));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, Some(5));
    assert!(e[0].message.contains("`Host` is one toolgate sets itself"));
    assert!(errors_of(&format!("{up}command = []\n"))[0]
        .message
        .contains("must name a program"));
}

#[test]
fn admin_listener_must_be_loopback_and_have_a_credential() {
    let h = "ab".repeat(32);
    let e = errors_of("[admin]\nlisten = \"0.0.0.0:9091\"\n[[admin.tokens]]\nname = \"ops\"\ntoken_sha256 = \"HASH\"\n".replace("HASH", &h).as_str());
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, Some(2));
    assert!(e[0]
        .message
        .contains("is not a loopback address: that needs `[admin.tls]`"));
    let e = errors_of("[admin]\nlisten = \"127.0.0.1:9091\"\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].message.contains("no `[[admin.tokens]]`"));
    let ok = parse(
            &format!("[admin]\nlisten = \"[::1]:9091\"\n[[admin.tokens]]\nname = \"ops\"\ntoken_sha256 = \"{h}\"\n"),
            "t.toml",
            Path::new("/etc/tg"),
        )
        .unwrap();
    assert_eq!(ok.admin_listen.map(|a| a.port()), Some(9091));
    assert_eq!(ok.admin_state_file, Path::new("/etc/tg/state/control.redb"));
    assert_eq!(ok.admin_tls, None);
}

#[test]
fn non_loopback_admin_listener_needs_tls_and_a_credential() {
    let dir = std::env::temp_dir().join(format!("toolgate-admin-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["admin.pem", "admin.key", "ca.pem"] {
        std::fs::write(dir.join(f), "x").unwrap();
    }
    let h = "ab".repeat(32);
    let tls = "[admin.tls]\ncert_file = \"admin.pem\"\nkey_file = \"admin.key\"\n";
    let tokens = format!("[[admin.tokens]]\nname = \"ops\"\ntoken_sha256 = \"{h}\"\n");
    let check = |text: &str| parse(text, "t.toml", &dir);
    // TLS and a token: a non-loopback address is allowed.
    let ok = check(&format!("[admin]\nlisten = \"0.0.0.0:9091\"\n{tls}client_ca_file = \"ca.pem\"\nmin_version = \"1.3\"\n{tokens}"))
            .unwrap();
    let files = ok.admin_tls.unwrap();
    assert_eq!(files.cert, dir.join("admin.pem"));
    assert_eq!(files.client_ca, Some(dir.join("ca.pem")));
    assert!(files.tls13_only);
    assert_eq!(ok.tls, None, "`[server.tls]` is separate");
    // TLS without a token: refused, naming the missing credential.
    let e = check(&format!("[admin]\nlisten = \"0.0.0.0:9091\"\n{tls}"))
        .err()
        .map(|e| e.errors)
        .unwrap_or_default();
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].message.contains("no `[[admin.tokens]]`"));
    // A token without TLS: refused, naming `[admin.tls]`.
    let e = check(&format!("[admin]\nlisten = \"10.0.0.5:9091\"\n{tokens}"))
        .err()
        .map(|e| e.errors)
        .unwrap_or_default();
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].message.contains(
        "`admin.listen = \"10.0.0.5:9091\"` is not a loopback address: that needs `[admin.tls]`"
    ));
    // Neither: both are named.
    let e = check("[admin]\nlisten = \"0.0.0.0:9091\"\n")
        .err()
        .map(|e| e.errors)
        .unwrap_or_default();
    assert_eq!(e.len(), 2, "{e:?}");
    // Missing files and bad versions are named; TLS without a listener is refused.
    let e = check(&format!("[admin]\nlisten = \"127.0.0.1:9091\"\n[admin.tls]\ncert_file = \"nope.pem\"\nkey_file = \"admin.key\"\nmin_version = \"1.1\"\n{tokens}"))
            .err()
            .map(|e| e.errors)
            .unwrap_or_default();
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e.iter().any(|e| e.message.contains("nope.pem")));
    assert!(e.iter().any(|e| e.message.contains("`min_version`")));
    let e = check(&format!("[admin]\n{tls}"))
        .err()
        .map(|e| e.errors)
        .unwrap_or_default();
    assert!(
        e.iter().any(|e| e
            .message
            .contains("`[admin.tls]` is set but `admin.listen` is not")),
        "{e:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn postgres_backend_needs_a_url_without_password() {
    let h = "ab".repeat(32);
    let admin = |extra: &str| {
        format!("[admin]\nlisten = \"127.0.0.1:9091\"\n{extra}\n[[admin.tokens]]\nname = \"ops\"\ntoken_sha256 = \"{h}\"\n")
    };
    let e = errors_of(&admin("backend = \"postgres\""));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, Some(3));
    assert!(e[0].message.contains("needs `admin.postgres_url`"));
    for url in [
        "postgres://tg:hunter2@db:5432/tg",
        "postgresql://tg@db/tg?password=hunter2",
    ] {
        let e = errors_of(&admin(&format!(
            "backend = \"postgres\"\npostgres_url = \"{url}\""
        )));
        assert_eq!(e.len(), 1, "{url}");
        assert!(e[0].message.contains("must not hold a password"), "{url}");
    }
    let e = errors_of(&admin(
        "backend = \"postgres\"\npostgres_url = \"mysql://db\"\npoll_interval_ms = 5000",
    ));
    assert_eq!(e.len(), 2);
    let e = errors_of(&admin("postgres_url = \"postgres://tg@db/tg\""));
    assert!(e[0].message.contains("`admin.backend` is not"));
    let e = errors_of("[admin]\nbackend = \"postgres\"\npostgres_url = \"postgres://tg@db/tg\"\n");
    assert!(e[0].message.contains("needs `admin.listen`"));
    let ok = parse(
            &admin("backend = \"postgres\"\npostgres_url = \"postgres://tg@db:5432/tg\"\n[admin.postgres_password]\nfile = \"pg.pw\""),
            "t.toml",
            Path::new("/etc/tg"),
        )
        .unwrap();
    assert_eq!(*ok.config.admin.backend.get_ref(), StateBackend::Postgres);
    assert_eq!(
        ok.admin_postgres_password,
        Some(crate::secret::SecretSource::File(PathBuf::from(
            "/etc/tg/pg.pw"
        )))
    );
    assert_eq!(*ok.config.admin.poll_interval_ms.get_ref(), 100);
}

#[test]
fn openapi_upstreams_need_a_readable_document_and_an_endpoint() {
    let dir = std::env::temp_dir().join(format!("toolgate-openapi-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("with-server.json"),
        r#"{"openapi":"3.1.0","servers":[{"url":"http://127.0.0.1:9301/api"}],"paths":{}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("no-server.json"),
        r#"{"openapi":"3.1.0","paths":{}}"#,
    )
    .unwrap();
    let cfg = |upstream: &str| {
        format!(
            "[[upstreams]]\nname = \"billing\"\n{upstream}\n\n[[agents]]\nid = \"a\"\n\
             api_key_sha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\ntools = []\n"
        )
    };
    let ok = parse(
        &cfg("kind = \"openapi\"\nspec = \"with-server.json\""),
        "t",
        &dir,
    )
    .unwrap();
    let u = &ok.upstreams[0];
    assert_eq!((u.url.port, u.url.path.as_str()), (9301, "/api"));
    assert_eq!(u.spec, Some(SpecSource::File(dir.join("with-server.json"))));
    let based =
        cfg("kind = \"openapi\"\nspec = \"no-server.json\"\nbase_url = \"http://127.0.0.1:9400\"");
    assert_eq!(
        parse(&based, "t", &dir).unwrap().upstreams[0].url.port,
        9400
    );
    std::fs::write(
        dir.join("with-server.yaml"),
        "openapi: 3.0.3\nservers:\n  - url: http://127.0.0.1:9302/v2\npaths: {}\n",
    )
    .unwrap();
    let yaml = parse(
        &cfg("kind = \"openapi\"\nspec = \"with-server.yaml\""),
        "t",
        &dir,
    )
    .unwrap();
    assert_eq!(
        (
            yaml.upstreams[0].url.port,
            yaml.upstreams[0].url.path.as_str()
        ),
        (9302, "/v2")
    );
    // A document fetched from a URL is the API's own: its origin is the
    // default base URL, and nothing is fetched while checking.
    let fetched = parse(
        &cfg("kind = \"openapi\"\nspec = \"https://api.example.com:8443/openapi.json\""),
        "t",
        &dir,
    )
    .unwrap();
    let u = &fetched.upstreams[0];
    assert_eq!(
        (u.url.authority.as_str(), u.url.tls, u.url.path.as_str()),
        ("api.example.com:8443", true, "/")
    );
    assert!(matches!(&u.spec, Some(SpecSource::Url(s)) if s.path == "/openapi.json"));
    for (upstream, says) in [
        (
            "kind = \"openapi\"\nspec = \"no-server.json\"",
            "names no server",
        ),
        (
            "kind = \"openapi\"\nspec = \"missing.json\"",
            "cannot read `spec`",
        ),
        ("kind = \"openapi\"", "needs `spec`"),
        (
            "kind = \"openapi\"\nspec = \"https://api.example.com/openapi.json?v=2\"",
            "no query",
        ),
        (
            "kind = \"openapi\"\nspec = \"with-server.json\"\nurl = \"http://127.0.0.1:1/mcp\"",
            "not `url`",
        ),
        (
            "url = \"http://127.0.0.1:1/mcp\"\nspec = \"with-server.json\"",
            "`spec` is for",
        ),
    ] {
        let e = parse(&cfg(upstream), "t", &dir).err().unwrap().to_string();
        assert!(e.contains(says), "{upstream}: {e}");
    }
}

#[test]
fn rest_routes_must_be_templates_one_request_can_take_only_once() {
    let cfg = |routes: &str| {
        format!(
            "[[upstreams]]\nname = \"crm\"\nurl = \"http://127.0.0.1:9101/mcp\"\n{routes}\n\n[[agents]]\nid = \"a\"\n\
             api_key_sha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\ntools = []\n"
        )
    };
    let route = |m: &str, p: &str, t: &str| {
        format!("[[upstreams.routes]]\nmethod = \"{m}\"\npath = \"{p}\"\ntool = \"{t}\"\n")
    };
    let ok =
        parse(
            &cfg(&(route("GET", "/customers/{id}", "lookup")
                + &route("GET", "/customers/vip", "vips"))),
            "t",
            Path::new("/"),
        )
        .unwrap();
    assert_eq!(ok.upstreams[0].entry.routes.len(), 2);
    for (routes, says) in [
        (route("FETCH", "/a", "t"), "method must be"),
        (route("GET", "a", "t"), "must start with `/`"),
        (route("GET", "/a//b", "t"), "empty"),
        (route("GET", "/a/{x}{y}", "t"), "one `{name}` per segment"),
        (route("GET", "/a/{x}/{x}", "t"), "appears twice"),
        (route("GET", "/a/{x", "t"), "unbalanced"),
        (route("GET", "/a", ""), "`tool` is empty"),
        (
            route("GET", "/a/{x}", "t") + &route("GET", "/a/{y}", "u"),
            "same requests",
        ),
    ] {
        let e = parse(&cfg(&routes), "t", Path::new("/"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(says), "{routes}: {e}");
    }
}

#[test]
fn limits_are_a_rate_or_a_quota_on_things_the_configuration_knows() {
    let cfg = |rules: &str| {
        format!(
            "[[upstreams]]\nname = \"crm\"\nurl = \"http://127.0.0.1:9101/mcp\"\n\n[[agents]]\nid = \"a\"\n\
             api_key_sha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\ntools = []\n\n\
             [limits]\n{rules}"
        )
    };
    let ok = parse(
        &cfg("time_zone = \"Europe/Paris\"\n[[limits.rules]]\nid = \"day\"\ncustomer = \"*\"\nquota = { units = 10, per = \"day\", time_zone = \"UTC\" }\ncost = { \"crm__export\" = 5 }\n\
              [[limits.rules]]\nid = \"burst\"\nagent = \"a\"\nrate = { calls_per_s = 5 }\n"),
        "t",
        Path::new("/"),
    )
    .unwrap();
    assert_eq!(ok.config.limits.rules.len(), 2);
    for (rules, says) in [
        ("[[limits.rules]]\nid = \"x\"\n", "exactly one of `rate` and `quota`"),
        (
            "[[limits.rules]]\nid = \"x\"\nquota = { units = 1, per = \"week\" }\n",
            "unknown variant",
        ),
        (
            "[[limits.rules]]\nid = \"x\"\nquota = { units = 0, per = \"day\" }\n",
            "must be above 0",
        ),
        (
            "[[limits.rules]]\nid = \"x\"\nquota = { units = 1, per = \"day\", time_zone = \"Mars/Base\" }\n",
            "`quota.time_zone`: `Mars/Base` is no time zone",
        ),
        (
            "time_zone = \"Europe/Nowhere\"\n[[limits.rules]]\nid = \"x\"\nquota = { units = 1, per = \"day\" }\n",
            "`limits.time_zone`: `Europe/Nowhere` is no time zone",
        ),
        (
            "[[limits.rules]]\nid = \"x\"\nquota = { units = 1, per = \"day\" }\ncost = { \"crm__x\" = 0 }\n",
            "must be above 0",
        ),
        (
            "[[limits.rules]]\nid = \"x\"\nquota = { units = 1, per = \"day\" }\ncost = { \"nope__x\" = 2 }\n",
            "no upstream's prefix exposes",
        ),
        (
            "[[limits.rules]]\nid = \"x\"\ntool = \"nope__x\"\nrate = { calls_per_s = 1 }\n",
            "no tool any upstream's prefix exposes",
        ),
        (
            "[[limits.rules]]\nid = \"x\"\nagent = \"ghost\"\nrate = { calls_per_s = 1 }\n",
            "no configured agent",
        ),
        (
            "[[limits.rules]]\nid = \"x\"\nrate = { calls_per_s = 1 }\ncost = { \"crm__x\" = 2 }\n",
            "a rate counts calls",
        ),
        (
            "[[limits.rules]]\nid = \"x\"\nrate = { calls_per_s = 1 }\n[[limits.rules]]\nid = \"x\"\nrate = { calls_per_s = 2 }\n",
            "used twice",
        ),
    ] {
        let e = parse(&cfg(rules), "t", Path::new("/"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(says), "{rules}: {e}");
    }
}

#[test]
fn redis_urls_name_host_port_tls_and_database_never_a_password() {
    assert_eq!(
        RedisSetup::parse_url("redis://10.0.0.5:6380/2"),
        Ok(("10.0.0.5".into(), 6380, false, 2))
    );
    assert_eq!(
        RedisSetup::parse_url("rediss://cache.internal"),
        Ok(("cache.internal".into(), 6379, true, 0))
    );
    assert_eq!(
        RedisSetup::parse_url("redis://[::1]:7000/1"),
        Ok(("[::1]".into(), 7000, false, 1))
    );
    assert_eq!(
        RedisSetup::parse_url("redis://[::1]"),
        Ok(("[::1]".into(), 6379, false, 0))
    );
    for (bad, says) in [
        ("http://cache:6379", "not a `redis://"),
        ("redis://user:pw@cache:6379", "no password in the URL"),
        ("redis://cache:port", "is not a port"),
        ("redis://cache:6379/zero", "database must be a number"),
        ("redis://:6379", "names no host"),
    ] {
        let e = RedisSetup::parse_url(bad).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn labels_and_sessions_are_bounded_and_named_for_policies() {
    let ok = parse(
        "[tool_labels]\n\"crm__*\" = [\"reads_pii\"]\n\"mail__send\" = [\"external_send\"]\n\n\
         [sessions]\nidle_timeout_s = 60\ndistinct = [\"customer_id\"]\n",
        "t",
        Path::new("/"),
    )
    .unwrap();
    assert_eq!(
        crate::config::validate::configured_labels(&ok.config),
        [
            "destructive",
            "external_send",
            "open_world",
            "read_only",
            "reads_pii"
        ]
    );
    let many: Vec<String> = (0..30).map(|i| format!("\"l{i}\"")).collect();
    for (text, says) in [
        (
            "[tool_labels]\n\"crm__x\" = [\"reads pii\"]\n".to_owned(),
            "label `reads pii` must be letters",
        ),
        (
            format!("[tool_labels]\n\"crm__x\" = [{}]\n", many.join(", ")),
            "uses 33 labels",
        ),
        (
            "[sessions]\ndistinct = [\"a\", \"b\", \"c\", \"d\", \"e\"]\n".to_owned(),
            "at most 4 arguments",
        ),
        (
            "[sessions]\nidle_timeout_s = 0\n".to_owned(),
            "`sessions.idle_timeout_s` must be between",
        ),
        (
            "[sessions]\nmax_sessions = 0\n".to_owned(),
            "`sessions.max_sessions` must be between",
        ),
        (
            "[sessions]\nbackend = \"redis\"\n".to_owned(),
            "it needs `limits.backend = \"redis\"`",
        ),
    ] {
        let e = errors_of(&text);
        assert!(e.iter().any(|e| e.message.contains(says)), "{text}: {e:?}");
    }
}

fn stdio_config(upstream: &str) -> String {
    GOOD.replace(
        "name = \"crm\"\nurl = \"http://127.0.0.1:9101/mcp\"",
        &format!("name = \"crm\"\n{upstream}"),
    )
}

#[test]
fn a_stdio_upstream_resolves_its_program_environment_and_sandbox() {
    let text = stdio_config(
        "kind = \"stdio\"\ncommand = [\"sh\", \"-c\", \"exit 0\"]\nenv = { TOKEN = { env = \"CRM_TOKEN\" }, MODE = \"ro\", KEY = { file = \"key.txt\" } }\n[upstreams.sandbox]\nread_only = [\"/usr/share\"]\nmemory_mb = 512\nallow_hosts = [\"API.example.com\", \"*.github.com:443\"]\n",
    );
    let v = parse(&text, "t.toml", Path::new("/etc/toolgate")).unwrap();
    let u = &v.upstreams[0];
    let s = u.stdio.as_ref().unwrap();
    assert!(
        s.program.is_absolute() && s.program.ends_with("sh"),
        "{s:?}"
    );
    assert_eq!(s.args, ["-c", "exit 0"]);
    assert_eq!(
        s.env,
        [
            (
                "KEY".to_owned(),
                StdioEnv::Secret(crate::secret::SecretSource::File(
                    "/etc/toolgate/key.txt".into()
                ))
            ),
            ("MODE".to_owned(), StdioEnv::Literal("ro".into())),
            (
                "TOKEN".to_owned(),
                StdioEnv::Secret(crate::secret::SecretSource::Env("CRM_TOKEN".into()))
            ),
        ]
    );
    assert!(s.sandbox.enabled && !s.sandbox.network);
    assert_eq!(s.sandbox.memory_mb, 512);
    let hosts: Vec<String> = s.allow_hosts.iter().map(ToString::to_string).collect();
    assert_eq!(
        hosts,
        ["api.example.com (ports 443, 80)", "*.github.com:443"]
    );
    assert_eq!(
        u.url.host, "stdio.crm",
        "the stand-in endpoint names the upstream"
    );
}

#[test]
fn stdio_upstreams_refuse_what_they_cannot_use() {
    let cases = [
        ("kind = \"stdio\"\n", "needs `command`"),
        ("kind = \"stdio\"\ncommand = []\n", "`command` is empty"),
        (
            "kind = \"stdio\"\ncommand = [\"/nonexistent/server\"]\n",
            "not an executable file",
        ),
        (
            "kind = \"stdio\"\ncommand = [\"sh\"]\nurl = \"http://127.0.0.1:1/mcp\"\n",
            "`url` is not used by a `stdio` upstream",
        ),
        (
            "kind = \"stdio\"\ncommand = [\"sh\"]\n[upstreams.sandbox]\nread_write = [\"relative/dir\"]\n",
            "must be absolute",
        ),
        (
            "kind = \"stdio\"\ncommand = [\"sh\"]\n[upstreams.sandbox]\nread_only = [\"/nonexistent/dir\"]\n",
            "does not exist",
        ),
        (
            "kind = \"stdio\"\ncommand = [\"sh\"]\nenv = { A = { env = \"X\", file = \"y\" } }\n",
            "exactly one of `env` and `file`",
        ),
        (
            "kind = \"stdio\"\ncommand = [\"sh\"]\nenv = { PATH = \"/tmp\" }\n",
            "`PATH` is set by toolgate",
        ),
        (
            "kind = \"stdio\"\ncommand = [\"sh\"]\n[upstreams.sandbox]\nallow_hosts = [\"api.example.com:99999\"]\n",
            "`sandbox.allow_hosts`: `api.example.com:99999`: the port must be",
        ),
        (
            "kind = \"stdio\"\ncommand = [\"sh\"]\n[upstreams.sandbox]\nnetwork = true\nallow_hosts = [\"api.example.com\"]\n",
            "`sandbox.allow_hosts` limits a confined network",
        ),
        (
            "kind = \"stdio\"\ncommand = [\"sh\"]\nenv = { HTTPS_PROXY = \"http://elsewhere\" }\n[upstreams.sandbox]\nallow_hosts = [\"api.example.com\"]\n",
            "`HTTPS_PROXY` is set by toolgate to its egress proxy",
        ),
        (
            "url = \"http://127.0.0.1:9101/mcp\"\ncommand = [\"sh\"]\n",
            "`command` is for `kind = \"stdio\"` upstreams",
        ),
        (
            "url = \"http://127.0.0.1:9101/mcp\"\nmax_in_flight = 8\n",
            "`max_in_flight` is for `kind = \"stdio\"` upstreams",
        ),
    ];
    for (upstream, want) in cases {
        let e = parse(&stdio_config(upstream), "t.toml", Path::new("/"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains(want), "{upstream:?}: {e}");
    }
}

#[test]
fn upstream_identity_needs_the_assertion_key_and_an_http_upstream() {
    let with_identity = GOOD.replace(
        "url = \"http://127.0.0.1:9101/mcp\"",
        "url = \"http://127.0.0.1:9101/mcp\"\n[upstreams.identity]\nmode = \"assertion\"",
    );
    let e = parse(&with_identity, "t.toml", Path::new("/"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("needs `[identity_assertions]`"), "{e}");
    let keyed =
        format!("{with_identity}\n[identity_assertions]\nkey_env = \"K\"\nlifetime_s = 30\n");
    let v = parse(&keyed, "t.toml", Path::new("/")).unwrap();
    let target = v.upstreams[0].identity.as_ref().unwrap();
    assert_eq!(target.header, "Toolgate-User-Assertion");
    assert_eq!(
        target.audience, "http://127.0.0.1:9101/mcp",
        "default: the url"
    );
    assert_eq!(v.assertion_keys.as_ref().unwrap().lifetime_s, 30);
    for (bad, why) in [
        (
            "header = \"Content-Length\"",
            "not a header toolgate may set",
        ),
        ("header = \"Bad Header\"", "not a header toolgate may set"),
    ] {
        let text = keyed.replace(
            "mode = \"assertion\"",
            &format!("mode = \"assertion\"\n{bad}"),
        );
        let e = parse(&text, "t.toml", Path::new("/"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains(why), "{bad}: {e}");
    }
    let both = keyed.replace("key_env = \"K\"", "key_env = \"K\"\nkey_file = \"k.pem\"");
    let e = parse(&both, "t.toml", Path::new("/"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("exactly one of `key_file` and `key_env`"), "{e}");
}

#[test]
fn token_exchange_needs_an_endpoint_and_keys_only_for_an_actor() {
    let exchange = GOOD.replace(
        "url = \"http://127.0.0.1:9101/mcp\"",
        "url = \"http://127.0.0.1:9101/mcp\"\n[upstreams.identity]\nmode = \"token_exchange\"\n[upstreams.identity.exchange]\ntoken_url = \"http://127.0.0.1:9500/token\"\nclient_id = \"toolgate\"\nclient_secret_env = \"IDP_SECRET\"",
    );
    let v = parse(&exchange, "t.toml", Path::new("/")).unwrap();
    let target = v.upstreams[0].identity.as_ref().unwrap();
    assert_eq!(
        target.header, "Authorization",
        "an exchanged token is a bearer token"
    );
    assert_eq!(
        target.audience, "http://127.0.0.1:9101/mcp",
        "default resource: the url"
    );
    let ex = target.exchange.as_ref().unwrap();
    assert_eq!(ex.client_id, "toolgate");
    assert!(!ex.actor);
    assert_eq!(ex.fallback, crate::config::ExchangeFallback::Refuse);
    let cases = [
        (
            exchange.replace("client_secret_env = \"IDP_SECRET\"", ""),
            "exactly one of `client_secret_env` and `client_secret_file`",
        ),
        (
            exchange.replace("http://127.0.0.1:9500/token", "http://idp.example/token"),
            "`token_url` must be https://",
        ),
        (
            exchange.replace("mode = \"token_exchange\"", "mode = \"token_exchange\"\nactor = true"),
            "`actor = true` needs `[identity_assertions]`",
        ),
        (
            exchange.replace(
                "[upstreams.identity.exchange]\ntoken_url = \"http://127.0.0.1:9500/token\"\nclient_id = \"toolgate\"\nclient_secret_env = \"IDP_SECRET\"",
                "",
            ),
            "needs `[upstreams.identity.exchange]`",
        ),
        (
            exchange.replace("mode = \"token_exchange\"", "mode = \"assertion\"")
                + "\n[identity_assertions]\nkey_env = \"K\"\n",
            "`exchange` is for `mode = \"token_exchange\"`",
        ),
    ];
    for (text, want) in cases {
        let e = parse(&text, "t.toml", Path::new("/"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains(want), "{want}: {e}");
    }
    let resourced = exchange.replace(
        "client_id = \"toolgate\"",
        "client_id = \"toolgate\"\nresource = \"https://crm.example\"\nscope = \"crm.read\"",
    );
    let v = parse(&resourced, "t.toml", Path::new("/")).unwrap();
    let target = v.upstreams[0].identity.as_ref().unwrap();
    assert_eq!(target.audience, "https://crm.example");
    assert_eq!(
        target.exchange.as_ref().unwrap().scope.as_deref(),
        Some("crm.read")
    );
}

#[test]
fn connected_accounts_need_their_section_a_provider_and_a_public_url() {
    let connect = GOOD.replace(
        "url = \"http://127.0.0.1:9101/mcp\"",
        "url = \"http://127.0.0.1:9101/mcp\"\n[upstreams.identity]\nmode = \"connected_account\"\n[upstreams.identity.connect]\nauthorize_url = \"http://127.0.0.1:9500/auth\"\ntoken_url = \"http://127.0.0.1:9500/token\"\nclient_id = \"toolgate\"\nclient_secret_env = \"GH_SECRET\"\nscope = \"repo offline_access\"",
    );
    let section = "\n[connected_accounts]\nkey_env = \"CONN_KEY\"\npublic_url = \"https://toolgate.example/\"\n";
    let v = parse(&format!("{connect}{section}"), "t.toml", Path::new("/")).unwrap();
    let target = v.upstreams[0].identity.as_ref().unwrap();
    assert_eq!(target.header, "Authorization");
    let c = target.connect.as_ref().unwrap();
    assert_eq!(c.authorize_url, "http://127.0.0.1:9500/auth");
    assert_eq!(c.scope.as_deref(), Some("repo offline_access"));
    let accounts = v.connected_accounts.as_ref().unwrap();
    assert_eq!(
        accounts.public_url, "https://toolgate.example",
        "no trailing slash"
    );
    assert_eq!(accounts.link_lifetime_s, 600);
    let cases = [
        (connect.clone(), "needs `[connected_accounts]`"),
        (
            format!(
                "{connect}{}",
                section.replace("https://toolgate.example/", "http://toolgate.example")
            ),
            "`public_url` must be https://",
        ),
        (
            format!(
                "{connect}{}",
                section.replace("key_env = \"CONN_KEY\"\n", "")
            ),
            "exactly one of `key_file` and `key_env`",
        ),
        (
            format!("{connect}{section}user_header = \"Signed In\"\n"),
            "`user_header` `Signed In` is not a header name",
        ),
        (
            format!(
                "{}{section}",
                connect.replace("http://127.0.0.1:9500/auth", "http://idp.example/auth")
            ),
            "`authorize_url` must be https://",
        ),
        (
            format!(
                "{}{section}",
                connect.replace(
                    "mode = \"connected_account\"",
                    "mode = \"connected_account\"\nactor = true"
                )
            ),
            "`actor` is for `mode = \"token_exchange\"`",
        ),
    ];
    for (text, want) in cases {
        let e = parse(&text, "t.toml", Path::new("/"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains(want), "{want}: {e}");
    }
}
