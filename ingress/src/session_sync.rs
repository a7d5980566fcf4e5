//! Sessions shared by replicas (`sessions.backend = "redis"`): the thread
//! that reads a session's state from Redis into this replica's table
//! before its first call here, and records every admitted call there.
//!
//! The request path waits for Redis only when a session is not in this
//! replica's table yet (its first call here: a new session, a session that
//! moved from another replica, or after a restart) or was marked stale
//! (another replica recorded a call in it): one `GET`. Recording is written
//! behind, in call order, one script per call that returns the session's
//! calls in Redis: more than this replica recorded means another replica
//! served the session meanwhile, and its next call here reads it again.
//!
//! Redis unreachable: every shared session is unknown to policy
//! (`context.session.known == false`) until Redis answers again — never
//! the state of this replica alone. Records made meanwhile are kept (at
//! most [`MAX_PENDING`]) and written first when Redis is back; a session
//! is read again only once they are.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use toolgate_core::config::RedisSetup;
use toolgate_decision::session::shared::{record_script, SharedState};
use toolgate_decision::session::Sessions;
use toolgate_limits::redis::{Client, RedisError, Reply};

/// Records kept while Redis cannot be reached.
pub const MAX_PENDING: usize = 100_000;
/// Jobs queued for the thread; a full queue makes a session unknown.
const QUEUE: usize = 65_536;

/// A read's outcome, awaited by the shard that asked.
#[derive(Default)]
pub struct Done {
    /// 0: pending, 1: read in, 2: failed.
    state: std::sync::atomic::AtomicU8,
    waker: AtomicWaker,
}

impl Done {
    fn finish(&self, ok: bool) {
        self.state.store(if ok { 1 } else { 2 }, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Waits for the outcome: whether the session was read in.
    pub async fn wait(&self) -> bool {
        poll_fn(|cx| {
            self.waker.register(cx.waker());
            match self.state.load(Ordering::SeqCst) {
                0 => Poll::Pending,
                s => Poll::Ready(s == 1),
            }
        })
        .await
    }
}

/// What the thread does.
pub enum Job {
    /// Read session `key` (`shared` in Redis) into the table as at `now`.
    Load {
        /// The table's key.
        key: u64,
        /// The Redis key.
        shared: String,
        /// Unix seconds.
        now: u64,
        /// Told the outcome.
        done: Arc<Done>,
    },
    /// Record one call (the script's `ARGV`); `calls`: the session's calls
    /// in this replica's table after it.
    Record {
        /// The table's key.
        key: u64,
        /// The Redis key.
        shared: String,
        /// [`toolgate_decision::session::shared::RECORD`]'s `ARGV`.
        args: [String; 5],
        /// Calls recorded here.
        calls: u32,
    },
}

/// The shards' handle on the thread.
pub struct SessionSync {
    tx: SyncSender<Job>,
    /// Redis answered the last exchange.
    pub up: Arc<AtomicBool>,
    /// Longest a shard waits for a read.
    pub timeout: Duration,
    /// The sessions' idle timeout: records expire in Redis after it.
    pub idle_s: u64,
}

impl SessionSync {
    /// Queues `job`; false when the queue is full (the session is then
    /// unknown for this call).
    pub fn send(&self, job: Job) -> bool {
        match self.tx.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Starts the thread for `table`, counting the `distinct` arguments.
pub fn start(
    setup: RedisSetup,
    table: Arc<Sessions>,
    distinct: Vec<Arc<str>>,
    idle_s: u64,
) -> std::io::Result<SessionSync> {
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    let up = Arc::new(AtomicBool::new(false));
    let timeout = setup.timeout;
    let mut worker = Worker {
        setup,
        table,
        distinct,
        client: None,
        tried: None,
        pending: VecDeque::new(),
        up: Arc::clone(&up),
        told_down: false,
        script: record_script(),
    };
    std::thread::Builder::new()
        .name("toolgate-session-sync".into())
        .spawn(move || worker.run(rx))?;
    Ok(SessionSync {
        tx,
        up,
        timeout,
        idle_s,
    })
}

struct Worker {
    setup: RedisSetup,
    table: Arc<Sessions>,
    distinct: Vec<Arc<str>>,
    client: Option<Client>,
    tried: Option<Instant>,
    pending: VecDeque<(u64, String, [String; 5], u32)>,
    up: Arc<AtomicBool>,
    told_down: bool,
    script: String,
}

impl Worker {
    fn run(&mut self, rx: Receiver<Job>) {
        self.reconnect();
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(Job::Load {
                    key,
                    shared,
                    now,
                    done,
                }) => {
                    let ok = self.flush() && self.load(key, &shared, now);
                    done.finish(ok);
                }
                Ok(Job::Record {
                    key,
                    shared,
                    args,
                    calls,
                }) => {
                    if self.pending.len() >= MAX_PENDING {
                        tracing::error!(
                            "session records waiting for Redis exceed {MAX_PENDING}: the oldest is dropped"
                        );
                        self.pending.pop_front();
                    }
                    self.pending.push_back((key, shared, args, calls));
                    self.flush();
                }
                Err(RecvTimeoutError::Timeout) => {
                    // Retried even with nothing to write: while Redis is
                    // down no session is read, so nothing else would.
                    self.reconnect();
                    self.flush();
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn reconnect(&mut self) {
        if self.client.is_some()
            || self
                .tried
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.tried = Some(Instant::now());
        match Client::open(&self.setup) {
            Ok(c) => {
                self.client = Some(c);
                if self.told_down {
                    tracing::info!("Redis is back: shared sessions are read and recorded again");
                }
                self.told_down = false;
                self.up.store(true, Ordering::SeqCst);
            }
            Err(e) => self.down(&e.to_string()),
        }
    }

    fn down(&mut self, why: &str) {
        self.client = None;
        self.up.store(false, Ordering::SeqCst);
        if !self.told_down {
            tracing::error!(error = why, "shared sessions: Redis unreachable; sessions are unknown to policy until it answers");
            self.told_down = true;
        }
    }

    /// Writes the pending records in order; true when none is left.
    fn flush(&mut self) -> bool {
        while !self.pending.is_empty() {
            self.reconnect();
            let Some(client) = self.client.as_mut() else {
                return false;
            };
            let Some((key, shared, args, calls)) = self.pending.front() else {
                break;
            };
            let argv: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            match client.eval(&self.script, &[shared.as_bytes()], &argv) {
                Ok(Reply::Int(n)) => {
                    if u32::try_from(n).unwrap_or(u32::MAX) > *calls {
                        // Another replica recorded calls in this session.
                        self.table.mark_stale(*key);
                    }
                    self.pending.pop_front();
                }
                Ok(other) => {
                    tracing::warn!(reply = ?other, "unexpected reply recording a session call");
                    self.pending.pop_front();
                }
                Err(RedisError::Server(e)) => {
                    tracing::error!(error = e, "Redis refused a session record; it is dropped");
                    self.pending.pop_front();
                }
                Err(e) => {
                    self.down(&e.to_string());
                    return false;
                }
            }
        }
        true
    }

    fn load(&mut self, key: u64, shared: &str, now: u64) -> bool {
        self.reconnect();
        let Some(client) = self.client.as_mut() else {
            return false;
        };
        let state = match client.get(shared) {
            Ok(Some(bytes)) => match SharedState::parse(&bytes) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, key = shared, "a session's state in Redis does not parse: the session is unknown");
                    return false;
                }
            },
            Ok(None) => SharedState {
                started: now,
                ..Default::default()
            },
            Err(e) => {
                self.down(&e.to_string());
                return false;
            }
        };
        self.table.install(key, now, &state, &self.distinct)
    }
}
