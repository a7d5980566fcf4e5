//! toolgate-bench: criterion microbenchmarks of the hot-path pieces, in
//! `benches/`. Run with `cargo bench -p toolgate-bench`; each bench is named
//! by its scenario so results can be compared across versions.

use std::sync::Arc;

use toolgate_core::audit::{AuditArgs, AuditRecord};

/// A typical allowed `tools/call` record, the fixture of the audit and sink
/// benches.
pub fn sample_record() -> AuditRecord {
    AuditRecord {
        request_id: Some("42".into()),
        agent: Some(Arc::from("support-bot")),
        user: Some(Arc::from("alice@example.com")),
        method: Some("tools/call".into()),
        tool: Some("crm__lookup_customer".into()),
        target: None,
        upstream: Some(Arc::from("crm")),
        latency_us: 1234,
        client: "127.0.0.1:40000".parse().ok(),
        protocol_version: Some("2026-07-28"),
        // `[audit] arguments = "digest"`, the default.
        args: Some(AuditArgs::digest(br#"{"customer_id":"C-1"}"#)),
        ..AuditRecord::new(
            1_795_570_070_123_456,
            toolgate_core::audit::Reason::Attached,
        )
    }
}
