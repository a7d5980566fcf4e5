//! Bearer tokens as they arrive: sub-tokens (toolgate's own MAC'd tokens)
//! and JWTs from an IdP, verified against a fixed key and JWKS. Invariants:
//! never a panic; nothing the fuzzer writes verifies (it holds neither key).
#![no_main]

use std::collections::HashSet;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use toolgate_core::jwt::{ClaimRules, Verifier as Jwt};
use toolgate_core::secret::Secret;
use toolgate_core::subtoken::Verifier as Subtokens;

/// RFC 8037's example Ed25519 public key.
const JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

fn verifiers() -> &'static (Subtokens, Jwt) {
    static V: OnceLock<(Subtokens, Jwt)> = OnceLock::new();
    V.get_or_init(|| {
        let sub = Subtokens::new(Secret::new(vec![7u8; 32]), HashSet::new());
        let rules = ClaimRules {
            issuer: "https://idp.fuzz".into(),
            audience: "https://toolgate.fuzz/mcp".into(),
            agent_claim: "azp".into(),
            groups_claim: Some("groups".into()),
            customer_claim: Some("org".into()),
            leeway_s: 30,
        };
        let jwt = match Jwt::from_jwks(JWKS, rules) {
            Ok(j) => j,
            Err(e) => panic!("fixture JWKS: {e}"),
        };
        (sub, jwt)
    })
}

fuzz_target!(|data: &[u8]| {
    let (sub, jwt) = verifiers();
    assert!(
        sub.verify(data, 1_800_000_000).is_err(),
        "a forged sub-token verified"
    );
    assert!(
        jwt.verify(data, 1_800_000_000).is_err(),
        "a forged JWT verified"
    );
});
