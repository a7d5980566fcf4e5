//! The operator's configuration: the file format ([`file`]: structs that
//! mirror the TOML one to one, every default documented), the checks
//! ([`validate`]: every error names its line so `toolgate check` can point
//! at it), and the checked form ([`valid`]) that `decision` compiles into
//! the immutable snapshot the shards serve from.
//!
//! Checking reads what the configuration names (key files, CA bundles,
//! JWKS files) to refuse a configuration that cannot run; it never opens a
//! socket.

pub mod file;
pub mod valid;
pub mod validate;

pub use file::*;
pub use valid::*;
pub use validate::{
    check_limit_rules, check_upstream, is_upstream_name, line_of, load, parse, CheckedUpstream,
    PATTERN_SIZE_LIMIT,
};

#[cfg(test)]
mod tests;
