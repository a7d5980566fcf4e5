//! The confinement of a stdio upstream's process: bubblewrap (`bwrap`)
//! namespaces and mounts, resource limits, a clean environment — and the
//! plain-words account of it that `toolgate check` prints.
//!
//! The process gets its own user (uid 65534, no capabilities, no new
//! privileges), PID, IPC, UTS, cgroup and — unless `network = true` —
//! network namespace, in which not even toolgate's loopback listeners
//! exist. Its filesystem is empty but for `/usr` (with the merged-`/usr`
//! links), a few files of `/etc`, a private `/proc`, `/dev` and `/tmp`,
//! and the paths the upstream declares. Limits are rlimits set before the
//! sandbox starts, so they bind everything inside it.

use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use toolgate_core::config::{SandboxConfig, StdioSpec};
use toolgate_core::secret::Secret;

use super::egress;

/// Files of `/etc` every process may need (name resolution, TLS roots,
/// the dynamic linker's cache, time zone) and that hold no secret.
const ETC_FILES: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/localtime",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/alternatives",
];

/// Top-level directories that merged-`/usr` systems make links into `/usr`.
const USR_LINKS: &[&str] = &["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/// `PATH` inside the process.
const CHILD_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The uid and gid the process runs as inside its user namespace.
const SANDBOX_ID: &str = "65534";

/// Why a stdio upstream's process cannot be started as configured.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// bubblewrap is not installed (or not on `PATH`).
    #[error("the sandbox needs bubblewrap (`bwrap`), which is not on PATH: install it (Debian: `apt-get install bubblewrap`), or run this upstream unconfined with `sandbox.enabled = false`")]
    NoBwrap,
    /// bubblewrap is there but the kernel refuses what it asks.
    #[error("the sandbox cannot be set up on this host ({0}): the kernel must allow unprivileged user namespaces; or run this upstream unconfined with `sandbox.enabled = false`")]
    Unsupported(String),
    /// `allow_hosts` without the egress channel (a caller's mistake).
    #[error("the sandbox allows hosts but was given no egress channel")]
    NoEgress,
    /// The toolgate binary, which the sandbox runs as its egress helper,
    /// cannot be found.
    #[error("the egress proxy needs toolgate's own binary inside the sandbox, and its path is unknown: {0}")]
    NoEgressHelper(String),
    /// The program is outside every path the sandbox shows.
    #[error("`{0}` is not visible inside the sandbox: add its directory to `sandbox.read_only`")]
    Hidden(PathBuf),
}

/// Where `bwrap` is, found on toolgate's `PATH`.
fn bwrap() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("bwrap"))
        .find(|p| p.is_file())
}

/// Whether the sandbox can run `spec`'s program here: bubblewrap present,
/// the kernel allowing its namespaces, the program visible inside. Runs
/// bubblewrap once, so it is for start-up and `toolgate check`, not calls.
pub fn preflight(spec: &StdioSpec) -> Result<(), SandboxError> {
    if !spec.sandbox.enabled {
        return Ok(());
    }
    let bwrap = bwrap().ok_or(SandboxError::NoBwrap)?;
    let real = std::fs::canonicalize(&spec.program).unwrap_or_else(|_| spec.program.clone());
    if !visible(&spec.sandbox, &real) || !visible(&spec.sandbox, &spec.program) {
        return Err(SandboxError::Hidden(real));
    }
    let out = Command::new(bwrap)
        .args(namespace_args(&spec.sandbox))
        .args(["--ro-bind", "/usr", "/usr"])
        .args(link_args())
        .args(["--", "/usr/bin/true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_clear()
        .output()
        .map_err(|e| SandboxError::Unsupported(e.to_string()))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        return Err(SandboxError::Unsupported(
            why.trim().chars().take(300).collect(),
        ));
    }
    Ok(())
}

/// Whether `path` is inside what the sandbox shows.
fn visible(s: &SandboxConfig, path: &Path) -> bool {
    path.starts_with("/usr")
        || USR_LINKS.iter().any(|l| path.starts_with(l))
        || s.read_only
            .iter()
            .chain(&s.read_write)
            .any(|p| path.starts_with(p.get_ref()))
}

fn namespace_args(s: &SandboxConfig) -> Vec<&'static str> {
    let mut a = vec![
        "--unshare-all",
        "--unshare-user",
        "--uid",
        SANDBOX_ID,
        "--gid",
        SANDBOX_ID,
        "--cap-drop",
        "ALL",
        "--die-with-parent",
        "--new-session",
    ];
    if s.network {
        a.push("--share-net");
    }
    a
}

/// Merged-`/usr` links as they are on the host, or the directories bound.
fn link_args() -> Vec<String> {
    let mut a = Vec::new();
    for l in USR_LINKS {
        let p = Path::new(l);
        match std::fs::read_link(p) {
            Ok(target) => {
                a.push("--symlink".into());
                a.push(target.to_string_lossy().into_owned());
                a.push((*l).into());
            }
            Err(_) if p.is_dir() => {
                a.extend(["--ro-bind".into(), (*l).into(), (*l).into()]);
            }
            Err(_) => {}
        }
    }
    a
}

/// Whether `spec`'s process reaches hosts through toolgate's egress proxy
/// (a sandbox of its own network with `allow_hosts`).
pub fn uses_egress(spec: &StdioSpec) -> bool {
    spec.sandbox.enabled && !spec.sandbox.network && !spec.allow_hosts.is_empty()
}

/// The command starting `spec`'s program with environment `env` (values
/// read from their sources): inside bubblewrap under the sandbox's limits,
/// or — `sandbox.enabled = false` — as is, with only the clean
/// environment. stdin, stdout and stderr are pipes. With `egress` (the
/// child's end of the egress channel, needed when [`uses_egress`]), the
/// sandbox starts the program through `toolgate sandbox-exec`, which hands
/// toolgate the proxy's socket first.
pub fn command(
    spec: &StdioSpec,
    env: &[(String, Secret)],
    egress: Option<RawFd>,
) -> Result<Command, SandboxError> {
    let s = &spec.sandbox;
    let egress = if uses_egress(spec) {
        Some(egress.ok_or(SandboxError::NoEgress)?)
    } else {
        None
    };
    let mut cmd = if s.enabled {
        let mut c = Command::new(bwrap().ok_or(SandboxError::NoBwrap)?);
        c.args(namespace_args(s));
        c.args(["--ro-bind", "/usr", "/usr"]);
        c.args(link_args());
        for f in ETC_FILES {
            c.args(["--ro-bind-try", f, f]);
        }
        c.args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
        for p in &s.read_only {
            c.args(["--ro-bind", p.get_ref(), p.get_ref()]);
        }
        for p in &s.read_write {
            c.args(["--bind", p.get_ref(), p.get_ref()]);
        }
        if egress.is_some() {
            let exe =
                std::env::current_exe().map_err(|e| SandboxError::NoEgressHelper(e.to_string()))?;
            c.arg("--ro-bind").arg(exe).arg(egress::EXEC_PATH);
        }
        c.args(["--chdir", "/tmp", "--"]);
        if egress.is_some() {
            c.args([egress::EXEC_PATH, egress::EXEC_SUBCOMMAND]);
        }
        c.arg(&spec.program);
        c.args(&spec.args);
        child_setup(&mut c, Some(s), egress);
        c
    } else {
        let mut c = Command::new(&spec.program);
        c.args(&spec.args);
        child_setup(&mut c, None, None);
        c
    };
    cmd.env_clear();
    cmd.env("PATH", CHILD_PATH);
    cmd.env("HOME", "/tmp");
    for (k, v) in env {
        use std::os::unix::ffi::OsStrExt;
        cmd.env(k, std::ffi::OsStr::from_bytes(v.expose()));
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Ok(cmd)
}

/// Between fork and exec: the process is killed when the thread that
/// started it (its supervisor) goes, so toolgate leaves no orphan even
/// when killed itself; sandboxed, the rlimits of `sandbox`; and the egress
/// channel put on [`egress::EGRESS_FD`].
#[allow(unsafe_code)]
fn child_setup(cmd: &mut Command, sandbox: Option<&SandboxConfig>, egress_fd: Option<RawFd>) {
    let limits = sandbox.map(|s| {
        [
            (libc::RLIMIT_AS, s.memory_mb.saturating_mul(1 << 20)),
            (libc::RLIMIT_NPROC, s.processes),
            (libc::RLIMIT_NOFILE, s.open_files),
            (
                libc::RLIMIT_CPU,
                if s.cpu_s == 0 {
                    libc::RLIM_INFINITY
                } else {
                    s.cpu_s
                },
            ),
        ]
    });
    // SAFETY: the closure runs in the forked child before exec and makes
    // only `prctl`, `dup2`, `fcntl` and `setrlimit` calls, which are
    // async-signal-safe; it touches no memory but what is moved into it.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(fd) = egress_fd {
                // `dup2` leaves the copy without close-on-exec; a channel
                // already on the descriptor only loses the flag.
                let r = if fd == egress::EGRESS_FD {
                    libc::fcntl(fd, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, egress::EGRESS_FD)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (resource, value) in limits.into_iter().flatten() {
                let r = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                if libc::setrlimit(resource, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// What the sandbox of `spec` allows, one line per aspect, for `toolgate
/// check`.
pub fn explain(spec: &StdioSpec) -> Vec<String> {
    let s = &spec.sandbox;
    let env: Vec<&str> = spec.env.iter().map(|(k, _)| k.as_str()).collect();
    let env = if env.is_empty() {
        "PATH, HOME".to_owned()
    } else {
        format!("PATH, HOME, {}", env.join(", "))
    };
    if !s.enabled {
        return vec![
            "sandbox: OFF — the process runs with toolgate's own user, files and network".into(),
            format!("environment: {env} (nothing else of toolgate's)"),
            instances(spec),
        ];
    }
    let list = |v: &[toml::Spanned<String>]| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.iter()
                .map(|p| p.get_ref().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    vec![
        format!(
            "network: {}",
            if s.network {
                "the host's (sandbox.network = true)".to_owned()
            } else if spec.allow_hosts.is_empty() {
                "none".to_owned()
            } else {
                format!(
                    "none but toolgate's egress proxy (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY), to: {}",
                    spec.allow_hosts
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ),
        format!(
            "files: read-only /usr and system files of /etc; private /tmp, /proc, /dev; read-only: {}; read-write: {}",
            list(&s.read_only),
            list(&s.read_write)
        ),
        format!("environment: {env} (nothing else of toolgate's)"),
        format!(
            "limits: address space {} MiB, {} processes, {} open files, CPU time {}",
            s.memory_mb,
            s.processes,
            s.open_files,
            if s.cpu_s == 0 {
                "unlimited".to_owned()
            } else {
                format!("{} s", s.cpu_s)
            }
        ),
        "user: uid 65534 in its own user namespace, no capabilities, no new privileges".into(),
        instances(spec),
    ]
}

/// How many processes run, for [`explain`].
fn instances(spec: &StdioSpec) -> String {
    match spec.instances {
        toolgate_core::config::Instances::Shared => "processes: one, shared by every call".into(),
        toolgate_core::config::Instances::PerUser => format!(
            "processes: one per end user (at most {} with the shared one), stopped after {} s idle",
            spec.max_instances,
            spec.idle_timeout.as_secs()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(sandbox: SandboxConfig) -> StdioSpec {
        StdioSpec {
            program: "/usr/bin/true".into(),
            args: vec![],
            env: vec![],
            sandbox,
            allow_hosts: vec![],
            max_in_flight: 1,
            ping_interval: std::time::Duration::from_secs(1),
            instances: toolgate_core::config::Instances::Shared,
            max_instances: 2,
            idle_timeout: std::time::Duration::from_secs(1),
        }
    }

    #[test]
    fn only_declared_paths_and_usr_are_visible() {
        let mut s = SandboxConfig::default();
        s.read_only
            .push(toml::Spanned::new(0..0, "/opt/srv".into()));
        assert!(visible(&s, Path::new("/usr/bin/node")));
        assert!(visible(&s, Path::new("/opt/srv/index.js")));
        assert!(!visible(&s, Path::new("/opt/other/index.js")));
        assert!(!visible(&s, Path::new("/etc/toolgate/toolgate.toml")));
    }

    #[test]
    fn explain_names_network_paths_and_limits() {
        let mut s = SandboxConfig::default();
        s.read_write
            .push(toml::Spanned::new(0..0, "/srv/shared".into()));
        let text = explain(&spec(s)).join("\n");
        assert!(text.contains("network: none"), "{text}");
        assert!(text.contains("read-write: /srv/shared"), "{text}");
        assert!(text.contains("2048 MiB"), "{text}");
        let off = explain(&spec(SandboxConfig {
            enabled: false,
            ..SandboxConfig::default()
        }))
        .join("\n");
        assert!(off.contains("OFF"), "{off}");
        let mut proxied = spec(SandboxConfig::default());
        proxied.allow_hosts = vec![
            toolgate_core::host_rule::HostRule::parse("api.github.com").unwrap(),
            toolgate_core::host_rule::HostRule::parse("localhost:8080").unwrap(),
        ];
        let text = explain(&proxied).join("\n");
        assert!(
            text.contains("egress proxy (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY), to: api.github.com (ports 443, 80), localhost:8080"),
            "{text}"
        );
    }

    #[test]
    fn allowed_hosts_start_the_program_through_the_egress_helper() {
        let mut proxied = spec(SandboxConfig::default());
        proxied.allow_hosts =
            vec![toolgate_core::host_rule::HostRule::parse("localhost:8080").unwrap()];
        assert!(matches!(
            command(&proxied, &[], None),
            Err(SandboxError::NoEgress)
        ));
        if bwrap().is_none() {
            return;
        }
        let cmd = command(&proxied, &[], Some(7)).unwrap();
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let at = args.iter().position(|a| a == "--").unwrap();
        assert_eq!(
            args[at + 1..],
            [egress::EXEC_PATH, egress::EXEC_SUBCOMMAND, "/usr/bin/true"]
        );
        assert!(args.iter().any(|a| a == egress::EXEC_PATH));
        assert!(args.iter().any(|a| a == "--unshare-all"));
        assert!(!args.iter().any(|a| a == "--share-net"));
    }

    #[test]
    fn the_environment_is_only_what_is_declared() {
        let cmd = command(
            &spec(SandboxConfig {
                enabled: false,
                ..SandboxConfig::default()
            }),
            &[("TOKEN".into(), Secret::new(b"s3".to_vec()))],
            None,
        )
        .unwrap();
        let env: Vec<_> = cmd
            .get_envs()
            .map(|(k, v)| (k.to_string_lossy().into_owned(), v.is_some()))
            .collect();
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["HOME", "PATH", "TOKEN"]);
    }
}
