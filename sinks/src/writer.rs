//! The audit thread: drains every shard's ring into the append-only log.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::ring::AuditConsumer;

/// Name of the log file inside the audit directory.
pub const LOG_FILE: &str = "audit.jsonl";

/// Most records taken from one ring per batch. Large on purpose: a write can
/// block while the log's last page is under writeback after a sync, and
/// every record that arrived meanwhile must fit in the next batch, or the
/// thread falls behind a steady load it could otherwise carry.
const BATCH_PER_RING: usize = 32 * 1024;

/// Settings of the audit thread.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Directory holding [`LOG_FILE`]; created if missing.
    pub dir: PathBuf,
    /// Longest time a written record waits for `fdatasync`.
    pub fsync_interval: Duration,
}

/// Counters of the audit thread, readable from anywhere.
#[derive(Debug, Default)]
pub struct AuditStats {
    /// Records appended to the log.
    pub records_written: AtomicU64,
    /// Failed writes or syncs (each retried).
    pub write_errors: AtomicU64,
    /// `fdatasync` calls.
    pub syncs: AtomicU64,
}

/// Errors starting the audit thread.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// The directory or file could not be opened.
    #[error("cannot open the audit log `{path}`: {source}")]
    Open {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The thread could not be spawned.
    #[error("cannot start the audit thread: {0}")]
    Spawn(std::io::Error),
}

/// Handle of the running audit thread.
pub struct AuditWriter {
    stop: Arc<AtomicBool>,
    stats: Arc<AuditStats>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl AuditWriter {
    /// Opens the log and starts draining `rings`.
    pub fn spawn(cfg: WriterConfig, rings: Vec<AuditConsumer>) -> Result<Self, WriterError> {
        let path = cfg.dir.join(LOG_FILE);
        let file = open_log(&cfg.dir, &path).map_err(|source| WriterError::Open {
            path: path.clone(),
            source,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(AuditStats::default());
        let thread = {
            let (stop, stats) = (Arc::clone(&stop), Arc::clone(&stats));
            let interval = cfg.fsync_interval;
            std::thread::Builder::new()
                .name("toolgate-audit".into())
                .spawn(move || run(file, rings, interval, &stop, &stats))
                .map_err(WriterError::Spawn)?
        };
        Ok(Self {
            stop,
            stats,
            thread: Some(thread),
            path,
        })
    }

    /// The thread's counters.
    pub fn stats(&self) -> Arc<AuditStats> {
        Arc::clone(&self.stats)
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Drains what the rings hold, syncs, and stops the thread.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open_log(dir: &Path, path: &Path) -> std::io::Result<File> {
    std::fs::create_dir_all(dir)?;
    OpenOptions::new().create(true).append(true).open(path)
}

fn run(
    mut file: File,
    mut rings: Vec<AuditConsumer>,
    interval: Duration,
    stop: &AtomicBool,
    stats: &AuditStats,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut pending_records = 0u64;
    let mut unsynced = false;
    let mut last_sync = Instant::now();
    let mut idle_since: Option<Instant> = None;
    loop {
        let stopping = stop.load(Ordering::Acquire);
        // A failed write keeps its batch; take no more until it is on disk.
        if buf.is_empty() {
            for ring in &mut rings {
                for _ in 0..BATCH_PER_RING {
                    match ring.pop() {
                        Ok(rec) => {
                            rec.encode_json(&mut buf);
                            pending_records += 1;
                        }
                        Err(_) => break,
                    }
                }
            }
        }
        if !buf.is_empty() {
            match file.write_all(&buf) {
                Ok(()) => {
                    buf.clear();
                    stats
                        .records_written
                        .fetch_add(pending_records, Ordering::Relaxed);
                    pending_records = 0;
                    unsynced = true;
                    idle_since = None;
                }
                Err(e) => {
                    // A partial write may have landed; the retry appends the
                    // whole batch again, so a reader may see a torn line
                    // followed by the intact records. Never a lost record.
                    stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "audit log write failed; new calls are refused once the rings fill");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
        }
        if unsynced && (last_sync.elapsed() >= interval || stopping) {
            match file.sync_data() {
                Ok(()) => {
                    unsynced = false;
                    stats.syncs.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "audit log sync failed");
                }
            }
            last_sync = Instant::now();
        }
        let drained = rings.iter().all(|r| r.is_empty());
        if stopping && drained && buf.is_empty() && !unsynced {
            return;
        }
        if drained {
            // Short naps while traffic is recent keep record latency low;
            // longer ones when idle keep the thread off the cores.
            let since = *idle_since.get_or_insert_with(Instant::now);
            let nap = if since.elapsed() < Duration::from_millis(50) {
                200
            } else {
                2000
            };
            std::thread::sleep(
                Duration::from_micros(nap).min(interval.max(Duration::from_micros(200))),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{audit_ring, AuditProducer};
    use toolgate_core::audit::{AuditRecord, Decision, Outcome};

    fn record(tool: &str) -> AuditRecord {
        AuditRecord {
            time_us: 1,
            shard: 0,
            seq: 0,
            request_id: Some("1".into()),
            agent: Some(Arc::from("a")),
            user: None,
            method: Some("tools/call".into()),
            tool: Some(tool.into()),
            upstream: None,
            decision: Decision::Allow,
            reason: "attached",
            status: 200,
            outcome: Outcome::Success,
            error_code: None,
            latency_us: 3,
            client: None,
            protocol_version: None,
            redactions: Vec::new(),
        }
    }

    #[test]
    fn every_committed_record_reaches_the_log_in_shard_order() {
        let dir = std::env::temp_dir().join(format!("toolgate-audit-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (p0, c0) = audit_ring(64);
        let (p1, c1) = audit_ring(64);
        let (mut p0, mut p1) = (AuditProducer::new(0, p0), AuditProducer::new(1, p1));
        let w = AuditWriter::spawn(
            WriterConfig {
                dir: dir.clone(),
                fsync_interval: Duration::from_millis(5),
            },
            vec![c0, c1],
        );
        let w = w.unwrap_or_else(|e| unreachable!("{e}"));
        for i in 0..500 {
            let p = if i % 2 == 0 { &mut p0 } else { &mut p1 };
            // Wait for room rather than drop: the ring is smaller than the burst.
            let adm = loop {
                match p.admit() {
                    Ok(a) => break a,
                    Err(_) => std::thread::sleep(Duration::from_micros(100)),
                }
            };
            p.commit(adm, record(&format!("t{i}")));
        }
        let stats = w.stats();
        w.shutdown();
        assert_eq!(stats.records_written.load(Ordering::Relaxed), 500);
        let text = std::fs::read_to_string(dir.join(LOG_FILE)).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_default())
            .collect();
        assert_eq!(lines.len(), 500);
        for shard in 0..2u64 {
            let seqs: Vec<u64> = lines
                .iter()
                .filter(|v| v["shard"] == shard)
                .map(|v| v["seq"].as_u64().unwrap_or(u64::MAX))
                .collect();
            assert_eq!(seqs, (0..250).collect::<Vec<_>>());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
