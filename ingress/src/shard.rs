//! Shards: one glommio executor per core, each with its own listener
//! (SO_REUSEPORT), connections, upstream pools and audit ring.
//!
//! Operational prerequisites: io_uring (Linux 5.8+) and enough locked memory
//! for each executor's rings; toolgate asks glommio for a small I/O memory
//! area so the common 8 MiB `ulimit -l` is enough.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_rustls::server::TlsStream;
use futures_rustls::TlsAcceptor;
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use nix::sched::{sched_getaffinity, CpuSet};
use nix::unistd::Pid;
use toolgate_sinks::{AuditHealth, AuditProducer, InlineWriter, RingWriter};

use crate::call::Gateway;
use crate::catalog_sync;
use crate::http::conn::{Conn, ConnInfo};
use crate::http::server::{serve, ConnConfig};
use crate::shared::Shared;
use toolgate_net::queued::Queued;
use toolgate_net::tls::{cert_names, PeerNames};

/// Errors starting shards.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The listener could not be bound.
    #[error("cannot listen on `{addr}`: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The executor could not start.
    #[error("cannot start shard {0}: {1}")]
    Executor(usize, String),
}

/// How often a shard looks for a new snapshot when no publication woke
/// it: a backstop, since publishing wakes every shard.
const SNAPSHOT_POLL: Duration = Duration::from_millis(50);

/// How long an executor (a shard, the admin API) may take to start and
/// bind. Generous: creating io_uring rings waits on the kernel, which a
/// host busy with disk writes can hold for seconds.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a shard's executor may take to run its first task before it
/// is given up on and made again; at most [`START_ATTEMPTS`] times. A rare
/// executor thread never gets past setting up its rings; a new one does.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(8);
const START_ATTEMPTS: u32 = 3;

/// Why an executor's start-up report did not come.
pub(crate) fn not_started(e: mpsc::RecvTimeoutError) -> String {
    match e {
        mpsc::RecvTimeoutError::Timeout => {
            format!("did not start within {} s", START_TIMEOUT.as_secs())
        }
        mpsc::RecvTimeoutError::Disconnected => "its thread ended while starting".into(),
    }
}

/// Running shards.
pub struct Shards {
    handles: Vec<glommio::ExecutorJoinHandle<()>>,
    /// The address actually listened on (port 0 resolved).
    pub addr: SocketAddr,
}

impl Shards {
    /// Waits for all shards to end (they run until the process exits).
    pub fn join(self) {
        for h in self.handles {
            let _ = h.join();
        }
    }
}

/// The CPUs this process may run on (its affinity mask, e.g. as `taskset`
/// or a cgroup cpuset left it), in order. Shards pin to these, never to
/// CPU ids outside the mask.
pub fn allowed_cpus() -> Vec<usize> {
    let from_mask = sched_getaffinity(Pid::this())
        .ok()
        .map(|set| {
            (0..CpuSet::count())
                .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
                .collect::<Vec<_>>()
        })
        .filter(|c| !c.is_empty());
    from_mask.unwrap_or_else(|| {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        (0..n).collect()
    })
}

/// Longest a shard runs tasks before it looks at its I/O rings again.
const PREEMPT_AFTER: Duration = Duration::from_millis(1);

/// Starts `writers.len()` shards serving `shared`; `health` is the audit
/// thread's report on the log; with `inline`, shards write their calls'
/// records themselves (`[audit] writer = "shards"`).
pub fn start(
    shared: Arc<Shared>,
    writers: Vec<RingWriter>,
    health: Arc<AuditHealth>,
    inline: Option<InlineWriter>,
) -> Result<Shards, ShardError> {
    let cpus = allowed_cpus();
    let pin = writers.len() <= cpus.len();
    let mut addr = shared.config.listen;
    let mut handles = Vec::with_capacity(writers.len());
    for (i, writer) in writers.into_iter().enumerate() {
        let placement = if pin {
            Placement::Fixed(cpus[i % cpus.len()])
        } else {
            Placement::Unbound
        };
        // Taken by the attempt that runs; an abandoned one finds it gone.
        let writer = Arc::new(Mutex::new(Some(writer)));
        let mut attempt = 0;
        let (bound, handle) = loop {
            attempt += 1;
            let (tx, rx) = mpsc::channel::<Result<SocketAddr, String>>();
            let claim = Arc::new(AtomicBool::new(false));
            let (shared, health, inline) =
                (Arc::clone(&shared), Arc::clone(&health), inline.clone());
            let (writer, ours) = (Arc::clone(&writer), Arc::clone(&claim));
            let handle = LocalExecutorBuilder::new(placement.clone())
                .name(&format!("toolgate-shard-{i}"))
                .io_memory(2 << 20)
                // Under load a shard can go on finding its sockets' bytes
                // already queued and never idle; glommio polls its rings (and
                // takes wakes from other threads: the audit thread's, timers)
                // only between task-queue runs, which this bounds. Its default,
                // 100 ms, would hold an answer that long.
                .preempt_timer(PREEMPT_AFTER)
                .spawn(move || async move {
                    // An attempt given up on before it ran does nothing.
                    if ours.swap(true, Ordering::AcqRel) {
                        return;
                    }
                    let Some(writer) = writer.lock().unwrap_or_else(|p| p.into_inner()).take()
                    else {
                        return;
                    };
                    run(i, shared, writer, health, inline, addr, tx).await
                })
                .map_err(|e| ShardError::Executor(i, e.to_string()))?;
            // Shard 0 binds first so that port 0 resolves once and every
            // other shard joins the same port.
            let reported = match rx.recv_timeout(ATTEMPT_TIMEOUT) {
                Err(mpsc::RecvTimeoutError::Timeout) if !claim.swap(true, Ordering::AcqRel) => {
                    // Its executor never ran a task: a thread stuck setting
                    // up its rings. Leave it (it will do nothing if it ever
                    // wakes) and make another.
                    tracing::warn!(
                        shard = i,
                        attempt,
                        "shard executor did not come up in {} s; starting it again",
                        ATTEMPT_TIMEOUT.as_secs()
                    );
                    if attempt < START_ATTEMPTS {
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout)
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    rx.recv_timeout(START_TIMEOUT.saturating_sub(ATTEMPT_TIMEOUT))
                }
                other => other,
            };
            match reported {
                Ok(Ok(bound)) => break (bound, handle),
                Ok(Err(reason)) => return Err(ShardError::Bind { addr, reason }),
                Err(e) => return Err(ShardError::Executor(i, not_started(e))),
            }
        };
        addr = bound;
        handles.push(handle);
    }
    Ok(Shards { handles, addr })
}

/// Binds `addr` for a listener that must be this process's alone.
///
/// glommio's listeners set `SO_REUSEPORT` so that every shard joins one
/// port; that would equally let a second gateway (a stale instance, a copy
/// started with another config) bind the same port and silently take a
/// share of the connections. So a port someone already listens on is
/// refused before binding; port 0 resolves to a fresh port and needs no
/// check.
pub(crate) fn bind_alone(addr: SocketAddr) -> glommio::Result<TcpListener, ()> {
    if addr.port() != 0 && crate::port_owner::listened_on(addr) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "address in use: another process already listens there",
        )
        .into());
    }
    TcpListener::bind(addr)
}

async fn run(
    i: usize,
    shared: Arc<Shared>,
    writer: RingWriter,
    health: Arc<AuditHealth>,
    inline: Option<InlineWriter>,
    addr: SocketAddr,
    bound: mpsc::Sender<Result<SocketAddr, String>>,
) {
    // Shard 0 claims the port; the others join it.
    let listener = match if i == 0 {
        bind_alone(addr)
    } else {
        TcpListener::bind(addr)
    } {
        Ok(l) => l,
        Err(e) => {
            let _ = bound.send(Err(e.to_string()));
            return;
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    let _ = bound.send(Ok(local));
    let shard = u16::try_from(i).unwrap_or(u16::MAX);
    let gateway = Gateway::new(
        shard,
        Arc::clone(&shared),
        AuditProducer::new(shard, writer, health),
    );
    let gateway = Rc::new(match inline {
        Some(w) => gateway.with_inline_writer(w),
        None => gateway,
    });
    // Picks up published snapshots even while no request arrives, so the
    // admin API learns at once that this shard runs a change. Woken by the
    // publisher (a cross-thread wake, which does not depend on this
    // executor's timers firing on time), with a slow poll as a backstop.
    {
        let (gateway, shared) = (Rc::clone(&gateway), Arc::clone(&shared));
        glommio::spawn_local(async move {
            loop {
                gateway.refresh_snapshot();
                let ran = shared.seen.get(i).map_or(0, |s| s.load(Ordering::Relaxed));
                let Some(waker) = shared.published.get(i) else {
                    glommio::timer::sleep(SNAPSHOT_POLL).await;
                    continue;
                };
                futures_lite::future::or(
                    shared.published_since(waker, ran),
                    glommio::timer::sleep(SNAPSHOT_POLL),
                )
                .await;
            }
        })
        .detach();
    }
    // Cancellations received by other shards for calls this one may run,
    // and agents' answers to requests its calls relayed.
    {
        let (gateway, shared) = (Rc::clone(&gateway), Arc::clone(&shared));
        glommio::spawn_local(async move {
            loop {
                let posted = shared.cancels.next(i).await;
                gateway.take_posted(posted);
            }
        })
        .detach();
    }
    if i == 0 {
        glommio::spawn_local(catalog_sync::run(Arc::clone(&shared), Rc::clone(&gateway))).detach();
        glommio::spawn_local(crate::jwks_sync::run(Arc::clone(&shared))).detach();
        let grants = std::mem::take(&mut *shared.oauth.lock().unwrap_or_else(|p| p.into_inner()));
        toolgate_upstream::oauth::spawn_all(grants, Arc::clone(&shared.oauth_pending));
        if let Some(accounts) = &shared.accounts {
            crate::accounts::spawn_refresher(Arc::clone(accounts));
        }
        if let Some(addr) = shared.config.metrics_listen {
            serve_metrics(addr, Arc::clone(&shared));
        }
    }
    tracing::info!(shard = i, %local, "shard listening");
    let open = Rc::new(std::cell::Cell::new(0usize));
    let mut tls = shared.tls.as_ref().map(|t| t.reader());
    let max = shared.config.config.server.max_connections_per_shard;
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(shard = i, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if open.get() >= max {
            // Over the limit: close at once rather than queue unbounded work.
            drop(stream);
            continue;
        }
        open.set(open.get() + 1);
        let counters = Arc::clone(&shared.metrics);
        if let Some(c) = counters.shards.get(i) {
            c.connections
                .store(open.get() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        let (gateway, open, cfg) = (Rc::clone(&gateway), Rc::clone(&open), shared.conn);
        let acceptor = tls.as_mut().map(|t| TlsAcceptor::clone(&t.current()));
        glommio::spawn_local(async move {
            let _ = stream.set_nodelay(true);
            let peer = stream.peer_addr().ok();
            match acceptor {
                None => {
                    let info = ConnInfo {
                        peer,
                        ..ConnInfo::default()
                    };
                    serve(Queued::new(stream), info, cfg, &*gateway).await;
                }
                Some(acceptor) => match handshake(stream, &acceptor, cfg).await {
                    Ok((stream, client_names)) => {
                        let info = ConnInfo {
                            peer,
                            secure: true,
                            client_names,
                        };
                        serve(stream, info, cfg, &*gateway).await;
                    }
                    Err(why) => {
                        if let Some(c) = counters.shards.get(i) {
                            c.tls_handshake_failures
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        tracing::debug!(shard = i, peer = ?peer, %why, "TLS handshake failed");
                    }
                },
            }
            open.set(open.get() - 1);
            if let Some(c) = counters.shards.get(i) {
                c.connections
                    .store(open.get() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        })
        .detach();
    }
}

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Body of the answer to plain HTTP sent to the TLS listener, as nginx and
/// others do, so an operator sees the mistake instead of a reset connection.
const PLAIN_HTTP_ON_TLS: &str =
    "{\"error\":\"plain HTTP sent to toolgate's TLS listener: use https:// for this address\"}\n";

/// Runs the TLS handshake within the head timeout (a client that opens a
/// connection and stalls mid-handshake is cut off like a slow head); plain
/// HTTP gets a 400 that says to use `https://`. The admin listener uses it too.
pub(crate) async fn handshake(
    stream: TcpStream,
    acceptor: &TlsAcceptor,
    cfg: ConnConfig,
) -> Result<(TlsStream<Queued<TcpStream>>, Option<PeerNames>), String> {
    let limit = cfg.header_timeout;
    let peeked = glommio::timer::timeout(limit, async {
        let mut first = [0u8; 1];
        Ok(stream.peek(&mut first).await.map(|n| (n, first[0])))
    })
    .await
    .map_err(|_| "no handshake within the head timeout".to_owned())?;
    match peeked {
        Ok((1, TLS_HANDSHAKE_RECORD)) => {}
        Ok((1, b)) if b.is_ascii_alphabetic() => {
            let mut stream = stream;
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PLAIN_HTTP_ON_TLS}",
                PLAIN_HTTP_ON_TLS.len()
            );
            let _ = stream.write_all_within(answer.as_bytes(), limit).await;
            // Closing with the request unread would reset the connection,
            // and a reset may discard the answer before the client reads
            // it: end the write side, then read (a bounded amount, briefly)
            // until the client closes.
            let _ = stream.shutdown(std::net::Shutdown::Write).await;
            let mut sink = [0u8; 4096];
            let mut left = 64 * 1024;
            let until = std::time::Instant::now() + Duration::from_millis(500);
            while left > 0 {
                let wait = until.saturating_duration_since(std::time::Instant::now());
                match stream
                    .read_within(&mut sink, wait.max(Duration::from_millis(1)))
                    .await
                {
                    Ok(n) if n > 0 && std::time::Instant::now() < until => left -= n.min(left),
                    _ => break,
                }
            }
            return Err("plain HTTP on the TLS listener".into());
        }
        Ok(_) => return Err("not a TLS handshake".into()),
        Err(e) => return Err(e.to_string()),
    }
    let accepted = glommio::timer::timeout(limit, async {
        acceptor
            .accept(Queued::new(stream))
            .await
            .map_err(glommio::GlommioError::from)
    })
    .await
    .map_err(|e| e.to_string())?;
    let names = accepted
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|leaf| cert_names(leaf.as_ref()));
    Ok((accepted, names))
}

/// Serves `GET /metrics` on its own listener, from shard 0.
fn serve_metrics(addr: SocketAddr, shared: Arc<Shared>) {
    let listener = match bind_alone(addr) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen for metrics");
            return;
        }
    };
    tracing::info!(%addr, "metrics listening");
    let snapshot = Arc::clone(&shared.snapshot);
    let handler = Rc::new(crate::metrics::MetricsHandler {
        metrics: Arc::clone(&shared.metrics),
        generation: Box::new(move || snapshot.generation()),
    });
    let cfg = shared.conn;
    glommio::spawn_local(async move {
        loop {
            let Ok(stream) = listener.accept().await else {
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let handler = Rc::clone(&handler);
            let info = ConnInfo {
                peer: stream.peer_addr().ok(),
                ..ConnInfo::default()
            };
            glommio::spawn_local(async move { serve(stream, info, cfg, &*handler).await }).detach();
        }
    })
    .detach();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_cpus_are_the_kernel_cpus_allowed_list() {
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]));
        // The same list the kernel prints as `Cpus_allowed_list` (e.g. `0-3,8`).
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap();
        let mut expected = Vec::new();
        for part in list.trim().split(',') {
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            let bound = |n: &str| n.parse::<usize>().unwrap();
            expected.extend(bound(lo)..=bound(hi));
        }
        assert_eq!(cpus, expected);
    }
}
