//! Sinks: delivery of the log to collectors, each from its own cursor.
//!
//! A [`Sink`] only knows how to deliver a batch of records; the
//! [`SinkRunner`] around it owns the loop: read the next batch from the log
//! at the sink's cursor, deliver it (retrying with exponential backoff until
//! it succeeds), then persist the cursor past it (at once when idle, at most
//! every [`CURSOR_SAVE_INTERVAL`] while catching up). Each sink runs on its own
//! thread, so a slow or absent collector delays only itself: it never
//! touches the rings, and calls never wait for it. After a restart or an
//! outage the sink resumes at its cursor, resending at most the batch that
//! was in flight and, after a crash, what it delivered in the last
//! [`CURSOR_SAVE_INTERVAL`] (at-least-once). Every kind of sink (syslog over
//! UDP, TCP or TLS; Splunk HEC, Elasticsearch bulk, webhooks) implements
//! [`Sink`] and reuses the runner.
//!
//! Retries wait with jittered exponential backoff, or as long as the
//! collector's `Retry-After` asks. A collector that refuses records as they
//! are ([`SinkError::rejected`]) is retried too (records are never skipped),
//! with an error line per attempt and the `rejected` counter.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cursor;
use crate::reader::{Entry, LogReader, Position};

/// A delivery that did not (wholly) happen; the runner retries the batch.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// What went wrong (never a secret).
    pub message: String,
    /// The collector asked to be left alone this long (HTTP `Retry-After`).
    pub retry_after: Option<Duration>,
    /// The collector refused records it will refuse again as they are (a
    /// bad request, not an outage). Still retried: at-least-once means a
    /// record is never skipped, so the runner logs these as errors and
    /// counts them for the operator to act on.
    pub rejected: bool,
}

impl SinkError {
    /// A transient failure: retried with backoff.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry_after: None,
            rejected: false,
        }
    }

    /// A failure after which the collector asked for a pause.
    pub fn retry_after(message: impl Into<String>, after: Option<Duration>) -> Self {
        Self {
            retry_after: after,
            ..Self::new(message)
        }
    }

    /// Records the collector refused as they are.
    pub fn rejected(message: impl Into<String>) -> Self {
        Self {
            rejected: true,
            ..Self::new(message)
        }
    }
}

/// Longest a busy sink goes without saving its cursor.
pub const CURSOR_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// Longest `Retry-After` honoured; a longer one is cut to this, so a
/// confused collector cannot park a sink for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Something that delivers audit records somewhere.
pub trait Sink: Send {
    /// Delivers `batch` (in log order). `Ok` means the whole batch is handed
    /// over as far as the transport can tell; on `Err` it is sent again.
    fn deliver(&mut self, batch: &[Entry]) -> Result<(), SinkError>;
}

/// How a runner paces itself.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// Most records per batch.
    pub batch_records: usize,
    /// Pause when caught up with the log.
    pub poll_interval: Duration,
    /// First pause after a failed delivery.
    pub retry_initial: Duration,
    /// Longest pause between retries.
    pub retry_max: Duration,
}

/// Counters of one sink.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Records delivered (resends included).
    pub delivered: AtomicU64,
    /// Failed deliveries.
    pub failures: AtomicU64,
    /// Failed deliveries where the collector refused records as they are
    /// (e.g. HEC 400, Elasticsearch mapping errors): an operator must act.
    pub rejected: AtomicU64,
    /// `log_seq` of the next record to deliver.
    pub next_seq: AtomicU64,
    /// Time (µs since the epoch) of the oldest record read but not yet
    /// delivered; 0 when none is waiting on the collector.
    pub oldest_pending_us: AtomicU64,
}

impl SinkStats {
    /// How long the oldest record the sink is working on has waited, µs
    /// (0 when it is not held up).
    pub fn lag_us(&self, now_us: u64) -> u64 {
        match self.oldest_pending_us.load(Ordering::Relaxed) {
            0 => 0,
            t => now_us.saturating_sub(t),
        }
    }
}

/// The `time` of a log line (which starts with it), µs since the epoch.
fn record_time_us(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"time\":\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    crate::query::parse_rfc3339_us(std::str::from_utf8(&rest[..end]).ok()?)
}

/// A running sink.
pub struct SinkRunner {
    name: String,
    stop: Arc<AtomicBool>,
    stats: Arc<SinkStats>,
    thread: Option<JoinHandle<()>>,
}

/// Errors starting a sink.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The cursor could not be read.
    #[error("sink `{name}`: cannot read its cursor `{path}`: {source}")]
    Cursor {
        /// Sink name.
        name: String,
        /// Cursor path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The thread could not be spawned.
    #[error("sink `{0}`: cannot start its thread: {1}")]
    Spawn(String, std::io::Error),
}

impl SinkRunner {
    /// Starts delivering the log in `dir` to `sink` under `name`.
    pub fn spawn(
        name: &str,
        dir: &Path,
        sink: Box<dyn Sink>,
        opts: RunnerOptions,
    ) -> Result<Self, StartError> {
        let path = cursor::cursor_path(dir, name);
        let pos = cursor::load(&path).map_err(|source| StartError::Cursor {
            name: name.to_owned(),
            path: path.clone(),
            source,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(SinkStats::default());
        stats.next_seq.store(pos.next_seq, Ordering::Relaxed);
        let run = Run {
            name: name.to_owned(),
            reader: LogReader::new(dir, pos),
            cursor: path,
            sink,
            opts,
            stats: Arc::clone(&stats),
            stop: Arc::clone(&stop),
        };
        let thread = std::thread::Builder::new()
            .name(format!("toolgate-sink-{name}"))
            .spawn(move || run.run())
            .map_err(|e| StartError::Spawn(name.to_owned(), e))?;
        Ok(Self {
            name: name.to_owned(),
            stop,
            stats,
            thread: Some(thread),
        })
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sink's counters.
    pub fn stats(&self) -> Arc<SinkStats> {
        Arc::clone(&self.stats)
    }

    /// Stops the sink (its cursor is already saved after each batch).
    pub fn shutdown(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SinkRunner {
    fn drop(&mut self) {
        self.halt();
    }
}

struct Run {
    name: String,
    reader: LogReader,
    cursor: PathBuf,
    sink: Box<dyn Sink>,
    opts: RunnerOptions,
    stats: Arc<SinkStats>,
    stop: Arc<AtomicBool>,
}

impl Run {
    /// Sleeps up to `d`, waking early to stop.
    fn pause(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.stop.load(Ordering::Acquire) {
                return false;
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(20)));
        }
        !self.stop.load(Ordering::Acquire)
    }

    fn run(mut self) {
        let mut unsaved = None;
        self.run_loop(&mut unsaved);
        // Stopping: what was delivered is not sent again after a restart.
        if let Some(pos) = unsaved {
            if let Err(e) = cursor::save(&self.cursor, pos) {
                tracing::warn!(sink = %self.name, error = %e, "cannot save the sink cursor at shutdown; the last records will be sent again");
            }
        }
    }

    /// Saves the cursor, retrying until it works; false if stopped first.
    fn save(&self, pos: Position) -> bool {
        while let Err(e) = cursor::save(&self.cursor, pos) {
            tracing::warn!(sink = %self.name, error = %e, "cannot save the sink cursor");
            if !self.pause(self.opts.retry_initial) {
                return false;
            }
        }
        true
    }

    fn run_loop(&mut self, unsaved: &mut Option<Position>) {
        let mut batch = Vec::with_capacity(self.opts.batch_records);
        let mut last_save: Option<Instant> = None;
        while !self.stop.load(Ordering::Acquire) {
            batch.clear();
            if let Err(e) = self.reader.read(self.opts.batch_records, &mut batch) {
                tracing::warn!(sink = %self.name, error = %e, "cannot read the audit log");
                if !self.pause(self.opts.retry_initial) {
                    return;
                }
                continue;
            }
            let Some(last) = batch.last() else {
                // Caught up: a good moment to save.
                if let Some(pos) = unsaved.take() {
                    if !self.save(pos) {
                        *unsaved = Some(pos);
                        return;
                    }
                    last_save = Some(Instant::now());
                }
                if !self.pause(self.opts.poll_interval) {
                    return;
                }
                continue;
            };
            let after = last.after;
            let oldest = batch.first().and_then(|e| record_time_us(&e.line));
            self.stats
                .oldest_pending_us
                .store(oldest.unwrap_or(0), Ordering::Relaxed);
            if !self.deliver(&batch) {
                return;
            }
            self.stats.oldest_pending_us.store(0, Ordering::Relaxed);
            self.stats
                .delivered
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            self.stats.next_seq.store(after.next_seq, Ordering::Relaxed);
            // Saved after delivery: a crash in between resends, never skips.
            // A save costs two fsyncs, so a sink busy catching up saves at
            // most every CURSOR_SAVE_INTERVAL (a crash then resends at most
            // that much), and at once when it catches up or stops.
            *unsaved = Some(after);
            if last_save.is_none_or(|t| t.elapsed() >= CURSOR_SAVE_INTERVAL) {
                if !self.save(after) {
                    return;
                }
                *unsaved = None;
                last_save = Some(Instant::now());
            }
        }
    }

    /// Delivers until it succeeds; false if stopped first.
    fn deliver(&mut self, batch: &[Entry]) -> bool {
        let mut wait = self.opts.retry_initial;
        let mut failing_since: Option<Instant> = None;
        let mut jitter = Jitter::new();
        loop {
            match self.sink.deliver(batch) {
                Ok(()) => {
                    if let Some(t) = failing_since {
                        tracing::info!(sink = %self.name, down_ms = t.elapsed().as_millis() as u64, "sink delivering again");
                    }
                    return true;
                }
                Err(e) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    if e.rejected {
                        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                        // Loud every time: this does not heal by waiting.
                        tracing::error!(sink = %self.name, error = %e, from_seq = batch.first().map(|b| b.seq), "collector refuses audit records; retrying (records are never skipped): fix the collector or the sink's settings");
                    }
                    if failing_since.is_none() {
                        failing_since = Some(Instant::now());
                        tracing::warn!(sink = %self.name, error = %e, from_seq = batch.first().map(|b| b.seq), "sink delivery failed; retrying with backoff (records wait in the log)");
                    } else {
                        tracing::debug!(sink = %self.name, error = %e, "sink delivery failed again");
                    }
                    // Jittered ("equal jitter": half fixed, half random), so
                    // many gateways do not hammer a recovering collector in
                    // step; a Retry-After is honoured as given.
                    let pause = match e.retry_after {
                        Some(after) => after.min(MAX_RETRY_AFTER),
                        None => wait / 2 + jitter.upto(wait / 2),
                    };
                    if !self.pause(pause) {
                        return false;
                    }
                    wait = (wait * 2).min(self.opts.retry_max);
                }
            }
        }
    }
}

/// A small xorshift generator for backoff jitter (not for secrets).
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        Self(u64::from_le_bytes(seed) | 1)
    }

    /// A uniformly drawn duration in `0..=max`.
    fn upto(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let ns = max.as_nanos().min(u128::from(u64::MAX)) as u64;
        Duration::from_nanos(if ns == 0 { 0 } else { self.0 % (ns + 1) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::appender::Appender;
    use crate::writer::tests_support::record;
    use std::sync::Mutex;

    /// Records what it got; fails while `down` is set.
    struct Memory {
        got: Arc<Mutex<Vec<u64>>>,
        down: Arc<AtomicBool>,
    }

    impl Sink for Memory {
        fn deliver(&mut self, batch: &[Entry]) -> Result<(), SinkError> {
            if self.down.load(Ordering::Relaxed) {
                return Err(SinkError::new("collector down"));
            }
            let mut g = self.got.lock().unwrap_or_else(|p| p.into_inner());
            g.extend(batch.iter().map(|e| e.seq));
            Ok(())
        }
    }

    fn append(log: &mut Appender, n: usize) {
        for i in 0..n {
            let mut buf = Vec::new();
            log.encode(&record(&format!("t{i}")), &mut buf);
            assert!(log.append(&buf).is_ok());
            if log.full() {
                assert!(log.seal().is_ok());
            }
        }
    }

    fn wait_for(got: &Arc<Mutex<Vec<u64>>>, n: usize) -> Vec<u64> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let g = got.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if g.len() >= n || Instant::now() > deadline {
                return g;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn record_time_is_read_off_the_line() {
        assert_eq!(
            record_time_us(br#"{"time":"1970-01-01T00:00:01.000002Z","shard":0}"#),
            Some(1_000_002)
        );
        assert_eq!(record_time_us(b"{}"), None);
    }

    #[test]
    fn sink_survives_an_outage_and_a_restart_without_loss() {
        let dir = std::env::temp_dir().join(format!("toolgate-sink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut log = Appender::open(&dir, b"sink-test-key-0123".to_vec(), 1500).unwrap();
        let opts = RunnerOptions {
            batch_records: 4,
            poll_interval: Duration::from_millis(5),
            retry_initial: Duration::from_millis(5),
            retry_max: Duration::from_millis(20),
        };
        let got = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(AtomicBool::new(true));
        let mem = || {
            Box::new(Memory {
                got: Arc::clone(&got),
                down: Arc::clone(&down),
            })
        };
        append(&mut log, 10);
        let r = SinkRunner::spawn("mem", &dir, mem(), opts.clone()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            got.lock().map(|g| g.is_empty()).unwrap_or(false),
            "nothing while down"
        );
        assert!(r.stats().failures.load(Ordering::Relaxed) > 0);
        let pending = r.stats().oldest_pending_us.load(Ordering::Relaxed);
        assert!(pending > 0, "the held-up batch's age is known");
        assert!(r.stats().lag_us(pending + 5) == 5);
        down.store(false, Ordering::Relaxed);
        assert_eq!(wait_for(&got, 10), (1..=10).collect::<Vec<_>>());
        r.shutdown();
        // More records, across segment rotations, while the sink is stopped.
        append(&mut log, 20);
        let r = SinkRunner::spawn("mem", &dir, mem(), opts).unwrap();
        let all = wait_for(&got, 30);
        r.shutdown();
        assert_eq!(
            all,
            (1..=30).collect::<Vec<_>>(),
            "resumed at its cursor, nothing lost or repeated"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
