//! The audit thread: drains every shard's ring into the hash-chained log.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use toolgate_core::config::Durability;

use crate::appender::{Appender, OpenError};
use crate::health::AuditHealth;
use crate::latency::Histogram;
use crate::ring::AuditConsumer;

/// Most records taken from one ring per batch. Large on purpose: a write can
/// block while the log's last page is under writeback after a sync, and
/// every record that arrived meanwhile must fit in the next batch, or the
/// thread falls behind a steady load it could otherwise carry.
const BATCH_PER_RING: usize = 32 * 1024;

/// Pause between attempts while the log cannot be written.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How long shutdown keeps retrying a log that cannot be written.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Settings of the audit thread.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Directory of the log's segments; created if missing.
    pub dir: PathBuf,
    /// Longest time a written record waits for `fdatasync` (`batch` durability).
    pub fsync_interval: Duration,
    /// Size at which a segment is sealed and the next one started.
    pub segment_bytes: u64,
    /// Age at which a segment (holding a record) is sealed; `None`: size only.
    pub segment_max_age: Option<Duration>,
    /// `record`: fdatasync after every write, before calls are answered.
    pub durability: Durability,
    /// Whether the audit thread runs as background work ([`crate::sched`]);
    /// the sync thread always does.
    pub background: bool,
    /// Key of segment seals.
    pub key: Vec<u8>,
}

/// Counters of the audit thread, readable from anywhere.
#[derive(Debug, Default)]
pub struct AuditStats {
    /// Records appended to the log.
    pub records_written: AtomicU64,
    /// Writes made by a shard itself ([`InlineWriter`]).
    pub shard_writes: AtomicU64,
    /// Failed writes, syncs or seals (each retried).
    pub write_errors: AtomicU64,
    /// `fdatasync` calls.
    pub syncs: AtomicU64,
    /// How long each successful `fdatasync` of the log took (periodic and
    /// per-record syncs; not those of seals).
    pub fsync: Histogram,
    /// `log_seq` the next written record will get (sinks' lag is measured against it).
    pub next_log_seq: AtomicU64,
}

/// Errors starting the audit thread.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// The log could not be opened or recovered.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The thread could not be spawned.
    #[error("cannot start the audit thread: {0}")]
    Spawn(std::io::Error),
}

/// Handle of the running audit thread.
pub struct AuditWriter {
    stop: Arc<AtomicBool>,
    stats: Arc<AuditStats>,
    health: Arc<AuditHealth>,
    state: Arc<Mutex<LogState>>,
    syncing: Arc<AtomicBool>,
    durability: Durability,
    fsync_interval: Duration,
    thread: Option<JoinHandle<()>>,
    dir: PathBuf,
}

impl AuditWriter {
    /// Opens the log and starts draining `rings` (index = shard), reporting
    /// through `health`.
    pub fn spawn(
        cfg: WriterConfig,
        rings: Vec<AuditConsumer>,
        health: Arc<AuditHealth>,
    ) -> Result<Self, WriterError> {
        let mut log = Appender::open(&cfg.dir, cfg.key.clone(), cfg.segment_bytes)?;
        log.set_max_age(cfg.segment_max_age);
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(AuditStats::default());
        let state = Arc::new(Mutex::new(LogState {
            log,
            upto: vec![0; rings.len()],
            rings,
            buf: Vec::with_capacity(1 << 20),
            pending: 0,
            unsynced: false,
            last_sync: Instant::now(),
        }));
        let syncing = Arc::new(AtomicBool::new(false));
        let thread = {
            let syncing = Arc::clone(&syncing);
            let (stop, stats, health, state) = (
                Arc::clone(&stop),
                Arc::clone(&stats),
                Arc::clone(&health),
                Arc::clone(&state),
            );
            let cfg = cfg.clone();
            std::thread::Builder::new()
                .name("toolgate-audit".into())
                .spawn(move || {
                    if cfg.background {
                        crate::sched::background_batch();
                    }
                    Drain {
                        syncer: Syncer::spawn(Arc::clone(&stats), Arc::clone(&health), syncing),
                        cfg,
                        stats,
                        health,
                        failing_since: None,
                        last_complaint: None,
                    }
                    .run(&state, &stop)
                })
                .map_err(WriterError::Spawn)?
        };
        health.set_writer(thread.thread().clone());
        Ok(Self {
            stop,
            stats,
            health,
            state,
            syncing,
            durability: cfg.durability,
            fsync_interval: cfg.fsync_interval,
            thread: Some(thread),
            dir: cfg.dir,
        })
    }

    /// The thread's counters.
    pub fn stats(&self) -> Arc<AuditStats> {
        Arc::clone(&self.stats)
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A handle with which shards write queued records themselves
    /// ([`InlineWriter`]); `None` with `record` durability, where every
    /// write is followed by an `fdatasync` no shard may wait for.
    pub fn inline(&self) -> Option<InlineWriter> {
        (self.durability == Durability::Batch).then(|| InlineWriter {
            state: Arc::clone(&self.state),
            syncing: Arc::clone(&self.syncing),
            stats: Arc::clone(&self.stats),
            health: Arc::clone(&self.health),
            fsync_interval: self.fsync_interval,
        })
    }

    /// Drains what the rings hold, syncs, seals the open segment, and stops.
    pub fn shutdown(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.health.unpark_writer();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The log and the rings: whoever holds this writes. The audit thread
/// takes it (waiting, if need be) for every turn; a shard takes it only
/// when it is free ([`InlineWriter::try_write`]), and never waits for it.
struct LogState {
    log: Appender,
    rings: Vec<AuditConsumer>,
    /// Records encoded and not yet written (a failed write keeps its batch).
    buf: Vec<u8>,
    /// Per ring, the sequence after the last record taken.
    upto: Vec<u64>,
    /// Records in `buf`.
    pending: u64,
    /// Written since the last sync was started.
    unsynced: bool,
    last_sync: Instant,
}

impl LogState {
    /// Encodes what the rings hold into `buf`, unless a failed write still
    /// holds its batch there (take no more until that is on disk).
    fn take(&mut self, health: &AuditHealth) {
        if !self.buf.is_empty() {
            return;
        }
        health.writer_looking();
        for (i, ring) in self.rings.iter_mut().enumerate() {
            for _ in 0..BATCH_PER_RING {
                let Ok(rec) = ring.pop() else { break };
                self.upto[i] = rec.seq + 1;
                if self.log.encode(&rec, &mut self.buf) {
                    self.pending += 1;
                }
            }
        }
    }

    /// Appends `buf` to the log and moves the marks the answers wait on.
    fn write(&mut self, stats: &AuditStats, health: &AuditHealth) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.log.append(&self.buf)?;
        self.buf.clear();
        stats
            .records_written
            .fetch_add(std::mem::take(&mut self.pending), Ordering::Relaxed);
        stats
            .next_log_seq
            .store(self.log.next_seq(), Ordering::Relaxed);
        health.mark_written(&self.upto);
        self.unsynced = true;
        Ok(())
    }
}

fn lock(state: &Mutex<LogState>) -> MutexGuard<'_, LogState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// A shard's way to write its records itself (`[audit] writer =
/// "shards"`): instead of waking the audit thread and waiting for it to
/// run, the shard about to wait for its records writes every queued record
/// (of every shard) in one `write`, if no one else is writing and no sync
/// is running (a write during an `fdatasync` can wait for the file
/// system's journal). Syncs, seals, new segments and failures stay with the
/// audit thread, which the shard wakes when one is due; a shard never waits
/// for the log's lock.
#[derive(Clone)]
pub struct InlineWriter {
    state: Arc<Mutex<LogState>>,
    /// An `fdatasync` of the log is running: a write now may wait for the
    /// file system's journal, so it is left to the audit thread.
    syncing: Arc<AtomicBool>,
    stats: Arc<AuditStats>,
    health: Arc<AuditHealth>,
    fsync_interval: Duration,
}

impl InlineWriter {
    /// Writes what the rings hold if the log is free and ready; otherwise
    /// (busy, a segment to seal or open, a failed write pending) wakes the
    /// audit thread, which writes it. Returns whether this call wrote.
    pub fn try_write(&self) -> bool {
        if self.syncing.load(Ordering::Acquire) {
            self.health.wake_writer();
            return false;
        }
        let Ok(mut st) = self.state.try_lock() else {
            self.health.wake_writer();
            return false;
        };
        if !st.buf.is_empty() || !st.log.ready_for_append() {
            drop(st);
            self.health.wake_writer();
            return false;
        }
        st.take(&self.health);
        if st.buf.is_empty() {
            return false;
        }
        let written = st.write(&self.stats, &self.health).is_ok();
        if written {
            self.stats.shard_writes.fetch_add(1, Ordering::Relaxed);
        }
        let due = !written || st.log.full() || st.last_sync.elapsed() >= self.fsync_interval;
        drop(st);
        if due {
            self.health.wake_writer();
        }
        written
    }
}

struct Drain {
    syncer: Syncer,
    cfg: WriterConfig,
    stats: Arc<AuditStats>,
    health: Arc<AuditHealth>,
    failing_since: Option<Instant>,
    last_complaint: Option<Instant>,
}

/// What a turn of the audit thread ended with.
enum Turn {
    /// Something failed; pause before the next turn.
    Failed,
    /// The rings were empty at the end of the turn; whether it wrote.
    Drained { wrote: bool },
    /// More may be queued.
    Busy,
    /// Stopping, and everything is written and sealed (or given up on).
    Done,
}

impl Drain {
    fn run(mut self, state: &Mutex<LogState>, stop: &AtomicBool) {
        let mut idle_since: Option<Instant> = None;
        loop {
            let stopping = stop.load(Ordering::Acquire);
            let turn = self.turn(&mut lock(state), stopping);
            match turn {
                Turn::Done => return,
                Turn::Failed => std::thread::sleep(RETRY_PAUSE),
                Turn::Busy => idle_since = None,
                Turn::Drained { wrote } => {
                    if wrote {
                        idle_since = None;
                    }
                    // Producers (or shards that find the log busy) wake the
                    // thread; the timeout only bounds how late a sync can be
                    // when traffic stops.
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    let nap = if since.elapsed() < Duration::from_millis(50) {
                        Duration::from_micros(500)
                    } else {
                        Duration::from_millis(5)
                    };
                    std::thread::park_timeout(
                        nap.min(self.cfg.fsync_interval.max(Duration::from_micros(200))),
                    );
                }
            }
        }
    }

    /// One turn: take and write what is queued, sync when due, seal a full
    /// segment, stop when asked and drained.
    fn turn(&mut self, st: &mut LogState, stopping: bool) -> Turn {
        st.take(&self.health);
        let wrote = !st.buf.is_empty();
        if let Err(e) = st.write(&self.stats, &self.health) {
            self.failed("write", &e);
            if stopping && self.given_up(st) {
                return Turn::Done;
            }
            return Turn::Failed;
        }
        // With batch durability, answers wait only for the write; the
        // periodic sync runs on the syncer thread so that a slow fdatasync
        // never holds up the next batch (and the answers waiting on it).
        // Per-record durability, rotation and shutdown sync here, inline.
        let inline = self.cfg.durability == Durability::Record || stopping || st.log.full();
        if st.unsynced && !inline && st.last_sync.elapsed() >= self.cfg.fsync_interval {
            if let Some(failure) = self.syncer.take_failure() {
                self.failed("sync", &failure);
                return Turn::Failed;
            } else if self.syncer.busy() {
                // Still syncing the last batch: ask again next turn,
                // without duplicating the file handle meanwhile.
            } else if let Some(Ok(file)) = st.log.sync_handle() {
                if self.syncer.request(file, st.upto.clone()) {
                    st.unsynced = false;
                    st.last_sync = Instant::now();
                }
            }
        }
        if st.unsynced && inline {
            let started = Instant::now();
            if let Err(e) = st.log.sync() {
                self.failed("sync", &e);
                if stopping && self.given_up(st) {
                    return Turn::Done;
                }
                return Turn::Failed;
            }
            st.unsynced = false;
            st.last_sync = Instant::now();
            self.stats.fsync.observe(started.elapsed());
            self.stats.syncs.fetch_add(1, Ordering::Relaxed);
            self.health.mark_synced(&st.upto);
        }
        if st.log.full() {
            if let Err(e) = st.log.seal() {
                self.failed("seal", &e);
                return Turn::Failed;
            }
        }
        self.recovered();
        let drained = st.rings.iter().all(|r| r.is_empty());
        if stopping && drained {
            if let Err(e) = st.log.seal() {
                tracing::error!(error = %e, "cannot seal the audit segment at shutdown; the next start seals it");
            }
            return Turn::Done;
        }
        if drained {
            Turn::Drained { wrote }
        } else {
            Turn::Busy
        }
    }

    /// Marks the log down (new calls are refused) and says so loudly: at
    /// once on the first failure, then every few seconds while it lasts.
    fn failed(&mut self, what: &str, e: &std::io::Error) {
        self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
        self.failing_since.get_or_insert_with(Instant::now);
        let was_ok = self.health.set_log_ok(false);
        let quiet = self
            .last_complaint
            .is_some_and(|t| t.elapsed() < Duration::from_secs(5));
        if was_ok || !quiet {
            self.last_complaint = Some(Instant::now());
            tracing::error!(
                error = %e,
                dir = %self.cfg.dir.display(),
                "audit log {what} failed: new calls are refused until the log can be written again"
            );
        }
    }

    fn recovered(&mut self) {
        if let Some(since) = self.failing_since.take() {
            self.health.set_log_ok(true);
            self.last_complaint = None;
            tracing::warn!(
                down_ms = since.elapsed().as_millis() as u64,
                "audit log writable again: calls are accepted"
            );
        }
    }

    /// At shutdown, a log that stays unwritable is given up on after a grace.
    fn given_up(&self, st: &LogState) -> bool {
        let over = self
            .failing_since
            .is_some_and(|t| t.elapsed() >= SHUTDOWN_GRACE);
        if over {
            let queued: usize = st.rings.iter().map(|r| r.slots()).sum();
            tracing::error!(
                unwritten = st.pending + queued as u64,
                "shutting down with audit records that could not be written"
            );
        }
        over
    }
}

/// Runs the periodic `fdatasync` of batch durability off the audit thread.
/// One sync at a time: a request while one runs is declined, and the writer
/// asks again at its next turn.
struct Syncer {
    tx: std::sync::mpsc::SyncSender<(std::fs::File, Vec<u64>)>,
    busy: Arc<AtomicBool>,
    failure: Arc<std::sync::Mutex<Option<std::io::Error>>>,
}

impl Syncer {
    fn spawn(stats: Arc<AuditStats>, health: Arc<AuditHealth>, busy: Arc<AtomicBool>) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(std::fs::File, Vec<u64>)>(1);
        let failure = Arc::new(std::sync::Mutex::new(None));
        let spawned = {
            let (busy, failure) = (Arc::clone(&busy), Arc::clone(&failure));
            std::thread::Builder::new()
                .name("toolgate-audit-sync".into())
                .spawn(move || {
                    crate::sched::background_batch();
                    for (file, upto) in rx {
                        let started = Instant::now();
                        match file.sync_data() {
                            Ok(()) => {
                                stats.fsync.observe(started.elapsed());
                                stats.syncs.fetch_add(1, Ordering::Relaxed);
                                health.mark_synced(&upto);
                            }
                            Err(e) => *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e),
                        }
                        busy.store(false, Ordering::Release);
                    }
                })
        };
        if let Err(e) = spawned {
            // Requests then fail to send and the writer keeps syncing inline.
            tracing::warn!(error = %e, "no audit sync thread; syncing on the audit thread");
        }
        Self { tx, busy, failure }
    }

    /// Hands a sync to the thread; false if one is still running.
    fn request(&self, file: std::fs::File, upto: Vec<u64>) -> bool {
        if self.busy.swap(true, Ordering::AcqRel) {
            return false;
        }
        if self.tx.try_send((file, upto)).is_err() {
            self.busy.store(false, Ordering::Release);
            return false;
        }
        true
    }

    /// Whether a sync is still running.
    fn busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    /// A sync failure the writer has not seen yet.
    fn take_failure(&self) -> Option<std::io::Error> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use std::sync::Arc;
    use toolgate_core::audit::AuditRecord;

    /// A typical allowed call's record.
    pub(crate) fn record(tool: &str) -> AuditRecord {
        AuditRecord {
            request_id: Some("1".into()),
            agent: Some(Arc::from("a")),
            method: Some("tools/call".into()),
            tool: Some(tool.into()),
            target: None,
            latency_us: 3,
            ..AuditRecord::new(1, toolgate_core::audit::Reason::Attached)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::record;
    use super::*;
    use crate::ring::{audit_ring, AuditProducer};
    use crate::segment::{list_segments, Seal};

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("toolgate-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn config(dir: &Path, segment_bytes: u64) -> WriterConfig {
        WriterConfig {
            dir: dir.to_path_buf(),
            fsync_interval: Duration::from_millis(5),
            segment_bytes,
            segment_max_age: None,
            durability: Durability::Batch,
            background: true,
            key: b"test-key-0123456789".to_vec(),
        }
    }

    fn push(p: &mut AuditProducer, tool: &str) -> u64 {
        // Wait for room rather than drop: the ring is smaller than the burst.
        let adm = loop {
            match p.admit() {
                Ok(a) => break a,
                Err(_) => std::thread::sleep(Duration::from_micros(100)),
            }
        };
        p.commit(adm, record(tool))
    }

    fn all_lines(dir: &Path) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for seg in list_segments(dir).unwrap_or_default() {
            let text = std::fs::read_to_string(&seg.path).unwrap_or_default();
            out.extend(
                text.lines()
                    .map(|l| serde_json::from_str(l).unwrap_or_default()),
            );
        }
        out
    }

    fn wait_recorded(p: &AuditProducer, seq: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !p.recorded(seq) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
        p.recorded(seq)
    }

    #[test]
    fn a_shard_writes_queued_records_itself_and_never_waits_for_the_log() {
        let dir = temp_dir("audit-inline");
        let (p, c) = audit_ring(64);
        let health = AuditHealth::new(1, Durability::Batch);
        let mut p = AuditProducer::new(0, p, Arc::clone(&health));
        p.set_wake_on_commit(false);
        let w = AuditWriter::spawn(config(&dir, 1 << 20), vec![c], health).unwrap();
        let inline = w.inline().expect("batch durability writes inline");
        // Opening the first segment is the thread's: the shard hands it over.
        let first = push(&mut p, "t0");
        assert!(wait_recorded(&p, first));
        // The log is open and free: the record is in when the call returns.
        let second = push(&mut p, "t1");
        inline.try_write();
        assert!(p.recorded(second), "written before try_write returned");
        let by_shards = w.stats().shard_writes.load(Ordering::Relaxed);
        // Someone else holds the log: the shard does not wait, and the
        // thread (woken by the shard) writes the record once it is free.
        let held = lock(&inline.state);
        let third = push(&mut p, "t2");
        assert!(!inline.try_write());
        assert!(!p.recorded(third));
        drop(held);
        assert!(wait_recorded(&p, third));
        assert_eq!(
            w.stats().shard_writes.load(Ordering::Relaxed),
            by_shards,
            "the thread wrote the third"
        );
        w.shutdown();
        let lines = all_lines(&dir);
        let tools: Vec<&str> = lines.iter().filter_map(|v| v["tool"].as_str()).collect();
        assert_eq!(tools, ["t0", "t1", "t2"]);
        let log_seqs: Vec<u64> = lines.iter().filter_map(|v| v["log_seq"].as_u64()).collect();
        assert_eq!(log_seqs, [1, 2, 3]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn record_durability_never_writes_from_a_shard() {
        let dir = temp_dir("audit-inline-record");
        let (_p, c) = audit_ring(8);
        let health = AuditHealth::new(1, Durability::Record);
        let cfg = WriterConfig {
            durability: Durability::Record,
            ..config(&dir, 1 << 20)
        };
        let w = AuditWriter::spawn(cfg, vec![c], health).unwrap();
        assert!(w.inline().is_none());
        w.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_committed_record_reaches_the_log_in_shard_order() {
        let dir = temp_dir("audit-order");
        let (p0, c0) = audit_ring(64);
        let (p1, c1) = audit_ring(64);
        let health = AuditHealth::new(2, Durability::Batch);
        let (mut p0, mut p1) = (
            AuditProducer::new(0, p0, Arc::clone(&health)),
            AuditProducer::new(1, p1, Arc::clone(&health)),
        );
        let w = AuditWriter::spawn(config(&dir, 1 << 20), vec![c0, c1], health);
        let w = w.unwrap();
        let mut last = 0;
        for i in 0..500 {
            let p = if i % 2 == 0 { &mut p0 } else { &mut p1 };
            last = push(p, &format!("t{i}"));
        }
        assert!(
            wait_recorded(&p1, last),
            "the last record is reported written"
        );
        let stats = w.stats();
        // Batch durability syncs what was written within its interval.
        let deadline = Instant::now() + Duration::from_secs(10);
        while stats.syncs.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        w.shutdown();
        assert_eq!(stats.records_written.load(Ordering::Relaxed), 500);
        // The sync thread may finish a sync just after shutdown returns.
        let deadline = Instant::now() + Duration::from_secs(2);
        let timed = loop {
            let syncs = stats.syncs.load(Ordering::Relaxed);
            let timed = stats.fsync.snapshot().count();
            if timed == syncs || Instant::now() > deadline {
                break (timed, syncs);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(timed.1 >= 1, "the writes were synced");
        assert_eq!(timed.0, timed.1, "every sync is timed");
        let lines = all_lines(&dir);
        assert_eq!(lines.len(), 500);
        for shard in 0..2u64 {
            let seqs: Vec<u64> = lines
                .iter()
                .filter(|v| v["shard"] == shard)
                .map(|v| v["seq"].as_u64().unwrap_or(u64::MAX))
                .collect();
            assert_eq!(seqs, (0..250).collect::<Vec<_>>());
        }
        let log_seqs: Vec<u64> = lines
            .iter()
            .map(|v| v["log_seq"].as_u64().unwrap_or(0))
            .collect();
        assert_eq!(log_seqs, (1..=500).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn segments_rotate_by_size_and_the_chain_continues_across_restarts() {
        let dir = temp_dir("audit-rotate");
        for run in 0..2 {
            let (p, c) = audit_ring(64);
            let health = AuditHealth::new(1, Durability::Record);
            let mut p = AuditProducer::new(0, p, Arc::clone(&health));
            let w = AuditWriter::spawn(config(&dir, 2048), vec![c], health);
            let w = w.unwrap();
            for i in 0..40 {
                // One record per write, so rotation (checked between writes) can cut anywhere.
                let seq = push(&mut p, &format!("run{run}-{i}"));
                wait_recorded(&p, seq);
            }
            w.shutdown();
        }
        let segs = list_segments(&dir).unwrap_or_default();
        assert!(segs.len() >= 4, "small segments rotate: {segs:?}");
        for seg in &segs {
            let seal = std::fs::read(seg.seal_path()).unwrap_or_default();
            let seal = Seal::decode(&seal, Some(b"test-key-0123456789"));
            assert_eq!(
                seal.map(|s| s.first_seq).ok(),
                Some(seg.first_seq),
                "every segment is sealed"
            );
        }
        let lines = all_lines(&dir);
        assert_eq!(lines.len(), 80);
        for (i, pair) in lines.windows(2).enumerate() {
            assert_eq!(pair[1]["prev_hash"], pair[0]["hash"], "link {i}");
            assert_eq!(pair[1]["log_seq"].as_u64(), Some(i as u64 + 2));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_quiet_segment_is_sealed_by_age_and_the_next_record_starts_another() {
        let dir = temp_dir("audit-age");
        let (p, c) = audit_ring(16);
        let health = AuditHealth::new(1, Durability::Batch);
        let mut p = AuditProducer::new(0, p, Arc::clone(&health));
        let cfg = WriterConfig {
            segment_max_age: Some(Duration::from_millis(100)),
            ..config(&dir, 1 << 20)
        };
        let w = AuditWriter::spawn(cfg, vec![c], health);
        let w = w.unwrap();
        let sealed = |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let segs = list_segments(&dir).unwrap_or_default();
                let done = segs.iter().filter(|s| s.seal_path().exists()).count();
                if done >= n || Instant::now() > deadline {
                    return (segs.len(), done);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        let started = Instant::now();
        push(&mut p, "first");
        // No more traffic: the segment is sealed by age alone, while running.
        assert_eq!(sealed(1), (1, 1));
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "not before its age"
        );
        push(&mut p, "second");
        assert_eq!(
            sealed(2),
            (2, 2),
            "the next record starts a new segment, sealed in turn"
        );
        w.shutdown();
        let lines = all_lines(&dir);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["prev_hash"], lines[0]["hash"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn torn_last_line_is_cut_and_the_segment_sealed_at_restart() {
        let dir = temp_dir("audit-torn");
        {
            let (p, c) = audit_ring(16);
            let health = AuditHealth::new(1, Durability::Batch);
            let mut p = AuditProducer::new(0, p, Arc::clone(&health));
            let w = AuditWriter::spawn(config(&dir, 1 << 20), vec![c], health);
            let w = w.unwrap();
            for i in 0..3 {
                push(&mut p, &format!("t{i}"));
            }
            w.shutdown();
        }
        // Simulate a crash: drop the seal, leave half a line.
        let segs = list_segments(&dir).unwrap_or_default();
        let _ = std::fs::remove_file(segs[0].seal_path());
        let mut text = std::fs::read(&segs[0].path).unwrap_or_default();
        text.extend_from_slice(b"{\"time\":\"20");
        let _ = std::fs::write(&segs[0].path, &text);
        let log = Appender::open(&dir, b"test-key-0123456789".to_vec(), 1 << 20);
        let log = log.unwrap();
        assert_eq!(log.next_seq(), 4);
        assert!(segs[0].seal_path().exists());
        assert_eq!(all_lines(&dir).len(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
