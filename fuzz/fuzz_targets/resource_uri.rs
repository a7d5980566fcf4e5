//! The check of a resource URI an agent sends (`resources/read`): never a
//! panic; a URI it accepts names one upstream and carries an absolute URI
//! with no dot segment (plain or percent-encoded), no encoded separator,
//! no backslash and no control character; and exposing what it routes to
//! gives back exactly the URI it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolgate_core::resource_uri::{expose, route, MAX_URI_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(uri) = std::str::from_utf8(data) else {
        return;
    };
    let Ok((upstream, inner)) = route(uri) else {
        return;
    };
    assert!(uri.len() <= MAX_URI_LEN);
    assert!(!upstream.is_empty() && !upstream.contains('/'));
    assert_eq!(expose(upstream, inner), uri, "not reversible");
    assert!(inner.contains(':'), "no scheme");
    assert!(
        !inner.chars().any(|c| c.is_control() || c == '\\'),
        "a control character or backslash passed"
    );
    let lower = inner.to_ascii_lowercase();
    assert!(!lower.contains("%2f") && !lower.contains("%5c") && !lower.contains("%00"));
    let path = lower.split(['?', '#']).next().unwrap_or("");
    let decoded = path.replace("%2e", ".");
    assert!(
        decoded.split('/').all(|s| s != "." && s != ".."),
        "a dot segment passed: {uri}"
    );
});
