//! A stdio upstream's process, shared by every shard: started in its
//! sandbox, its MCP handshake done once, calls from all shards multiplexed
//! over its stdin and stdout, watched by pings, restarted with backoff.
//!
//! One supervisor thread per upstream owns the child and the table of
//! calls waiting on it; per process it runs a writer (stdin), a reader
//! (stdout) and a stderr thread. Shards never block: a call is a bounded
//! channel send and an awaited slot. Ids on the wire are toolgate's own
//! (one counter per upstream), so answers route back whatever the agents'
//! ids were. Nothing here grows without bound: calls in flight, queued
//! lines, an answer's size and stderr's log lines all have limits.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use simd_json::prelude::*;
use toolgate_core::config::{StdioEnv, StdioSpec};
use toolgate_core::host_rule::HostRule;
use toolgate_core::jsonrpc::{write_str, JsonParser};
use toolgate_core::secret::Secret;

use super::egress::{Channel, Egress, EgressCounts};
use super::sandbox;
use crate::watch::{progress_token, unless_cancelled, Progress, Watch};
use crate::UpstreamError;

/// First wait before a restart; doubled per exit, up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Exits within [`LOOP_WINDOW`] that make the upstream unhealthy.
const LOOP_EXITS: usize = 5;
/// The window counted for a crash loop; a process up this long resets the
/// backoff and the count.
const LOOP_WINDOW: Duration = Duration::from_secs(60);
/// Time allowed for the answer to `initialize`.
const INIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for the answer to a ping.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// stderr lines logged per second per upstream (a burst of twice that).
const STDERR_LINES_PER_S: u32 = 20;
/// Longest stderr line logged, bytes (the rest is cut).
const STDERR_LINE_MAX: usize = 512;

/// The wire id of the handshake and of pings (calls have numbers).
const INIT_ID: &str = "toolgate-initialize";
const PING_ID: &str = "toolgate-ping";

/// How a stdio upstream stands, for readiness and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// The process is running and answered the handshake.
    pub up: bool,
    /// It exited [`LOOP_EXITS`] times within a minute (a crash loop).
    pub unhealthy: bool,
    /// Restarts since toolgate started.
    pub restarts: u64,
    /// The process id on the host (of bubblewrap when sandboxed), 0 when down.
    pub pid: u32,
}

/// One stdio upstream's process, as every shard calls it.
pub struct Process {
    inner: Arc<Inner>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

struct Inner {
    name: Arc<str>,
    tx: SyncSender<Msg>,
    next_id: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: usize,
    up: AtomicBool,
    /// Its first process is starting: calls wait for it rather than fail.
    starting: AtomicBool,
    unhealthy: AtomicBool,
    restarts: AtomicU64,
    pid: AtomicU32,
    /// How many `notifications/*/list_changed` the server has sent.
    list_changes: AtomicU64,
}

/// Progress messages held for a call before its shard takes them; more
/// are dropped (a later one says more than an earlier one).
const MAX_HELD_PROGRESS: usize = 16;

/// Where one call's answer lands, and its progress on the way.
#[derive(Default)]
struct Slot {
    reply: OnceLock<Result<Vec<u8>, UpstreamError>>,
    /// The call's progress messages not yet taken (only for a call that
    /// asked for progress).
    progress: Option<Mutex<VecDeque<Vec<u8>>>>,
    waker: AtomicWaker,
}

impl Slot {
    fn finish(&self, r: Result<Vec<u8>, UpstreamError>) {
        if self.reply.set(r).is_ok() {
            self.waker.wake();
        }
    }

    /// Holds a progress message for the call (dropped if it did not ask
    /// for progress, or holds [`MAX_HELD_PROGRESS`] already).
    fn progress(&self, message: Vec<u8>) {
        let Some(held) = &self.progress else {
            return;
        };
        {
            let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
            if held.len() >= MAX_HELD_PROGRESS {
                return;
            }
            held.push_back(message);
        }
        self.waker.wake();
    }

    /// Waits until the answer has landed, handing each progress message
    /// to `taker` as it comes.
    async fn ready(&self, taker: Option<Progress<'_>>) {
        poll_fn(|cx| {
            self.waker.register(cx.waker());
            if let (Some(held), Some(take)) = (&self.progress, taker) {
                let taken: Vec<Vec<u8>> = held
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .drain(..)
                    .collect();
                for m in taken {
                    take(&m);
                }
            }
            match self.reply.get() {
                Some(_) => Poll::Ready(()),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// The answer, once [`Slot::ready`]: moved out when the supervisor has
    /// let go of the slot (it does right after finishing it), copied only
    /// if it has not yet.
    fn take(self: Arc<Self>) -> Result<Vec<u8>, UpstreamError> {
        match Arc::try_unwrap(self) {
            Ok(slot) => slot.reply.into_inner(),
            Err(shared) => shared.reply.get().cloned(),
        }
        .unwrap_or(Err(UpstreamError::Unavailable))
    }
}

/// A message's id as the reader sees it.
enum Id {
    Call(u64),
    Init,
    Ping,
}

enum Msg {
    /// A call from a shard: its wire line and slot.
    Call {
        id: u64,
        line: Vec<u8>,
        slot: Arc<Slot>,
    },
    /// A shard stopped waiting: the reason the server is told.
    Cancel(u64, &'static str),
    /// A progress message read from process `generation` for call `id`.
    Progress {
        generation: u64,
        id: u64,
        message: Vec<u8>,
    },
    /// An answer read from process `generation`.
    Reply {
        generation: u64,
        id: Id,
        ok: bool,
        message: Vec<u8>,
    },
    /// Process `generation`'s stdout or stdin is gone.
    Gone {
        generation: u64,
        why: String,
    },
    Stop,
}

/// Why the process could not be set up at all.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The sandbox is unavailable or does not show the program.
    #[error("upstream `{0}`: {1}")]
    Sandbox(String, sandbox::SandboxError),
    /// The supervisor thread could not start.
    #[error("upstream `{0}`: cannot start its supervisor thread: {1}")]
    Thread(String, std::io::Error),
}

impl Process {
    /// Starts upstream `name`'s process as `spec` says (in the background:
    /// calls are refused as unavailable until its handshake is done),
    /// accepting answers up to `max_response_bytes`. Errors: the sandbox
    /// cannot confine it here.
    pub fn start(
        name: &str,
        spec: StdioSpec,
        max_response_bytes: usize,
        egress: Arc<EgressCounts>,
    ) -> Result<Arc<Self>, StartError> {
        sandbox::preflight(&spec).map_err(|e| StartError::Sandbox(name.to_owned(), e))?;
        if !spec.sandbox.enabled {
            tracing::warn!(upstream = name, "stdio upstream runs WITHOUT a sandbox (sandbox.enabled = false): it has toolgate's own user, files and network");
        }
        Self::launch(name, spec, max_response_bytes, egress)
    }

    /// [`Process::start`] for a spec already checked by it (another
    /// instance of the same upstream).
    pub(super) fn launch(
        name: &str,
        spec: StdioSpec,
        max_response_bytes: usize,
        egress: Arc<EgressCounts>,
    ) -> Result<Arc<Self>, StartError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(spec.max_in_flight * 2 + 64);
        let inner = Arc::new(Inner {
            name: Arc::from(name),
            tx,
            next_id: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
            max_in_flight: spec.max_in_flight,
            up: AtomicBool::new(false),
            starting: AtomicBool::new(true),
            unhealthy: AtomicBool::new(false),
            restarts: AtomicU64::new(0),
            pid: AtomicU32::new(0),
            list_changes: AtomicU64::new(0),
        });
        let sup = Supervisor {
            inner: Arc::clone(&inner),
            allow_hosts: spec.allow_hosts.clone().into(),
            egress,
            spec,
            max_response_bytes,
            rx,
        };
        let handle = std::thread::Builder::new()
            .name(format!("toolgate-stdio-{name}"))
            .spawn(move || sup.run())
            .map_err(|e| StartError::Thread(name.to_owned(), e))?;
        Ok(Arc::new(Self {
            inner,
            supervisor: Mutex::new(Some(handle)),
        }))
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Calls waiting on it now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// How many list changes (`notifications/*/list_changed`) the server
    /// has announced since toolgate started it.
    pub fn list_changes(&self) -> u64 {
        self.inner.list_changes.load(Ordering::Relaxed)
    }

    /// How it stands now.
    pub fn health(&self) -> Health {
        let i = &self.inner;
        Health {
            up: i.up.load(Ordering::Relaxed),
            unhealthy: i.unhealthy.load(Ordering::Relaxed),
            restarts: i.restarts.load(Ordering::Relaxed),
            pid: i.pid.load(Ordering::Relaxed),
        }
    }

    /// Sends request `method` with `params` (the inside of the params
    /// object, may be empty) and waits up to `timeout` for the answer (the
    /// JSON-RPC response, with toolgate's id). With a progress taker in
    /// `watch`, the server is asked for progress under the call's wire id
    /// and its progress is handed on as it comes; a cancel of `watch`
    /// stops the wait and tells the server.
    pub async fn request(
        &self,
        method: &str,
        params: &[u8],
        timeout: Duration,
        watch: &Watch<'_>,
    ) -> Result<Vec<u8>, UpstreamError> {
        let i = &self.inner;
        let start = std::time::Instant::now();
        // A process just started (a user's first call) is waited for, up
        // to the call's deadline; one restarting fails the call at once.
        while !i.up.load(Ordering::Acquire) {
            if !i.starting.load(Ordering::Acquire) || start.elapsed() >= timeout {
                return Err(UpstreamError::Unavailable);
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        let timeout = timeout.saturating_sub(start.elapsed());
        let _guard = InFlight::take(i).ok_or(UpstreamError::Unavailable)?;
        let id = i.next_id.fetch_add(1, Ordering::Relaxed);
        let mut line = Vec::with_capacity(params.len() + 64);
        line.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
        let _ = write!(line, "{id}");
        line.extend_from_slice(br#","method":"#);
        write_str(method, &mut line);
        line.extend_from_slice(br#","params":{"#);
        line.extend_from_slice(params);
        if watch.progress.is_some() {
            if !params.is_empty() {
                line.push(b',');
            }
            let _ = write!(line, r#""_meta":{{"progressToken":{id}}}"#);
        }
        line.extend_from_slice(b"}}\n");
        let slot = Arc::new(Slot {
            progress: watch
                .progress
                .map(|_| Mutex::new(VecDeque::with_capacity(4))),
            ..Slot::default()
        });
        let msg = Msg::Call {
            id,
            line,
            slot: Arc::clone(&slot),
        };
        if i.tx.try_send(msg).is_err() {
            return Err(UpstreamError::Unavailable);
        }
        let waited = glommio::timer::timeout(timeout, async {
            Ok(unless_cancelled(watch, slot.ready(watch.progress)).await)
        })
        .await;
        match waited {
            Ok(Some(())) => slot.take(),
            Ok(None) => {
                let _ = i.tx.try_send(Msg::Cancel(id, "cancelled by the client"));
                Err(UpstreamError::Cancelled)
            }
            Err(_) => {
                let _ = i.tx.try_send(Msg::Cancel(id, "deadline passed"));
                Err(UpstreamError::Timeout)
            }
        }
    }

    /// Stops the process and its supervisor (waits for both); calls in
    /// flight fail as unavailable. Idempotent.
    pub fn stop(&self) {
        let handle = self
            .supervisor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = self.inner.tx.send(Msg::Stop);
            let _ = h.join();
        }
    }
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.inner.name)
            .field("health", &self.health())
            .finish()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A call counted in flight until dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn take(i: &'a Inner) -> Option<Self> {
        let n = i.in_flight.fetch_add(1, Ordering::AcqRel);
        if n >= i.max_in_flight {
            i.in_flight.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(upstream = %i.name, max_in_flight = i.max_in_flight, "stdio upstream busy: call refused");
            return None;
        }
        Some(Self(&i.in_flight))
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How one process's life ended.
enum End {
    /// It exited, hung or misbehaved: restart it.
    Exited,
    /// toolgate is stopping.
    Stop,
}

struct Supervisor {
    inner: Arc<Inner>,
    spec: StdioSpec,
    /// `sandbox.allow_hosts`, shared with the egress proxy's threads.
    allow_hosts: Arc<[HostRule]>,
    /// The upstream's egress counts (every instance's).
    egress: Arc<EgressCounts>,
    max_response_bytes: usize,
    rx: Receiver<Msg>,
}

impl Supervisor {
    fn run(self) {
        let name = Arc::clone(&self.inner.name);
        let mut generation = 0u64;
        let mut backoff = MIN_BACKOFF;
        let mut exits: VecDeque<Instant> = VecDeque::new();
        loop {
            generation += 1;
            let started = Instant::now();
            let end = match self.spawn() {
                Ok((child, egress)) => self.serve(child, egress, generation),
                Err(why) => {
                    tracing::error!(upstream = %name, error = %why, "stdio upstream cannot be started");
                    End::Exited
                }
            };
            self.inner.up.store(false, Ordering::Release);
            self.inner.starting.store(false, Ordering::Release);
            self.inner.pid.store(0, Ordering::Relaxed);
            if matches!(end, End::Stop) {
                return;
            }
            let now = Instant::now();
            if now.duration_since(started) >= LOOP_WINDOW {
                backoff = MIN_BACKOFF;
                exits.clear();
            }
            exits.push_back(now);
            while exits
                .front()
                .is_some_and(|t| now.duration_since(*t) > LOOP_WINDOW)
            {
                exits.pop_front();
            }
            if exits.len() >= LOOP_EXITS && !self.inner.unhealthy.swap(true, Ordering::Relaxed) {
                tracing::error!(upstream = %name, exits = exits.len(), "stdio upstream is crash-looping: marked unhealthy, restarting every {} s at most", MAX_BACKOFF.as_secs());
            }
            self.inner.restarts.fetch_add(1, Ordering::Relaxed);
            if self.pause(backoff) {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Waits `d` before a restart, refusing the calls that arrive
    /// meanwhile. Returns whether toolgate is stopping.
    fn pause(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Msg::Call { slot, .. }) => slot.finish(Err(UpstreamError::Unavailable)),
                Ok(Msg::Stop) => return true,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => return false,
                Err(RecvTimeoutError::Disconnected) => return true,
            }
        }
    }

    /// The process, started with its environment read now (a rotated
    /// secret file is picked up by the next start), and its egress proxy
    /// when the sandbox allows hosts.
    fn spawn(&self) -> Result<(Child, Option<Egress>), String> {
        let mut env = Vec::with_capacity(self.spec.env.len());
        for (k, v) in &self.spec.env {
            let value = match v {
                StdioEnv::Literal(s) => Secret::new(s.as_bytes().to_vec()),
                StdioEnv::Secret(src) => src.read().map_err(|e| format!("`env.{k}`: {e}"))?,
            };
            env.push((k.clone(), value));
        }
        let channel = if sandbox::uses_egress(&self.spec) {
            Some(Channel::new().map_err(|e| format!("egress proxy channel: {e}"))?)
        } else {
            None
        };
        let mut cmd = sandbox::command(&self.spec, &env, channel.as_ref().map(Channel::child_fd))
            .map_err(|e| e.to_string())?;
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("`{}`: {e}", self.spec.program.display()))?;
        let egress = match channel {
            None => None,
            Some(c) => match c.serve(
                &self.inner.name,
                Arc::clone(&self.allow_hosts),
                Arc::clone(&self.egress),
            ) {
                Ok(e) => Some(e),
                Err(e) => {
                    reap(&self.inner.name, &mut child);
                    return Err(format!("egress proxy: {e}"));
                }
            },
        };
        Ok((child, egress))
    }

    /// Runs one process until it ends.
    fn serve(&self, mut child: Child, egress: Option<Egress>, generation: u64) -> End {
        let name = Arc::clone(&self.inner.name);
        self.inner.pid.store(child.id(), Ordering::Relaxed);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            reap(&name, &mut child);
            return End::Exited;
        };
        let (wtx, wrx) = std::sync::mpsc::sync_channel::<Vec<u8>>(self.spec.max_in_flight + 16);
        let tx = self.inner.tx.clone();
        let threads = [
            spawn_named(&name, "in", {
                let tx = tx.clone();
                move || write_loop(stdin, wrx, tx, generation)
            }),
            spawn_named(&name, "out", {
                let (tx, wtx, max) = (tx.clone(), wtx.clone(), self.max_response_bytes);
                let inner = Arc::clone(&self.inner);
                move || read_loop(&inner, stdout, tx, wtx, generation, max)
            }),
            spawn_named(&name, "err", {
                let name = Arc::clone(&name);
                move || stderr_loop(&name, stderr)
            }),
        ];
        if threads.iter().any(Option::is_none) {
            reap(&name, &mut child);
            return End::Exited;
        }
        let mut pending: HashMap<u64, Arc<Slot>> = HashMap::new();
        let end = self.exchange(&wtx, &mut pending, generation);
        for (_, slot) in pending.drain() {
            slot.finish(Err(UpstreamError::Unavailable));
        }
        self.inner.up.store(false, Ordering::Release);
        reap(&name, &mut child);
        drop(egress);
        drop(wtx);
        end
    }

    /// The handshake, then calls, answers and pings until the process ends.
    fn exchange(
        &self,
        wtx: &SyncSender<Vec<u8>>,
        pending: &mut HashMap<u64, Arc<Slot>>,
        generation: u64,
    ) -> End {
        let name = &*self.inner.name;
        let mut init = Vec::with_capacity(256);
        init.extend_from_slice(br#"{"jsonrpc":"2.0","id":""#);
        init.extend_from_slice(INIT_ID.as_bytes());
        init.extend_from_slice(br#"","method":"initialize","params":{"protocolVersion":""#);
        init.extend_from_slice(toolgate_core::protocol::LATEST_HANDSHAKE_VERSION.as_bytes());
        init.extend_from_slice(
            br#"","capabilities":{},"clientInfo":{"name":"toolgate","version":""#,
        );
        init.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
        init.extend_from_slice(b"\"}}}\n");
        if wtx.try_send(init).is_err() {
            return End::Exited;
        }
        let start = Instant::now();
        let mut up = false;
        let mut ping_sent: Option<Instant> = None;
        let mut next_ping = start + self.spec.ping_interval;
        loop {
            let now = Instant::now();
            let deadline = if !up {
                start + INIT_TIMEOUT
            } else if let Some(sent) = ping_sent {
                sent + PING_TIMEOUT
            } else {
                next_ping
            };
            let msg = match self
                .rx
                .recv_timeout(deadline.saturating_duration_since(now))
            {
                Ok(m) => m,
                Err(RecvTimeoutError::Disconnected) => return End::Stop,
                Err(RecvTimeoutError::Timeout) => {
                    if !up {
                        tracing::warn!(
                            upstream = name,
                            "stdio upstream did not answer `initialize` in {} s: restarting it",
                            INIT_TIMEOUT.as_secs()
                        );
                        return End::Exited;
                    }
                    if ping_sent.is_some() {
                        tracing::warn!(
                            upstream = name,
                            "stdio upstream did not answer a ping in {} s: restarting it",
                            PING_TIMEOUT.as_secs()
                        );
                        return End::Exited;
                    }
                    let ping = format!(r#"{{"jsonrpc":"2.0","id":"{PING_ID}","method":"ping"}}"#);
                    if wtx.try_send([ping.as_bytes(), b"\n"].concat()).is_err() {
                        tracing::warn!(
                            upstream = name,
                            "stdio upstream is not reading its input: restarting it"
                        );
                        return End::Exited;
                    }
                    ping_sent = Some(Instant::now());
                    next_ping = Instant::now() + self.spec.ping_interval;
                    continue;
                }
            };
            match msg {
                Msg::Call { id, line, slot } => {
                    if !up {
                        slot.finish(Err(UpstreamError::Unavailable));
                    } else if let Err(e) = wtx.try_send(line) {
                        if matches!(e, TrySendError::Full(_)) {
                            tracing::warn!(
                                upstream = name,
                                "stdio upstream is not reading its input fast enough: call refused"
                            );
                        }
                        slot.finish(Err(UpstreamError::Unavailable));
                    } else {
                        pending.insert(id, slot);
                    }
                }
                Msg::Cancel(id, reason) => {
                    if pending.remove(&id).is_some() {
                        let note = format!(
                            r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{id},"reason":"{reason}"}}}}"#
                        );
                        let _ = wtx.try_send([note.as_bytes(), b"\n"].concat());
                    }
                }
                Msg::Progress {
                    generation: g,
                    id,
                    message,
                } if g == generation => {
                    if let Some(slot) = pending.get(&id) {
                        slot.progress(message);
                    }
                }
                Msg::Reply {
                    generation: g,
                    id,
                    ok,
                    message,
                } if g == generation => match id {
                    Id::Call(n) => {
                        if let Some(slot) = pending.remove(&n) {
                            slot.finish(Ok(message));
                        }
                    }
                    Id::Init if !up => {
                        if !ok {
                            tracing::warn!(upstream = name, answer = %String::from_utf8_lossy(&message), "stdio upstream refused `initialize`: restarting it");
                            return End::Exited;
                        }
                        let note =
                            b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n";
                        if wtx.try_send(note.to_vec()).is_err() {
                            return End::Exited;
                        }
                        up = true;
                        self.inner.up.store(true, Ordering::Release);
                        tracing::info!(
                            upstream = name,
                            pid = self.inner.pid.load(Ordering::Relaxed),
                            "stdio upstream started"
                        );
                    }
                    Id::Init => {}
                    Id::Ping => ping_sent = None,
                },
                Msg::Gone { generation: g, why } if g == generation => {
                    tracing::warn!(upstream = name, why = %why, "stdio upstream's process ended");
                    return End::Exited;
                }
                Msg::Stop => return End::Stop,
                Msg::Reply { .. } | Msg::Gone { .. } | Msg::Progress { .. } => {}
            }
        }
    }
}

fn spawn_named(
    name: &str,
    what: &str,
    f: impl FnOnce() + Send + 'static,
) -> Option<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("toolgate-stdio-{name}-{what}"))
        .spawn(f)
        .map_err(|e| tracing::error!(upstream = name, error = %e, "cannot start a stdio thread"))
        .ok()
}

/// Kills the process (with bubblewrap, everything in its sandbox) and
/// reaps it, logging how it ended.
fn reap(name: &str, child: &mut Child) {
    let _ = child.kill();
    match child.wait() {
        Ok(status) => {
            tracing::info!(upstream = name, status = %status, "stdio upstream's process reaped")
        }
        Err(e) => {
            tracing::warn!(upstream = name, error = %e, "stdio upstream's process could not be reaped")
        }
    }
}

fn write_loop(mut stdin: ChildStdin, rx: Receiver<Vec<u8>>, tx: SyncSender<Msg>, generation: u64) {
    while let Ok(line) = rx.recv() {
        if let Err(e) = stdin.write_all(&line).and_then(|()| stdin.flush()) {
            let _ = tx.send(Msg::Gone {
                generation,
                why: format!("writing its input: {e}"),
            });
            return;
        }
    }
}

/// One line read, at most `max` bytes.
enum Line {
    Read,
    TooLong,
    End,
}

fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> std::io::Result<Line> {
    buf.clear();
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(Line::End);
        }
        let (take, done) = match memchr_newline(chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if buf.len() + take > max + 1 {
            return Ok(Line::TooLong);
        }
        buf.extend_from_slice(&chunk[..take]);
        r.consume(take);
        if done {
            return Ok(Line::Read);
        }
    }
}

/// Consumes input up to and including the next newline without keeping it.
fn skip_line(r: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(());
        }
        match memchr_newline(chunk) {
            Some(i) => {
                r.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = chunk.len();
                r.consume(n);
            }
        }
    }
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

fn read_loop(
    inner: &Inner,
    stdout: ChildStdout,
    tx: SyncSender<Msg>,
    wtx: SyncSender<Vec<u8>>,
    generation: u64,
    max: usize,
) {
    let name = &*inner.name;
    let mut r = BufReader::with_capacity(64 * 1024, stdout);
    let mut buf = Vec::new();
    let mut parser = JsonParser::new();
    let why = loop {
        match read_line(&mut r, &mut buf, max) {
            Ok(Line::Read) => {}
            Ok(Line::End) => break "its output closed".to_owned(),
            Ok(Line::TooLong) => {
                break format!("it sent a message larger than max_response_bytes ({max})")
            }
            Err(e) => break format!("reading its output: {e}"),
        }
        while buf.last().is_some_and(|c| c.is_ascii_whitespace()) {
            buf.pop();
        }
        if buf.is_empty() {
            continue;
        }
        match classify(&mut parser, &buf) {
            Incoming::Reply(id, ok) => {
                let msg = Msg::Reply {
                    generation,
                    id,
                    ok,
                    message: std::mem::take(&mut buf),
                };
                if tx.send(msg).is_err() {
                    return;
                }
            }
            Incoming::Request(answer) => {
                let _ = wtx.try_send(answer);
            }
            Incoming::Notification => {}
            Incoming::Progress(id) => {
                let msg = Msg::Progress {
                    generation,
                    id,
                    message: std::mem::take(&mut buf),
                };
                if tx.send(msg).is_err() {
                    return;
                }
            }
            Incoming::ListChanged => {
                tracing::info!(
                    upstream = name,
                    "stdio upstream says its lists changed: fetching them again"
                );
                inner.list_changes.fetch_add(1, Ordering::Relaxed);
            }
            Incoming::Invalid => {
                tracing::warn!(
                    upstream = name,
                    "stdio upstream wrote a line that is not a JSON-RPC message: ignored"
                );
            }
        }
    };
    let _ = tx.send(Msg::Gone { generation, why });
}

enum Incoming {
    /// An answer to one of toolgate's requests: its id, whether a result.
    Reply(Id, bool),
    /// A request of the server's: the answer to write back.
    Request(Vec<u8>),
    /// `notifications/tools/list_changed` (or prompts, resources).
    ListChanged,
    /// `notifications/progress` under a call's wire id.
    Progress(u64),
    Notification,
    Invalid,
}

/// What a line from the server is. Servers may ask their client things
/// (roots, sampling, elicitation): toolgate offers none of them and says
/// so, answering `ping` only.
fn classify(parser: &mut JsonParser, line: &[u8]) -> Incoming {
    let Ok(tape) = parser.parse(line) else {
        return Incoming::Invalid;
    };
    let v = tape.as_value();
    if !v.is_object() {
        return Incoming::Invalid;
    }
    let id = v.get("id");
    if let Some(method) = v.get("method") {
        let Some(id) = id else {
            return match method.as_str() {
                Some(
                    "notifications/tools/list_changed"
                    | "notifications/prompts/list_changed"
                    | "notifications/resources/list_changed",
                ) => Incoming::ListChanged,
                Some("notifications/progress") => match progress_token(v) {
                    Some(id) => Incoming::Progress(id),
                    None => Incoming::Notification,
                },
                _ => Incoming::Notification,
            };
        };
        let mut answer = Vec::with_capacity(160);
        answer.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
        toolgate_core::jsonrpc::write_value(id, &mut answer);
        if method.as_str() == Some("ping") {
            answer.extend_from_slice(br#","result":{}}"#);
        } else {
            answer.extend_from_slice(
                br#","error":{"code":-32601,"message":"toolgate does not offer this to tool servers"}}"#,
            );
        }
        answer.push(b'\n');
        return Incoming::Request(answer);
    }
    let ok = v.get("result").is_some();
    if !ok && v.get("error").is_none() {
        return Incoming::Invalid;
    }
    let id = match id {
        Some(i) if i.as_str() == Some(INIT_ID) => Id::Init,
        Some(i) if i.as_str() == Some(PING_ID) => Id::Ping,
        Some(i) => match i.as_u64() {
            Some(n) => Id::Call(n),
            None => return Incoming::Invalid,
        },
        None => return Incoming::Invalid,
    };
    Incoming::Reply(id, ok)
}

/// Logs the process's stderr, one event per line: lines cut at
/// [`STDERR_LINE_MAX`] bytes, at most [`STDERR_LINES_PER_S`] a second (the
/// number dropped is logged with the next line that passes).
fn stderr_loop(name: &str, stderr: ChildStderr) {
    let mut r = BufReader::new(stderr);
    let mut buf = Vec::new();
    let mut tokens = f64::from(STDERR_LINES_PER_S * 2);
    let mut last = Instant::now();
    let mut dropped = 0u64;
    loop {
        match read_line(&mut r, &mut buf, STDERR_LINE_MAX) {
            Ok(Line::Read) => {}
            Ok(Line::TooLong) => {
                // Log the head; the rest of the line is read and dropped,
                // never held (a line may not end).
                if skip_line(&mut r).is_err() {
                    return;
                }
            }
            Ok(Line::End) | Err(_) => return,
        }
        let now = Instant::now();
        tokens = (tokens + now.duration_since(last).as_secs_f64() * f64::from(STDERR_LINES_PER_S))
            .min(f64::from(STDERR_LINES_PER_S * 2));
        last = now;
        if tokens < 1.0 {
            dropped += 1;
            continue;
        }
        tokens -= 1.0;
        let text = String::from_utf8_lossy(&buf[..buf.len().min(STDERR_LINE_MAX)]);
        let text = text.trim_end();
        if dropped > 0 {
            tracing::warn!(upstream = name, dropped, "stdio upstream stderr: {text}");
            dropped = 0;
        } else {
            tracing::warn!(upstream = name, "stdio upstream stderr: {text}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rest_of_a_long_line_is_skipped_not_kept() {
        let mut r = BufReader::with_capacity(4, &b"0123456789\nnext\n"[..]);
        let mut buf = Vec::new();
        assert!(matches!(read_line(&mut r, &mut buf, 4), Ok(Line::TooLong)));
        assert!(buf.len() <= 4, "{buf:?}");
        skip_line(&mut r).unwrap();
        assert!(matches!(read_line(&mut r, &mut buf, 8), Ok(Line::Read)));
        assert_eq!(buf, b"next\n");
    }

    #[test]
    fn lines_longer_than_the_limit_are_refused() {
        let mut r = BufReader::with_capacity(4, &b"{\"a\":1}\n0123456789\n"[..]);
        let mut buf = Vec::new();
        assert!(matches!(read_line(&mut r, &mut buf, 8), Ok(Line::Read)));
        assert_eq!(buf, b"{\"a\":1}\n");
        assert!(matches!(read_line(&mut r, &mut buf, 8), Ok(Line::TooLong)));
    }

    #[test]
    fn answers_requests_and_notifications_are_told_apart() {
        let mut p = JsonParser::new();
        assert!(matches!(
            classify(&mut p, br#"{"jsonrpc":"2.0","id":7,"result":{}}"#),
            Incoming::Reply(Id::Call(7), true)
        ));
        assert!(matches!(
            classify(
                &mut p,
                br#"{"jsonrpc":"2.0","id":"toolgate-initialize","error":{"code":1,"message":"x"}}"#
            ),
            Incoming::Reply(Id::Init, false)
        ));
        assert!(matches!(
            classify(
                &mut p,
                br#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#
            ),
            Incoming::Notification
        ));
        for list in ["tools", "prompts", "resources"] {
            let line =
                format!(r#"{{"jsonrpc":"2.0","method":"notifications/{list}/list_changed"}}"#);
            assert!(matches!(
                classify(&mut p, line.as_bytes()),
                Incoming::ListChanged
            ));
        }
        let Incoming::Request(a) = classify(
            &mut p,
            br#"{"jsonrpc":"2.0","id":"r1","method":"roots/list"}"#,
        ) else {
            panic!("a request")
        };
        let a = String::from_utf8(a).unwrap();
        assert!(
            a.starts_with(r#"{"jsonrpc":"2.0","id":"r1","error":{"code":-32601"#),
            "{a}"
        );
        let Incoming::Request(a) = classify(&mut p, br#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#)
        else {
            panic!("a request")
        };
        assert_eq!(a, b"{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}\n");
        assert!(matches!(
            classify(&mut p, b"Server running"),
            Incoming::Invalid
        ));
        assert!(matches!(
            classify(&mut p, br#"{"jsonrpc":"2.0","id":"other","result":{}}"#),
            Incoming::Invalid
        ));
    }
}
