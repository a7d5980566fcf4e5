//! `[auth.jwt]`.

use std::path::Path;

use super::super::*;

/// Checks `[auth.jwt]` and parses its JWKS.
pub(crate) fn validate_jwt(
    j: &JwtConfig,
    base: &Path,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) -> Option<std::sync::Arc<crate::jwt::Verifier>> {
    for (key, v) in [("issuer", &j.issuer), ("audience", &j.audience)] {
        if v.get_ref().is_empty() {
            err(at(&v.span()), format!("`auth.jwt.{key}` must not be empty"));
        }
    }
    if j.agent_claim.is_empty() {
        err(None, "`auth.jwt.agent_claim` must not be empty".to_owned());
    }
    let rules = crate::jwt::ClaimRules {
        issuer: j.issuer.get_ref().clone(),
        audience: j.audience.get_ref().clone(),
        agent_claim: j.agent_claim.clone(),
        groups_claim: j.groups_claim.clone(),
        customer_claim: j.customer_claim.clone(),
        leeway_s: j.leeway_s,
    };
    let (file, text) = match (&j.jwks_file, &j.jwks_url) {
        (Some(f), None) => {
            let path = base.join(f.get_ref());
            match std::fs::read_to_string(&path) {
                Ok(t) => (f, t),
                Err(e) => {
                    err(
                        at(&f.span()),
                        format!("cannot read the JWKS file `{}`: {e}", f.get_ref()),
                    );
                    return None;
                }
            }
        }
        // Keys arrive from the URL once running; until then none verify.
        (None, Some(_)) => {
            return Some(std::sync::Arc::new(crate::jwt::Verifier::without_keys(
                rules,
            )));
        }
        _ => {
            err(
                at(&j.issuer.span()),
                "`[auth.jwt]` needs exactly one of `jwks_file` and `jwks_url`".to_owned(),
            );
            return None;
        }
    };
    if j.jwks_refresh_s == 0 {
        err(None, "`auth.jwt.jwks_refresh_s` must be above 0".to_owned());
    }
    match crate::jwt::Verifier::from_jwks(&text, rules) {
        Ok(v) => Some(std::sync::Arc::new(v)),
        Err(e) => {
            err(at(&file.span()), format!("JWKS `{}` {e}", file.get_ref()));
            None
        }
    }
}
