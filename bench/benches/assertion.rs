//! The end-user assertion a call to an `[upstreams.identity]` upstream
//! carries: claims written, Ed25519-signed, base64url-encoded, one per call.
//!
//! `cargo bench -p toolgate-bench --bench assertion`
#![expect(
    clippy::panic,
    reason = "a benchmark with a broken fixture must stop, not measure nothing"
)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use toolgate_core::config::{AssertionKeys, IdentityMode, IdentityTarget};
use toolgate_core::secret::SecretSource;
use toolgate_upstream::assertion::{Claims, Signer};

/// RFC 8410's example Ed25519 private key.
const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";

fn mint(c: &mut Criterion) {
    let file =
        std::env::temp_dir().join(format!("toolgate-bench-assert-{}.pem", std::process::id()));
    if std::fs::write(&file, PEM).is_err() {
        panic!("cannot write the key");
    }
    let Ok(signer) = Signer::load(&AssertionKeys {
        current: SecretSource::File(file.clone()),
        previous: vec![],
        issuer: "https://toolgate.bench".into(),
        lifetime_s: 60,
    }) else {
        panic!("the key does not load");
    };
    let _ = std::fs::remove_file(&file);
    let target = IdentityTarget {
        mode: IdentityMode::Assertion,
        header: "Toolgate-User-Assertion".into(),
        audience: "https://crm.internal".into(),
        exchange: None,
        connect: None,
    };
    let claims = Claims {
        user: Some("alice@corp.example"),
        agent: "support-bot",
        customer: Some("acme"),
        tool: "lookup_customer",
    };
    c.bench_function("assertion mint (Ed25519, per call)", |b| {
        b.iter(|| black_box(signer.mint(&target, black_box(&claims), 1_800_000_000)))
    });
}

criterion_group!(benches, mint);
criterion_main!(benches);
