//! `compare`: the same workload side by side, in one run, against
//! (a) the upstream directly, (b) toolgate with a typical configuration
//! (permission map, a Cedar policy evaluated per call, audit log) — plain
//! and over TLS — (c) toolgate with everything on (TLS, a JWT per call,
//! output rules scanning every result, two syslog sinks), and (d) nginx as
//! a plain reverse proxy; plus toolgate with a reload under load, large
//! results, and memory per idle connection.
//!
//! CPU layout (2+ cores): the proxy under test (one toolgate shard, or one
//! nginx worker) gets CPU 1; the generator and the upstream share CPU 0, the
//! same for every scenario, so the proxies are compared on equal footing.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::generate::{run, Era, Kind, Report, Workload};
use crate::secure;

/// Options of a comparison.
pub struct Options {
    /// toolgate binary.
    pub toolgate: PathBuf,
    /// Seconds per scenario.
    pub seconds: u64,
    /// Connections per scenario.
    pub connections: usize,
    /// Argument size of calls.
    pub arg_bytes: usize,
    /// Idle connections for the memory scenario (0 skips it).
    pub idle: usize,
    /// Where to write the JSON results.
    pub json: Option<PathBuf>,
    /// Run only the rows whose label contains one of these (all if empty).
    pub only: Vec<String>,
    /// Another proxy to measure in the same layout.
    pub peer: Option<Peer>,
}

/// A proxy under test besides toolgate and nginx (e.g. a peer gateway):
/// started pinned to the proxy CPU, in front of the same fast upstream.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Row label.
    pub label: String,
    /// Command line, run by `sh -c`; `{config}`, `{port}`, `{upstream_port}`
    /// and `{dir}` are replaced.
    pub command: String,
    /// Configuration template written to `{config}` with the same
    /// placeholders replaced.
    pub config: Option<PathBuf>,
    /// Port it serves MCP on (a free one is chosen when not given).
    pub port: Option<u16>,
    /// Path of its MCP endpoint.
    pub path: String,
    /// Tool name to call through it.
    pub tool: String,
    /// Bearer key to send, if it checks one.
    pub key: Option<String>,
}

/// The rows measured so far, and which rows to measure.
struct Rows {
    reports: Vec<Report>,
    only: Vec<String>,
}

impl Rows {
    fn wants(&self, label: &str) -> bool {
        // The open-loop rows run at half of the plain row's rate.
        let rate_source = label == "(b) toolgate" && self.only.iter().any(|o| o.contains("@50"));
        self.only.is_empty() || rate_source || self.only.iter().any(|o| label.contains(o.as_str()))
    }

    /// Runs `w` unless it is filtered out.
    fn run(&mut self, w: Workload) -> anyhow::Result<()> {
        if self.wants(&w.label) {
            let r = run(w)?;
            if !r.errors.is_empty() {
                println!("{}: errors {:?}", r.label, r.errors);
            }
            self.reports.push(r);
        }
        Ok(())
    }

    fn rps(&self, label: &str) -> Option<f64> {
        self.reports
            .iter()
            .find(|r| r.label == label)
            .map(Report::rps)
    }
}

/// Starts `peer` on the proxy CPU; returns it and the port it serves on.
fn start_peer(peer: &Peer, dir: &Path, up_port: u16) -> anyhow::Result<(Proc, u16)> {
    let port = match peer.port {
        Some(p) => p,
        None => free_port()?,
    };
    let config = dir.join("peer.config");
    let fill = |text: &str| {
        text.replace("{config}", &config.display().to_string())
            .replace("{port}", &port.to_string())
            .replace("{upstream_port}", &up_port.to_string())
            .replace("{dir}", &dir.display().to_string())
    };
    if let Some(template) = &peer.config {
        let text = std::fs::read_to_string(template)
            .with_context(|| format!("reading {}", template.display()))?;
        std::fs::write(&config, fill(&text))?;
    }
    let mut cmd = pinned(1, Path::new("/bin/sh"));
    cmd.arg("-c").arg(format!("exec {}", fill(&peer.command)));
    let mut p = spawn("peer", cmd, &dir.join("peer.log"))?;
    wait_port(port, &mut p)?;
    Ok((p, port))
}

struct Proc {
    child: Child,
    name: &'static str,
}

impl Drop for Proc {
    /// Asks the process to stop (SIGTERM: nginx's master then stops its
    /// workers, which a SIGKILL would orphan), and kills it after 3 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn pinned(cpu: usize, program: &Path) -> Command {
    if Path::new("/usr/bin/taskset").exists() {
        let mut c = Command::new("taskset");
        c.arg("-c").arg(cpu.to_string()).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> anyhow::Result<Proc> {
    let out = std::fs::File::create(log)?;
    let child = cmd
        .stdout(out.try_clone()?)
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Proc { child, name })
}

fn wait_port(port: u16, proc: &mut Proc) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            bail!("{} exited with {status}", proc.name);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{} did not listen on {port}", proc.name)
}

fn wait_ready(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut resp = String::new();
            let _ = std::io::Read::read_to_string(&mut s, &mut resp);
            if resp.starts_with("HTTP/1.1 200") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("toolgate not ready on {port}")
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

const KEY: &str = "tg_loadtest_key";

fn sha256_hex(s: &str) -> anyhow::Result<String> {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            if let Some(mut i) = c.stdin.take() {
                i.write_all(s.as_bytes())?;
            }
            c.wait_with_output()
        })?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned())
}

fn workload(
    label: &str,
    port: u16,
    key: Option<&str>,
    tool: &str,
    o: &Options,
    seconds: u64,
) -> Workload {
    Workload {
        label: label.to_owned(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        path: "/mcp".to_owned(),
        key: key.map(str::to_owned),
        era: Era::Stateless,
        mix: vec![(tool.to_owned(), 100, Kind::Allowed)],
        arg_bytes: o.arg_bytes,
        connections: o.connections,
        duration: Duration::from_secs(seconds),
        rate: None,
        cpu: Some(0),
        tls: None,
    }
}

/// Runs every scenario and prints the table.
pub fn compare(o: Options) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if cores < 2 {
        bail!("compare needs at least 2 CPUs (the proxy gets its own)");
    }
    let dir = std::env::temp_dir().join(format!("toolgate-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let me = std::env::current_exe()?;
    let (up_port, big_port, tg_port, ngx_port) =
        (free_port()?, free_port()?, free_port()?, free_port()?);

    let mut up = spawn(
        "upstream",
        {
            let mut c = pinned(0, &me);
            c.args(["upstream", "--listen", &format!("127.0.0.1:{up_port}")]);
            c
        },
        &dir.join("upstream.log"),
    )?;
    wait_port(up_port, &mut up)?;
    let mut big = spawn(
        "upstream-1MiB",
        {
            let mut c = pinned(0, &me);
            c.args([
                "upstream",
                "--listen",
                &format!("127.0.0.1:{big_port}"),
                "--result-bytes",
                "1048576",
            ]);
            c
        },
        &dir.join("upstream-big.log"),
    )?;
    wait_port(big_port, &mut big)?;

    // The fast upstream's REST face, as an OpenAPI upstream (`rest__echo`).
    std::fs::write(dir.join("echo.openapi.json"), ECHO_OPENAPI)?;
    let policy = dir.join("policy.cedar");
    let policy_text = "@id(\"echo-if-text\")\npermit(principal, action, resource) when { context.args has text };\n";
    std::fs::write(&policy, policy_text)?;
    // The same permit with a shadow policy evaluated on every call.
    std::fs::write(
        dir.join("shadow.cedar"),
        format!(
            "{policy_text}\n@id(\"shadow-no-never\")\n@shadow\nforbid(principal, action, resource) when {{ context.args has text && context.args.text == \"never\" }};\n"
        ),
    )?;
    // The shipped session policies beside the same permit, for the
    // sessions row (`policies/examples/session-policies/intent.cedar`).
    std::fs::write(
        dir.join("sessions.cedar"),
        format!("{policy_text}\n{SESSION_POLICIES}"),
    )?;
    // (b) plain; (b) with TLS alone; (c) everything on: TLS, JWT, output
    // rules scanning every result, two syslog sinks.
    secure::make_certificates(&dir)?;
    let signer = secure::Signer::new()?;
    std::fs::write(dir.join("jwks.json"), signer.jwks())?;
    let jwt = signer.token(&serde_json::json!({
        "iss": "https://idp.loadtest", "aud": "https://toolgate.loadtest/mcp",
        "sub": "alice", "azp": "load", "exp": 4_000_000_000u64,
    }))?;
    let (udp_port, tcp_port) = drains()?;
    let (tls_port, all_port, rules_port) = (free_port()?, free_port()?, free_port()?);
    let limits_port = free_port()?;
    let gate = |name: &str, port: u16, extra: &str| -> anyhow::Result<Proc> {
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(&cfg, toolgate_config(port, up_port, big_port, name, extra)?)?;
        let mut p = spawn(
            "toolgate",
            {
                let mut c = pinned(1, &o.toolgate);
                c.args(["run", "-c"]).arg(&cfg);
                c
            },
            &dir.join(format!("{name}.log")),
        )?;
        wait_port(port, &mut p)?;
        Ok(p)
    };
    let tls_section = "[server.tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\n";
    let tg = gate("toolgate", tg_port, "")?;
    wait_ready(tg_port)?;
    let _tg_tls = gate("toolgate-tls", tls_port, tls_section)?;
    let everything = format!(
        "{tls_section}\n[auth.jwt]\nissuer = \"https://idp.loadtest\"\naudience = \"https://toolgate.loadtest/mcp\"\njwks_file = \"jwks.json\"\n\n\
         [[audit.sinks]]\nname = \"udp\"\nkind = \"syslog\"\ntransport = \"udp\"\naddress = \"127.0.0.1:{udp_port}\"\n\n\
         [[audit.sinks]]\nname = \"tcp\"\nkind = \"syslog\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{tcp_port}\"\n\n\
         [[output_rules]]\nname = \"pii\"\ntools = [\"fast__*\"]\ndetectors = [\"card\", \"email\", \"phone\", \"iban\", \"secrets\"]\n"
    );
    let _tg_all = gate("toolgate-all", all_port, &everything)?;
    // (b) with output rules alone: the cost of scanning every result.
    let rules = "[[output_rules]]\nname = \"pii\"\ntools = [\"fast__*\"]\ndetectors = [\"card\", \"email\", \"phone\", \"iban\", \"secrets\"]\n";
    let _tg_rules = gate("toolgate-rules", rules_port, rules)?;
    // (b) with three `[limits]` rules on every call: a per-customer day
    // quota with a tool cost, a per-customer-and-tool hour quota, a
    // per-agent rate, all high enough never to refuse.
    let limits = "[limits]\n\n[[limits.rules]]\nid = \"day\"\ncustomer = \"*\"\nquota = { units = 1000000000, per = \"day\" }\ncost = { \"fast__echo\" = 2 }\n\n\
         [[limits.rules]]\nid = \"hour-per-tool\"\ncustomer = \"*\"\ntool = \"*\"\nquota = { units = 1000000000, per = \"hour\" }\n\n\
         [[limits.rules]]\nid = \"agent-rate\"\nagent = \"*\"\nrate = { calls_per_s = 1000000, burst = 1000000 }\n";
    let _tg_limits = gate("toolgate-limits", limits_port, limits)?;
    // (b) with the three shipped session policies deciding every call:
    // the echo tool labelled, every call entered in and recorded by its
    // session (all calls of the load agent are one session), Cedar with
    // `context.session` for each.
    let sessions_port = free_port()?;
    let sessions = "[tool_labels]\n\"fast__echo\" = [\"read_only\"]\n\"big__*\" = [\"reads_pii\", \"external_send\", \"money\"]\n\n\
         [sessions]\ndistinct = [\"customer_id\"]\n\n#policy: sessions.cedar\n";
    let _tg_sessions = gate("toolgate-sessions", sessions_port, sessions)?;
    // (b) with the audit log written by the audit thread alone.
    let thread_port = free_port()?;
    let _tg_thread = gate(
        "toolgate-thread",
        thread_port,
        "#audit: writer = \"thread\"\n",
    )?;
    // (b) with a shadow policy decided (never enforced) on every call.
    let shadow_port = free_port()?;
    let _tg_shadow = gate("toolgate-shadow", shadow_port, "#policy: shadow.cedar\n")?;
    let tls_client = secure::client_config(&dir.join("ca.pem"))?;
    let secure_workload = |label: &str, port: u16, key: &str, secs: u64| {
        let mut w = workload(label, port, Some(key), "fast__echo", &o, secs);
        w.tls = Some(tls_client.clone());
        w
    };

    let nginx = which("nginx");
    let mut ngx = None;
    if let Some(bin) = &nginx {
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "master_process off;\nworker_processes 1;\nworker_cpu_affinity 10;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
                 events {{ worker_connections 16384; }}\n\
                 http {{\n  access_log off;\n  keepalive_requests 10000000;\n  keepalive_timeout 120s;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n  fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n\
                 \n  upstream fast {{ server 127.0.0.1:{up_port}; keepalive 256; keepalive_requests 10000000; }}\n\
                 \n  server {{\n    listen 127.0.0.1:{ngx_port} reuseport;\n    location / {{\n      proxy_pass http://fast;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_buffering on;\n    }}\n  }}\n}}\n",
                d = dir.display()
            ),
        )?;
        let mut p = spawn(
            "nginx",
            {
                let mut c = pinned(1, bin);
                c.arg("-c").arg(&conf).arg("-p").arg(&dir);
                c
            },
            &dir.join("nginx.log"),
        )?;
        wait_port(ngx_port, &mut p)?;
        ngx = Some(p);
    }

    let mut rows = Rows {
        reports: Vec::new(),
        only: o.only.clone(),
    };
    let secs = o.seconds;
    println!("warming up…");
    let _ = run(workload("warmup", tg_port, Some(KEY), "fast__echo", &o, 1))?;
    let _ = run(secure_workload("warmup", tls_port, KEY, 1))?;
    let _ = run(secure_workload("warmup", all_port, &jwt, 1))?;
    let _ = run(workload(
        "warmup",
        rules_port,
        Some(KEY),
        "fast__echo",
        &o,
        1,
    ))?;
    rows.run(workload("(a) direct", up_port, None, "echo", &o, secs))?;
    rows.run(workload(
        "(b) toolgate",
        tg_port,
        Some(KEY),
        "fast__echo",
        &o,
        secs,
    ))?;
    rows.run(workload(
        "(b) toolgate stdio",
        tg_port,
        Some(KEY),
        "local__echo",
        &o,
        secs,
    ))?;
    rows.run(workload(
        "(b) toolgate OpenAPI",
        tg_port,
        Some(KEY),
        "rest__echo",
        &o,
        secs,
    ))?;
    rows.run(Workload {
        path: "/rest/rest/echo".to_owned(),
        era: Era::Rest,
        ..workload(
            "(b) toolgate REST door",
            tg_port,
            Some(KEY),
            "rest__echo",
            &o,
            secs,
        )
    })?;
    rows.run(secure_workload("(b) toolgate TLS", tls_port, KEY, secs))?;
    rows.run(secure_workload("(c) everything on", all_port, &jwt, secs))?;
    rows.run(workload(
        "(b) toolgate + shadow",
        shadow_port,
        Some(KEY),
        "fast__echo",
        &o,
        secs,
    ))?;
    rows.run(workload(
        "(b) toolgate + session policies",
        sessions_port,
        Some(KEY),
        "fast__echo",
        &o,
        secs,
    ))?;
    rows.run(workload(
        "(b) toolgate + 3 limits",
        limits_port,
        Some(KEY),
        "fast__echo",
        &o,
        secs,
    ))?;
    rows.run(workload(
        "(b) toolgate writer=thread",
        thread_port,
        Some(KEY),
        "fast__echo",
        &o,
        secs,
    ))?;
    rows.run(workload(
        "(b) toolgate + rules",
        rules_port,
        Some(KEY),
        "fast__echo",
        &o,
        secs,
    ))?;
    if ngx.is_some() {
        rows.run(workload("(d) nginx", ngx_port, None, "echo", &o, secs))?;
    }
    // The handshake era (a session per connection) and a mix with refusals.
    let mut hs = workload(
        "(b) toolgate handshake",
        tg_port,
        Some(KEY),
        "fast__echo",
        &o,
        secs,
    );
    hs.era = Era::Handshake;
    rows.run(hs)?;
    let mut mixed = workload(
        "(b) toolgate 10% denied",
        tg_port,
        Some(KEY),
        "fast__echo",
        &o,
        secs,
    );
    mixed.mix = vec![
        ("fast__echo".into(), 90, Kind::Allowed),
        ("fast__not_attached".into(), 10, Kind::Refused),
    ];
    rows.run(mixed)?;
    // Reload under load: the policy file is rewritten and SIGHUP sent mid-run.
    let tg_pid = tg.child.id();
    if rows.wants("toolgate + reload") {
        let reloader = {
            let policy = policy.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(secs / 2));
                let _ = std::fs::write(
                    &policy,
                    policy_text.replace("echo-if-text", "echo-if-text-v2"),
                );
                let _ = Command::new("kill")
                    .args(["-HUP", &tg_pid.to_string()])
                    .status();
            })
        };
        rows.run(workload(
            "toolgate + reload",
            tg_port,
            Some(KEY),
            "fast__echo",
            &o,
            secs,
        ))?;
        let _ = reloader.join();
    }
    // Latency at a given load: open loop at half of toolgate's closed-loop
    // throughput, the same rate against the upstream directly and nginx.
    if let Some(t) = rows.rps("(b) toolgate") {
        let rate = (t / 2.0).max(100.0);
        let open = |label: &str, port: u16, key: Option<&str>, tool: &str| {
            let mut w = workload(label, port, key, tool, &o, secs);
            w.rate = Some(rate);
            w
        };
        rows.run(open("(a) direct @50%", up_port, None, "echo"))?;
        rows.run(open("(b) toolgate @50%", tg_port, Some(KEY), "fast__echo"))?;
        rows.run(open(
            "(b) toolgate writer=thread @50%",
            thread_port,
            Some(KEY),
            "fast__echo",
        ))?;
        if ngx.is_some() {
            rows.run(open("(d) nginx @50%", ngx_port, None, "echo"))?;
        }
        println!("open-loop rate for the @50% rows: {rate:.0} req/s");
    }
    // What one agent feels: one connection, one call at a time.
    let single = |label: &str, port: u16, key: Option<&str>, tool: &str| Workload {
        connections: 1,
        ..workload(label, port, key, tool, &o, secs)
    };
    rows.run(single("(a) direct 1 conn", up_port, None, "echo"))?;
    rows.run(single(
        "(b) toolgate 1 conn",
        tg_port,
        Some(KEY),
        "fast__echo",
    ))?;
    rows.run(single(
        "(b) toolgate writer=thread 1 conn",
        thread_port,
        Some(KEY),
        "fast__echo",
    ))?;
    if ngx.is_some() {
        rows.run(single("(d) nginx 1 conn", ngx_port, None, "echo"))?;
    }
    // A peer proxy under test, in the same layout as toolgate and nginx.
    let _peer = match &o.peer {
        Some(peer) => {
            let (proc, port) = start_peer(peer, &dir, up_port)?;
            let label = format!("(e) {}", peer.label);
            let mut w = workload(&label, port, peer.key.as_deref(), &peer.tool, &o, secs);
            w.path.clone_from(&peer.path);
            let _ = run(Workload {
                duration: Duration::from_secs(1),
                ..w.clone()
            })?;
            rows.run(w)?;
            let mut w = single(
                &format!("{label} 1 conn"),
                port,
                peer.key.as_deref(),
                &peer.tool,
            );
            w.path.clone_from(&peer.path);
            rows.run(w)?;
            Some(proc)
        }
        None => None,
    };
    let large = Options {
        arg_bytes: 64,
        connections: 4,
        ..o_clone(&o)
    };
    rows.run(workload(
        "(a) direct 1MiB",
        big_port,
        None,
        "echo",
        &large,
        secs,
    ))?;
    rows.run(workload(
        "(b) toolgate 1MiB",
        tg_port,
        Some(KEY),
        "big__echo",
        &large,
        secs,
    ))?;

    let reports = rows.reports;
    println!("\n{}", Report::header());
    for r in &reports {
        println!("{}", r.row());
    }
    let rps = |label: &str| reports.iter().find(|r| r.label == label).map(Report::rps);
    let p50 = |label: &str| {
        reports
            .iter()
            .find(|r| r.label == label)
            .map(|r| r.hist.value_at_quantile(0.5))
    };
    println!();
    if let (Some(t), Some(d)) = (rps("(b) toolgate"), rps("(a) direct")) {
        println!("toolgate / direct req/s: {:.2}", t / d);
    }
    if let (Some(t), Some(n)) = (rps("(b) toolgate"), rps("(d) nginx")) {
        println!("toolgate / nginx req/s:  {:.2}", t / n);
    }
    // Each variant against the plain toolgate row of the same run.
    for (label, what) in [
        ("(b) toolgate stdio", "stdio upstream / HTTP upstream"),
        ("(b) toolgate OpenAPI", "OpenAPI upstream / MCP upstream"),
        ("(b) toolgate REST door", "REST door / MCP door"),
        ("(b) toolgate + shadow", "shadow policy on / off"),
        (
            "(b) toolgate + session policies",
            "session policies on / off",
        ),
        ("(b) toolgate + 3 limits", "3 limits on / off"),
        ("(b) toolgate + rules", "output rules on / off"),
        ("(b) toolgate writer=thread", "audit writer thread / shards"),
        ("(b) toolgate TLS", "toolgate TLS / plain"),
    ] {
        if let (Some(r), Some(p)) = (rps(label), rps("(b) toolgate")) {
            println!("{what} req/s: {:.2}", r / p);
        }
    }
    if let (Some(c), Some(b), Some(n)) = (
        rps("(c) everything on"),
        rps("(b) toolgate"),
        rps("(d) nginx"),
    ) {
        println!(
            "everything on / typical: {:.2}; everything on / nginx: {:.2}",
            c / b,
            c / n
        );
    }
    if let (Some(t), Some(d)) = (p50("(b) toolgate"), p50("(a) direct")) {
        println!(
            "toolgate p50 added over direct: {} µs (closed loop, {} connections)",
            t.saturating_sub(d),
            o.connections
        );
    }
    if let (Some(t), Some(d)) = (
        reports
            .iter()
            .find(|r| r.label == "(b) toolgate @50%")
            .map(|r| r.hist.value_at_quantile(0.99)),
        reports
            .iter()
            .find(|r| r.label == "(a) direct @50%")
            .map(|r| r.hist.value_at_quantile(0.99)),
    ) {
        println!(
            "toolgate p99 added over direct at half of saturation: {} µs",
            t.saturating_sub(d)
        );
    }
    let quantile = |label: &str, q: f64| {
        reports
            .iter()
            .find(|r| r.label == label)
            .map(|r| r.hist.value_at_quantile(q))
    };
    for (proxy, direct, what) in [
        (
            "(d) nginx @50%",
            "(a) direct @50%",
            "nginx at toolgate's half saturation",
        ),
        (
            "(b) toolgate 1 conn",
            "(a) direct 1 conn",
            "toolgate at 1 connection",
        ),
        (
            "(b) toolgate writer=thread 1 conn",
            "(a) direct 1 conn",
            "toolgate (writer = thread) at 1 connection",
        ),
        (
            "(b) toolgate writer=thread @50%",
            "(a) direct @50%",
            "toolgate (writer = thread) at half of its saturation",
        ),
        (
            "(d) nginx 1 conn",
            "(a) direct 1 conn",
            "nginx at 1 connection",
        ),
    ] {
        if let (Some(p50), Some(p99), Some(d50), Some(d99)) = (
            quantile(proxy, 0.5),
            quantile(proxy, 0.99),
            quantile(direct, 0.5),
            quantile(direct, 0.99),
        ) {
            println!(
                "{what}: added over direct p50 {} µs, p99 {} µs",
                p50.saturating_sub(d50),
                p99.saturating_sub(d99)
            );
        }
    }
    if let Some(peer) = &o.peer {
        let label = format!("(e) {}", peer.label);
        if let (Some(t), Some(p)) = (rps("(b) toolgate"), rps(&label)) {
            println!("toolgate / {} req/s: {:.2}", peer.label, t / p.max(1e-9));
        }
        if let (Some(c), Some(p)) = (rps("(c) everything on"), rps(&label)) {
            println!(
                "everything on / {} req/s: {:.2}",
                peer.label,
                c / p.max(1e-9)
            );
        }
    }
    if nginx.is_none() {
        println!("(nginx not installed: scenario (d) skipped; `apt-get install nginx`)");
    }
    let mut json = serde_json::json!({"connections": o.connections, "seconds": secs, "arg_bytes": o.arg_bytes,
        "scenarios": reports.iter().map(Report::json).collect::<Vec<_>>()});

    if o.idle > 0 {
        let before = rss_kib(tg_pid).unwrap_or(0);
        let mut idle = Vec::with_capacity(o.idle);
        for _ in 0..o.idle {
            match TcpStream::connect(("127.0.0.1", tg_port)) {
                Ok(s) => idle.push(s),
                Err(e) => {
                    println!("idle connections: stopped at {} ({e})", idle.len());
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_secs(2));
        let after = rss_kib(tg_pid).unwrap_or(0);
        let per = (after.saturating_sub(before) * 1024) / (idle.len().max(1) as u64);
        println!(
            "idle connections: {} held, toolgate RSS {} KiB -> {} KiB, {} bytes per connection",
            idle.len(),
            before,
            after,
            per
        );
        json["idle"] = serde_json::json!({"connections": idle.len(), "rss_before_kib": before, "rss_after_kib": after, "bytes_per_connection": per});
    }
    if let Some(path) = &o.json {
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)?;
        println!("results written to {}", path.display());
    }
    drop(ngx);
    drop(tg);
    drop(big);
    drop(up);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The fast upstream's `POST /echo` as an OpenAPI document.
const ECHO_OPENAPI: &str = r#"{"openapi":"3.1.0","info":{"title":"echo","version":"1"},"paths":{"/echo":{"post":{
  "operationId":"echo","summary":"load test",
  "requestBody":{"required":true,"content":{"application/json":{"schema":{"type":"object",
    "required":["text"],"properties":{"text":{"type":"string"}}}}}}}}}}"#;

/// The session policies of `policies/examples/session-policies/intent.cedar`.
const SESSION_POLICIES: &str =
    include_str!("../../policies/examples/session-policies/intent.cedar");

/// A toolgate configuration for the comparison: one shard, both fast
/// upstreams, the load agent, a Cedar policy evaluated per call, the audit
/// log in `audit-<name>`; `extra` adds sections (TLS, JWT, sinks, rules),
/// a line `#policy: FILE` in it replaces the policy file, and lines
/// `#audit: KEY = VALUE` go into `[audit]`.
fn toolgate_config(
    port: u16,
    up_port: u16,
    big_port: u16,
    name: &str,
    extra: &str,
) -> anyhow::Result<String> {
    let policy = extra
        .lines()
        .find_map(|l| l.strip_prefix("#policy: "))
        .unwrap_or("policy.cedar");
    // `#audit: key = value` lines go into the `[audit]` section.
    let audit: String = extra
        .lines()
        .filter_map(|l| l.strip_prefix("#audit: "))
        .map(|l| format!("{l}\n"))
        .collect();
    // The same echo server over stdio, run by toolgate in its sandbox, on
    // the upstreams' CPU like the HTTP one.
    let me = std::env::current_exe()?;
    let dir = me
        .parent()
        .ok_or_else(|| anyhow::anyhow!("the load generator's directory"))?;
    let stdio = if Path::new("/usr/bin/taskset").exists() {
        format!(
            "[\"/usr/bin/taskset\", \"-c\", \"0\", \"{}\", \"stdio-upstream\"]",
            me.display()
        )
    } else {
        format!("[\"{}\", \"stdio-upstream\"]", me.display())
    };
    Ok(format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nshards = 1\nmax_body_bytes = 4194304\n\n\
         [[upstreams]]\nname = \"local\"\nkind = \"stdio\"\ncommand = {stdio}\n[upstreams.sandbox]\nread_only = [\"{}\"]\n\n\
         [[upstreams]]\nname = \"fast\"\nurl = \"http://127.0.0.1:{up_port}/mcp\"\n\n\
         [[upstreams]]\nname = \"big\"\nurl = \"http://127.0.0.1:{big_port}/mcp\"\nmax_response_bytes = 4194304\n\n\
         [[upstreams]]\nname = \"rest\"\nkind = \"openapi\"\nspec = \"echo.openapi.json\"\nbase_url = \"http://127.0.0.1:{up_port}\"\n\n\
         [[agents]]\nid = \"load\"\napi_key_sha256 = \"{}\"\ntools = [\"fast__echo\", \"big__echo\", \"rest__echo\", \"local__echo\"]\n\n\
         [policies]\nfiles = [\"{policy}\"]\nwatch = false\n\n[audit]\ndir = \"audit-{name}\"\n{audit}\n[log]\nlevel = \"warn\"\n\n{extra}",
        dir.display(),
        sha256_hex(KEY)?
    ))
}

/// Collectors for the syslog sinks that read and discard: a UDP socket and
/// a TCP listener, each drained by its own thread; returns their ports.
fn drains() -> anyhow::Result<(u16, u16)> {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let udp_port = udp.local_addr()?.port();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while udp.recv(&mut buf).is_ok() {}
    });
    let tcp = TcpListener::bind("127.0.0.1:0")?;
    let tcp_port = tcp.local_addr()?.port();
    std::thread::spawn(move || {
        for mut conn in tcp.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut conn, &mut std::io::sink());
            });
        }
    });
    Ok((udp_port, tcp_port))
}

fn o_clone(o: &Options) -> Options {
    Options {
        toolgate: o.toolgate.clone(),
        seconds: o.seconds,
        connections: o.connections,
        arg_bytes: o.arg_bytes,
        idle: o.idle,
        json: None,
        only: o.only.clone(),
        peer: None,
    }
}

fn which(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}
