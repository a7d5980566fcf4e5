//! The egress proxy of a sandbox with `allow_hosts`: how a confined stdio
//! server reaches the named hosts, and nothing else.
//!
//! The process keeps its own, empty network namespace. Before the server
//! starts, a helper inside the sandbox (`toolgate sandbox-exec`, the
//! toolgate binary mounted read-only) opens a listening socket on the
//! namespace's loopback and hands it to toolgate over an inherited Unix
//! socket (`SCM_RIGHTS`); then it puts the proxy's address in the usual
//! variables (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`…) and becomes the
//! server. toolgate accepts on that socket from outside the namespace, so
//! every connection the server opens to it arrives here, is checked
//! against `allow_hosts` by the name it asks for, and only then connected
//! from toolgate's own network. No relay process stays in the sandbox, and
//! the sandbox gains no route: a program that ignores the proxy variables
//! has no network at all.
//!
//! The proxy speaks HTTP/1.1 `CONNECT host:port` (HTTPS and any other TLS
//! or TCP protocol, tunnelled as bytes) and absolute-form `http://` requests
//! (one origin per connection: what follows on that connection goes to the
//! same host).

use std::ffi::OsString;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use toolgate_core::host_rule::{split_port, HostRule, PROXY_VARS};

/// The descriptor the helper finds its channel to toolgate on.
pub const EGRESS_FD: RawFd = 3;

/// Where the toolgate binary is mounted inside the sandbox.
pub const EXEC_PATH: &str = "/run/toolgate/toolgate";

/// The binary's hidden subcommand that runs the helper.
pub const EXEC_SUBCOMMAND: &str = "sandbox-exec";

/// Connections through the proxy at once, per process; more are answered
/// 503 (each takes two threads).
const MAX_TUNNELS: usize = 32;

/// A request head larger than this is refused (431).
const MAX_HEAD: usize = 8 * 1024;

/// For the request head to arrive.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// For the allowed host to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A tunnel direction idle this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Connections the proxy let through and refused, for metrics.
#[derive(Debug, Default)]
pub struct EgressCounts {
    /// Connected to an allowed host.
    pub allowed: AtomicU64,
    /// Refused: a host not allowed, or a request the proxy does not take.
    pub refused: AtomicU64,
}

/// Why the helper could not start the server.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// Started by hand, or without its channel.
    #[error("`toolgate {EXEC_SUBCOMMAND}` runs inside a stdio upstream's sandbox, started by toolgate with its channel on descriptor {EGRESS_FD}; it is not for direct use")]
    NoChannel,
    /// No program after the subcommand.
    #[error("usage: toolgate {EXEC_SUBCOMMAND} PROGRAM [ARGS...]")]
    Usage,
    /// A socket call failed.
    #[error("egress proxy socket: {0}")]
    Io(#[from] io::Error),
}

/// The helper, run as the sandbox's first program: opens the proxy's
/// listening socket on the sandbox's loopback, hands it to toolgate, sets
/// the proxy variables and executes `args` (the server's command line).
/// Returns only when that fails.
pub fn sandbox_exec(args: &[OsString]) -> ExecError {
    match exec(args) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

#[allow(unsafe_code)]
fn exec(args: &[OsString]) -> Result<std::convert::Infallible, ExecError> {
    let (program, rest) = args.split_first().ok_or(ExecError::Usage)?;
    // SAFETY: `fcntl(F_GETFD)` only reads the descriptor's flags; it fails
    // when nothing is open there.
    if unsafe { libc::fcntl(EGRESS_FD, libc::F_GETFD) } < 0 {
        return Err(ExecError::NoChannel);
    }
    // SAFETY: descriptor 3 is open (checked above) and nothing else in this
    // process owns it: toolgate put its end of the channel there.
    let channel = unsafe { OwnedFd::from_raw_fd(EGRESS_FD) };
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let port = listener.local_addr()?.port();
    nix::sys::socket::sendmsg::<nix::sys::socket::UnixAddr>(
        channel.as_raw_fd(),
        &[IoSlice::new(b"L")],
        &[nix::sys::socket::ControlMessage::ScmRights(&[
            listener.as_raw_fd()
        ])],
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .map_err(io::Error::from)?;
    drop(channel);
    drop(listener);
    let url = format!("http://127.0.0.1:{port}");
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest);
    for var in PROXY_VARS {
        match *var {
            "NO_PROXY" | "no_proxy" => cmd.env_remove(var),
            "NODE_USE_ENV_PROXY" => cmd.env(var, "1"),
            _ => cmd.env(var, &url),
        };
    }
    Err(ExecError::Io(cmd.exec()))
}

/// The channel a sandbox's helper sends the proxy's socket over: toolgate
/// keeps one end, the process inherits the other on [`EGRESS_FD`].
pub struct Channel {
    ours: UnixStream,
    theirs: UnixStream,
}

impl Channel {
    /// A new pair (both ends close-on-exec; the child's is duplicated onto
    /// [`EGRESS_FD`] between fork and exec, which clears the flag there).
    pub fn new() -> io::Result<Self> {
        let (ours, theirs) = UnixStream::pair()?;
        Ok(Self { ours, theirs })
    }

    /// The descriptor to hand the child.
    pub fn child_fd(&self) -> RawFd {
        self.theirs.as_raw_fd()
    }

    /// Once the child is started: closes toolgate's copy of the child's end
    /// (so the channel ends when the sandbox does) and serves the proxy
    /// for upstream `name` until [`Egress`] is dropped.
    pub fn serve(
        self,
        name: &Arc<str>,
        rules: Arc<[HostRule]>,
        counts: Arc<EgressCounts>,
    ) -> io::Result<Egress> {
        let Self { ours, theirs } = self;
        drop(theirs);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                stopped: false,
                listener: None,
                channel: Some(ours.try_clone()?),
            }),
        });
        let thread = std::thread::Builder::new()
            .name(format!("toolgate-stdio-{name}-egress"))
            .spawn({
                let (name, shared) = (Arc::clone(name), Arc::clone(&shared));
                move || accept_loop(&name, ours, &shared, rules, counts)
            })?;
        Ok(Egress {
            shared,
            thread: Some(thread),
        })
    }
}

/// A running egress proxy; dropping it stops accepting (tunnels already
/// open end with their connections, which the sandbox's end closes when
/// its process goes).
pub struct Egress {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
}

struct State {
    stopped: bool,
    listener: Option<TcpListener>,
    channel: Option<UnixStream>,
}

impl Drop for Egress {
    fn drop(&mut self) {
        {
            let mut st = self
                .shared
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            st.stopped = true;
            // Shutting a socket down wakes a thread blocked on it: the
            // receive of the listener, or `accept`.
            if let Some(c) = st.channel.take() {
                let _ = c.shutdown(Shutdown::Both);
            }
            if let Some(l) = st.listener.take() {
                shutdown_listener(&l);
            }
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[allow(unsafe_code)]
fn shutdown_listener(l: &TcpListener) {
    // SAFETY: `shutdown` on a descriptor the listener owns; on Linux it
    // makes a blocked `accept` return `EINVAL`.
    unsafe {
        libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR);
    }
}

fn accept_loop(
    name: &Arc<str>,
    channel: UnixStream,
    shared: &Shared,
    rules: Arc<[HostRule]>,
    counts: Arc<EgressCounts>,
) {
    let listener = match receive_listener(&channel) {
        Ok(Some(l)) => l,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(upstream = %name, error = %e, "stdio egress proxy: no socket from the sandbox");
            return;
        }
    };
    drop(channel);
    {
        let mut st = shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if st.stopped {
            return;
        }
        match listener.try_clone() {
            Ok(l) => st.listener = Some(l),
            Err(e) => {
                tracing::warn!(upstream = %name, error = %e, "stdio egress proxy cannot start");
                return;
            }
        }
    }
    tracing::debug!(upstream = %name, "stdio egress proxy serving its sandbox");
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        match listener.accept() {
            Ok((mut client, _)) => {
                if active.load(Ordering::Relaxed) >= MAX_TUNNELS {
                    counts.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(upstream = %name, limit = MAX_TUNNELS, "stdio egress proxy: too many connections at once; refused one");
                    let _ = answer(
                        &mut client,
                        503,
                        "too many connections through the egress proxy at once",
                    );
                    continue;
                }
                active.fetch_add(1, Ordering::Relaxed);
                let (tunnel_name, rules, counts, active) = (
                    Arc::clone(name),
                    Arc::clone(&rules),
                    Arc::clone(&counts),
                    Arc::clone(&active),
                );
                let spawned = std::thread::Builder::new()
                    .name(format!("toolgate-stdio-{name}-tunnel"))
                    .spawn(move || {
                        proxy(&tunnel_name, &rules, client, &counts);
                        active.fetch_sub(1, Ordering::Relaxed);
                    });
                if spawned.is_err() {
                    tracing::warn!(upstream = %name, "stdio egress proxy: cannot start a thread; connection dropped");
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) => {}
            Err(e) => {
                tracing::warn!(upstream = %name, error = %e, "stdio egress proxy: accept failed");
                std::thread::sleep(Duration::from_millis(100));
                let st = shared
                    .state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if st.stopped {
                    return;
                }
            }
        }
    }
}

/// Waits for the helper's socket; `None` when the channel closes first
/// (the process ended, or toolgate is stopping it).
fn receive_listener(channel: &UnixStream) -> io::Result<Option<TcpListener>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let msg = recvmsg::<UnixAddr>(
        channel.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let mut listener = None;
    for c in msg.cmsgs() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                #[allow(unsafe_code)]
                // SAFETY: the kernel just installed `fd` in this process
                // for this message; nothing else knows it.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if listener.is_none() {
                    listener = Some(TcpListener::from(owned));
                }
            }
        }
    }
    if let Some(l) = &listener {
        l.set_nonblocking(false)?;
    }
    Ok(listener)
}

/// What the sandboxed process asked the proxy for.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// `CONNECT`: a tunnel of bytes. Otherwise a plain-HTTP request.
    tunnel: bool,
    host: String,
    port: u16,
    /// For plain HTTP: the request line to send the origin.
    request_line: String,
}

/// Reads a request's target: `CONNECT host:port`, or an absolute-form
/// `http://` URL. The error is the answer's text.
fn target(method: &str, uri: &str, version: u8) -> Result<Target, &'static str> {
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = authority(uri, None)?;
        return Ok(Target {
            tunnel: true,
            host,
            port,
            request_line: String::new(),
        });
    }
    let Some(rest) = uri
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("http://"))
        .map(|_| &uri[7..])
    else {
        return Err("this is toolgate's egress proxy: send `CONNECT host:port` (HTTPS) or an absolute `http://` URL");
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (auth, path) = rest.split_at(end);
    let (host, port) = authority(auth, Some(80))?;
    let path = match path.as_bytes().first() {
        None => "/".to_owned(),
        Some(b'/') => path.to_owned(),
        Some(_) => format!("/{path}"),
    };
    Ok(Target {
        tunnel: false,
        host,
        port,
        request_line: format!("{method} {path} HTTP/1.{version}\r\n"),
    })
}

fn authority(auth: &str, default_port: Option<u16>) -> Result<(String, u16), &'static str> {
    const BAD: &str = "the request's host is malformed";
    if auth.contains('@') {
        return Err("credentials in the URL are not taken");
    }
    let (host, port) = split_port(auth).ok_or(BAD)?;
    let port = match (port, default_port) {
        (Some(p), _) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or(BAD)?,
        (None, Some(d)) => d,
        (None, None) => return Err("CONNECT needs host:port"),
    };
    if host.is_empty() {
        return Err(BAD);
    }
    Ok((host.to_owned(), port))
}

/// Serves one connection from the sandbox: reads its request, refuses it
/// or connects it, then relays bytes both ways until either side closes
/// or stays idle for [`IDLE_TIMEOUT`].
fn proxy(name: &str, rules: &[HostRule], mut client: TcpStream, counts: &EgressCounts) {
    let refuse = |client: &mut TcpStream, status: u16, why: &str| {
        counts.refused.fetch_add(1, Ordering::Relaxed);
        let _ = answer(client, status, why);
    };
    if client.set_read_timeout(Some(HEAD_TIMEOUT)).is_err() {
        return;
    }
    let mut buf = vec![0u8; MAX_HEAD];
    let mut n = 0;
    let (head_len, target) = loop {
        match client.read(&mut buf[n..]) {
            Ok(0) | Err(_) => return,
            Ok(r) => n += r,
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..n]) {
            Ok(httparse::Status::Complete(len)) => {
                let t = target(
                    req.method.unwrap_or(""),
                    req.path.unwrap_or(""),
                    req.version.unwrap_or(1),
                );
                match t {
                    Ok(t) => break (len, t),
                    Err(why) => return refuse(&mut client, 400, why),
                }
            }
            Ok(httparse::Status::Partial) if n == buf.len() => {
                return refuse(&mut client, 431, "the request head is too large")
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => return refuse(&mut client, 400, "malformed HTTP request"),
        }
    };
    let (host, port) = (target.host.as_str(), target.port);
    if !rules.iter().any(|r| r.allows(host, port)) {
        tracing::warn!(
            upstream = name,
            host,
            port,
            "stdio egress refused: host not in sandbox.allow_hosts"
        );
        let why = format!("{host}:{port} is not in sandbox.allow_hosts of upstream `{name}`");
        return refuse(&mut client, 403, &why);
    }
    let mut server = match connect(host, port) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(upstream = name, host, port, error = %e, "stdio egress: allowed host unreachable");
            let why = format!("{host}:{port} cannot be reached: {e}");
            return refuse(&mut client, 502, &why);
        }
    };
    counts.allowed.fetch_add(1, Ordering::Relaxed);
    tracing::info!(upstream = name, host, port, peer = ?server.peer_addr().ok(), "stdio egress connected");
    let sent = if target.tunnel {
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .and_then(|()| server.write_all(&buf[head_len..n]))
    } else {
        // The request line rewritten to origin form; the rest as sent.
        let line_end = buf[..n]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(n, |i| i + 1);
        let mut head = target.request_line.into_bytes();
        head.extend_from_slice(&buf[line_end..n]);
        server.write_all(&head)
    };
    if sent.is_err() {
        return;
    }
    relay(client, server);
}

/// Connects to the first address of `host` that answers.
fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = with_addr(e, addr),
        }
    }
    Err(last)
}

fn with_addr(e: io::Error, addr: SocketAddr) -> io::Error {
    io::Error::new(e.kind(), format!("{addr}: {e}"))
}

/// Copies both ways; each direction's end closes the other side's writing.
fn relay(client: TcpStream, server: TcpStream) {
    let _ = client.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = server.set_read_timeout(Some(IDLE_TIMEOUT));
    let (Ok(mut client_in), Ok(mut server_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = std::thread::Builder::new().spawn(move || {
        let _ = io::copy(&mut client_in, &mut server_out);
        let _ = server_out.shutdown(Shutdown::Write);
    });
    let (mut server_in, mut client_out) = (server, client);
    let _ = io::copy(&mut server_in, &mut client_out);
    let _ = client_out.shutdown(Shutdown::Write);
    match up {
        Ok(t) => {
            let _ = t.join();
        }
        Err(_) => {
            let _ = server_in.shutdown(Shutdown::Both);
        }
    }
}

/// A short plain-text answer, then the connection closes.
fn answer(client: &mut TcpStream, status: u16, why: &str) -> io::Result<()> {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        _ => "Service Unavailable",
    };
    let body = format!("toolgate egress proxy: {why}\n");
    write!(
        client,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    client.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_connect_authorities_or_absolute_http_urls() {
        let t = target("CONNECT", "api.example.com:443", 1).unwrap();
        assert!(t.tunnel);
        assert_eq!((t.host.as_str(), t.port), ("api.example.com", 443));
        let t = target("CONNECT", "[::1]:8443", 1).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8443));
        let t = target("GET", "HTTP://Example.com?q=1", 1).unwrap();
        assert!(!t.tunnel);
        assert_eq!((t.host.as_str(), t.port), ("Example.com", 80));
        assert_eq!(t.request_line, "GET /?q=1 HTTP/1.1\r\n");
        let t = target("POST", "http://localhost:8080/a/b", 0).unwrap();
        assert_eq!(t.port, 8080);
        assert_eq!(t.request_line, "POST /a/b HTTP/1.0\r\n");
        for (m, uri) in [
            ("CONNECT", "api.example.com"),
            ("CONNECT", "host:0"),
            ("GET", "/path"),
            ("GET", "https://api.example.com/"),
            ("GET", "http://user:pw@api.example.com/"),
            ("GET", "http://:80/"),
            ("GET", "http://[::1/"),
        ] {
            assert!(target(m, uri, 1).is_err(), "{m} {uri} was taken");
        }
    }

    /// The proxy's decisions over real sockets: an allowed host is
    /// connected both ways, another host is refused with 403 and never
    /// connected.
    #[test]
    fn allowed_hosts_are_relayed_and_others_refused() {
        let origin = TcpListener::bind("127.0.0.1:0").unwrap();
        let origin_port = origin.local_addr().unwrap().port();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let other_port = other.local_addr().unwrap().port();
        other.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            for s in origin.incoming().take(2) {
                let mut s = s.unwrap();
                let mut got = Vec::new();
                let mut b = [0u8; 256];
                // One message: `ping`, or an HTTP head.
                while !(got.ends_with(b"ping") || got.ends_with(b"\r\n\r\n")) {
                    let n = s.read(&mut b).unwrap();
                    assert!(n > 0, "the proxy closed early");
                    got.extend_from_slice(&b[..n]);
                }
                let mut reply = b"echo:".to_vec();
                reply.extend_from_slice(&got);
                s.write_all(&reply).unwrap();
            }
        });
        let proxy_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy_addr = proxy_listener.local_addr().unwrap();
        let rules: Arc<[HostRule]> =
            vec![HostRule::parse(&format!("127.0.0.1:{origin_port}")).unwrap()].into();
        let counts = Arc::new(EgressCounts::default());
        {
            let (rules, counts) = (Arc::clone(&rules), Arc::clone(&counts));
            std::thread::spawn(move || {
                for s in proxy_listener.incoming().take(4) {
                    proxy("t", &rules, s.unwrap(), &counts);
                }
            });
        }
        let exchange = |request: String| {
            let mut c = TcpStream::connect(proxy_addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c.write_all(request.as_bytes()).unwrap();
            let mut out = Vec::new();
            let _ = c.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        };
        let tunnel = exchange(format!(
            "CONNECT 127.0.0.1:{origin_port} HTTP/1.1\r\n\r\nping"
        ));
        assert!(
            tunnel.starts_with("HTTP/1.1 200 Connection established\r\n\r\necho:ping"),
            "{tunnel}"
        );
        let plain = exchange(format!(
            "GET http://127.0.0.1:{origin_port}/x HTTP/1.1\r\nhost: a\r\n\r\n"
        ));
        assert_eq!(plain, "echo:GET /x HTTP/1.1\r\nhost: a\r\n\r\n");
        let refused = exchange(format!("CONNECT 127.0.0.1:{other_port} HTTP/1.1\r\n\r\n"));
        assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
        assert!(refused.contains("not in sandbox.allow_hosts"), "{refused}");
        assert!(other.accept().is_err(), "the refused host was connected to");
        let bad = exchange("GET /local HTTP/1.1\r\n\r\n".into());
        assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
        assert_eq!(counts.allowed.load(Ordering::Relaxed), 2);
        assert_eq!(counts.refused.load(Ordering::Relaxed), 2);
    }
}
