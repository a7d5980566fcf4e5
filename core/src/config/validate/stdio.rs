//! A `kind = "stdio"` upstream: its command, environment and sandbox.

use std::path::{Path, PathBuf};

use crate::secret::SecretSource;

use super::super::*;

/// The stdio-only keys `u` sets (each an error on another kind).
pub(crate) fn keys_set(u: &UpstreamConfig) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if u.command.is_some() {
        keys.push("command");
    }
    if !u.env.is_empty() {
        keys.push("env");
    }
    if u.sandbox != SandboxConfig::default() {
        keys.push("sandbox");
    }
    for (key, set) in [
        ("instances", u.instances != Instances::Shared),
        ("max_instances", u.max_instances != default_max_instances()),
        (
            "idle_timeout_s",
            u.idle_timeout_s != default_idle_timeout_s(),
        ),
        ("max_in_flight", u.max_in_flight != default_max_in_flight()),
        (
            "ping_interval_s",
            u.ping_interval_s != default_ping_interval_s(),
        ),
    ] {
        if set {
            keys.push(key);
        }
    }
    keys
}

/// Checks a stdio upstream's keys and resolves its process: the program
/// on `PATH`, secret files against `base`, sandbox paths absolute.
pub(crate) fn check(
    u: &UpstreamConfig,
    base: &Path,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) -> Option<StdioSpec> {
    let name = u.name.get_ref();
    let here = at(&u.name.span());
    for (key, set) in [
        ("url", !u.url.get_ref().is_empty()),
        ("spec", u.spec.is_some()),
        ("base_url", u.base_url.is_some()),
        ("routes", !u.routes.is_empty()),
        ("credential", u.credential.is_some()),
        ("ca_file", u.ca_file.is_some()),
    ] {
        if set {
            let hint = if key == "credential" {
                "; give the process its secrets through `env`"
            } else {
                ""
            };
            err(
                here,
                format!("upstream `{name}`: `{key}` is not used by a `stdio` upstream{hint}"),
            );
        }
    }
    let Some(command) = &u.command else {
        err(
            here,
            format!(
                "upstream `{name}`: `kind = \"stdio\"` needs `command`, the server's command line"
            ),
        );
        return None;
    };
    let cat = at(&command.span());
    let Some((program, args)) = command.get_ref().split_first() else {
        err(cat, format!("upstream `{name}`: `command` is empty"));
        return None;
    };
    let Some(program) = find_program(program, base) else {
        err(
            cat,
            format!("upstream `{name}`: `command`: `{program}` is not an executable file (nor found on PATH)"),
        );
        return None;
    };
    if u.max_in_flight == 0 {
        err(
            here,
            format!("upstream `{name}`: `max_in_flight` must be above 0"),
        );
    }
    if u.ping_interval_s == 0 {
        err(
            here,
            format!("upstream `{name}`: `ping_interval_s` must be above 0"),
        );
    }
    if u.instances == Instances::PerUser && (u.max_instances < 2 || u.idle_timeout_s == 0) {
        err(
            here,
            format!("upstream `{name}`: `instances = \"per_user\"` needs `max_instances` of at least 2 (one is the catalog's) and `idle_timeout_s` above 0"),
        );
    }
    let mut env = Vec::with_capacity(u.env.len());
    for (var, value) in &u.env {
        if var.is_empty() || var.contains(['=', '\0']) {
            err(
                here,
                format!("upstream `{name}`: `env`: `{var}` is not a variable name"),
            );
            continue;
        }
        if var == "PATH" || var == "HOME" {
            err(
                here,
                format!("upstream `{name}`: `env`: `{var}` is set by toolgate"),
            );
            continue;
        }
        let value = match value {
            EnvValue::Literal(v) => StdioEnv::Literal(v.clone()),
            EnvValue::Secret(EnvSecret {
                env: Some(e),
                file: None,
            }) => StdioEnv::Secret(SecretSource::Env(e.clone())),
            EnvValue::Secret(EnvSecret {
                env: None,
                file: Some(f),
            }) => StdioEnv::Secret(SecretSource::File(base.join(f))),
            EnvValue::Secret(_) => {
                err(
                    here,
                    format!("upstream `{name}`: `env.{var}`: give exactly one of `env` and `file`"),
                );
                continue;
            }
        };
        env.push((var.clone(), value));
    }
    let s = &u.sandbox;
    for p in s.read_only.iter().chain(&s.read_write) {
        let path = Path::new(p.get_ref());
        if !path.is_absolute() || p.get_ref().split('/').any(|c| c == "..") {
            err(
                at(&p.span()),
                format!(
                    "upstream `{name}`: sandbox path `{}` must be absolute, without `..`",
                    p.get_ref()
                ),
            );
        } else if !path.exists() {
            err(
                at(&p.span()),
                format!(
                    "upstream `{name}`: sandbox path `{}` does not exist",
                    p.get_ref()
                ),
            );
        }
    }
    let mut allow_hosts = Vec::with_capacity(s.allow_hosts.len());
    for entry in &s.allow_hosts {
        match crate::host_rule::HostRule::parse(entry.get_ref()) {
            Ok(rule) => allow_hosts.push(rule),
            Err(e) => err(
                at(&entry.span()),
                format!("upstream `{name}`: `sandbox.allow_hosts`: {e}"),
            ),
        }
    }
    if !s.allow_hosts.is_empty() {
        if !s.enabled || s.network {
            err(
                here,
                format!("upstream `{name}`: `sandbox.allow_hosts` limits a confined network; with `sandbox.enabled = false` or `sandbox.network = true` the process already has the host's whole network"),
            );
        }
        for (var, _) in &env {
            if crate::host_rule::PROXY_VARS.contains(&var.as_str()) {
                err(
                    here,
                    format!("upstream `{name}`: `env`: `{var}` is set by toolgate to its egress proxy when `sandbox.allow_hosts` is given"),
                );
            }
        }
    }
    if s.enabled && s.memory_mb < 64 {
        err(
            here,
            format!("upstream `{name}`: `sandbox.memory_mb` must be at least 64"),
        );
    }
    if s.enabled && (s.processes == 0 || s.open_files < 16) {
        err(
            here,
            format!("upstream `{name}`: `sandbox.processes` must be above 0 and `sandbox.open_files` at least 16"),
        );
    }
    Some(StdioSpec {
        program,
        args: args.to_vec(),
        env,
        sandbox: s.clone(),
        allow_hosts,
        max_in_flight: u.max_in_flight,
        ping_interval: std::time::Duration::from_secs(u.ping_interval_s),
        instances: u.instances,
        max_instances: u.max_instances,
        idle_timeout: std::time::Duration::from_secs(u.idle_timeout_s),
    })
}

/// `program` as an absolute path: itself when it has a `/` (relative to
/// the configuration's directory `base`), else the first executable of
/// that name on `PATH`.
fn find_program(program: &str, base: &Path) -> Option<PathBuf> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = base.join(program);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_absolute() && executable(p))
}
