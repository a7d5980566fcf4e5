//! The TOML configuration loader and its checks (`toolgate check`, `run`,
//! reloads, and admin API documents read through the same parser).
//! Invariant: any text gives a configuration or errors, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = toolgate_core::config::parse(text, "fuzz.toml", Path::new("/nonexistent"));
});
