//! Retention: removes the oldest whole sealed segments once they are older
//! than `retain_days` or the log is larger than `retain_bytes`, but never a
//! segment some configured sink has not yet delivered, never the newest
//! sealed segment, and never the open one.
//!
//! Removal keeps the log provable. Before a segment goes, its seal is
//! written as the log's *anchor*, `<dir>/retained.seal` (the same MACed
//! line as a segment seal, atomically replaced): "records up to N ended in
//! hash H". `audit verify` then checks the first kept segment against the
//! anchor instead of against the genesis hash, and the anchor's MAC against
//! the checkpoint key, so removing segments by hand (without the key) is
//! still reported as missing records. The anchor is written before the
//! segment is deleted: a crash in between leaves a segment the anchor
//! already covers, which verify skips and the next sweep removes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::cursor;
use crate::segment::{list_segments, write_atomically, Seal};

/// File name of the anchor inside the audit directory.
pub const ANCHOR_FILE: &str = "retained.seal";

/// How often the retention thread looks.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Path of the anchor in `dir`.
pub fn anchor_path(dir: &Path) -> PathBuf {
    dir.join(ANCHOR_FILE)
}

/// Reads the anchor, if retention ever removed segments; with `key`, checks
/// its MAC.
pub fn read_anchor(
    dir: &Path,
    key: Option<&[u8]>,
) -> std::io::Result<Option<Result<Seal, crate::segment::SealError>>> {
    match std::fs::read(anchor_path(dir)) {
        Ok(text) => Ok(Some(Seal::decode(&text, key))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// What to keep.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Remove segments sealed longer ago than this.
    pub max_age: Option<Duration>,
    /// Remove the oldest segments while the log is larger than this, bytes.
    pub max_bytes: Option<u64>,
}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Segments removed.
    pub segments: usize,
    /// Bytes freed.
    pub bytes: u64,
    /// The sink whose cursor stopped removal of a segment that was due.
    pub held_by: Option<String>,
}

/// One pass: removes due segments, oldest first, stopping at the first that
/// must stay (so the kept log is one contiguous chain).
pub fn sweep(
    dir: &Path,
    policy: &Policy,
    sinks: &[String],
    key: &[u8],
    now: SystemTime,
) -> std::io::Result<Swept> {
    let mut out = Swept::default();
    if policy.max_age.is_none() && policy.max_bytes.is_none() {
        return Ok(out);
    }
    let segs = list_segments(dir)?;
    let anchor = read_anchor(dir, Some(key))?.and_then(Result::ok);
    let mut sizes = Vec::with_capacity(segs.len());
    for s in &segs {
        let seal_len = std::fs::metadata(s.seal_path())
            .map(|m| m.len())
            .unwrap_or(0);
        sizes.push(std::fs::metadata(&s.path).map(|m| m.len()).unwrap_or(0) + seal_len);
    }
    let mut total: u64 = sizes.iter().sum();
    // The newest sealed segment stays: the writer continues the chain from
    // the last segment on disk when it restarts.
    let last_sealed = segs.iter().rposition(|s| s.seal_path().exists());
    let Some(last_sealed) = last_sealed else {
        return Ok(out);
    };
    let mut delivered = Vec::with_capacity(sinks.len());
    for name in sinks {
        delivered.push((
            name,
            cursor::load(&cursor::cursor_path(dir, name))?.next_seq,
        ));
    }
    for (i, seg) in segs.iter().enumerate().take(last_sealed) {
        let Ok(text) = std::fs::read(seg.seal_path()) else {
            break;
        };
        let Ok(seal) = Seal::decode(&text, Some(key)) else {
            tracing::warn!(segment = %seg.path.display(), "retention stops at a segment whose seal does not verify");
            break;
        };
        if seal.first_seq != seg.first_seq || seal.last_seq + 1 != segs[i + 1].first_seq {
            break;
        }
        let covered = anchor.as_ref().is_some_and(|a| a.last_seq >= seal.last_seq);
        let sealed_at = std::fs::metadata(seg.seal_path()).and_then(|m| m.modified())?;
        let old = policy
            .max_age
            .is_some_and(|a| now.duration_since(sealed_at).unwrap_or_default() > a);
        let big = policy.max_bytes.is_some_and(|b| total > b);
        if !(covered || old || big) {
            break;
        }
        if let Some((name, _)) = delivered.iter().find(|(_, next)| *next <= seal.last_seq) {
            out.held_by = Some((*name).clone());
            break;
        }
        if !covered {
            write_atomically(&anchor_path(dir), &seal.encode(key))?;
        }
        // Seal last: a segment without its seal is never taken for a whole one.
        std::fs::remove_file(&seg.path)?;
        let _ = std::fs::remove_file(seg.seal_path());
        out.segments += 1;
        out.bytes += sizes[i];
        total -= sizes[i];
    }
    Ok(out)
}

/// The retention thread.
pub struct Retainer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Retainer {
    /// Sweeps `dir` now and every [`SWEEP_INTERVAL`].
    pub fn spawn(
        dir: PathBuf,
        policy: Policy,
        sinks: Vec<String>,
        key: Vec<u8>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("toolgate-retention".into())
            .spawn(move || {
                let mut held_logged = None;
                while !flag.load(Ordering::Acquire) {
                    match sweep(&dir, &policy, &sinks, &key, SystemTime::now()) {
                        Ok(s) => {
                            if s.segments > 0 {
                                tracing::info!(segments = s.segments, bytes = s.bytes, "audit retention removed old segments");
                            }
                            if s.held_by != held_logged {
                                if let Some(sink) = &s.held_by {
                                    tracing::warn!(sink = %sink, "audit retention is holding segments this sink has not delivered yet");
                                }
                                held_logged = s.held_by;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "audit retention sweep failed"),
                    }
                    let until = std::time::Instant::now() + SWEEP_INTERVAL;
                    while std::time::Instant::now() < until && !flag.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread.
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

impl Drop for Retainer {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::appender::Appender;
    use crate::reader::Position;
    use crate::writer::tests_support::record;

    const KEY: &[u8] = b"retention-key-0123456789";

    fn log(dir: &Path, n: usize) {
        let mut log = Appender::open(dir, KEY.to_vec(), 2048).unwrap();
        for i in 0..n {
            let mut buf = Vec::new();
            log.encode(&record(&format!("t{i}")), &mut buf);
            assert!(log.append(&buf).is_ok());
            if log.full() {
                assert!(log.seal().is_ok());
            }
        }
        assert!(log.seal().is_ok());
    }

    #[test]
    fn removes_by_size_but_not_past_a_sink_and_verify_still_passes() {
        let dir = std::env::temp_dir().join(format!("toolgate-retention-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        log(&dir, 60);
        let before = list_segments(&dir).unwrap_or_default();
        assert!(before.len() > 4, "{}", before.len());
        let policy = Policy {
            max_age: None,
            max_bytes: Some(1),
        };
        let sinks = vec!["siem".to_owned()];
        // The sink has delivered up to the start of the third segment.
        let at = before[2].first_seq;
        let pos = Position {
            next_seq: at,
            segment: before[2].first_seq,
            offset: 0,
        };
        assert!(cursor::save(&cursor::cursor_path(&dir, "siem"), pos).is_ok());
        let now = SystemTime::now();
        let s = sweep(&dir, &policy, &sinks, KEY, now).unwrap();
        assert_eq!((s.segments, s.held_by.as_deref()), (2, Some("siem")));
        let after = list_segments(&dir).unwrap_or_default();
        assert_eq!(after[0].first_seq, at);
        let v = crate::verify::verify(&dir, Some(KEY)).unwrap();
        assert_eq!(v.retained_through, Some(at - 1));
        assert_eq!(v.records, 60 - (at - 1));
        // Once the sink is through, everything but the newest sealed segment goes.
        let pos = Position {
            next_seq: 61,
            segment: 0,
            offset: 0,
        };
        assert!(cursor::save(&cursor::cursor_path(&dir, "siem"), pos).is_ok());
        let s = sweep(&dir, &policy, &sinks, KEY, now).unwrap();
        assert_eq!(s.held_by, None);
        assert_eq!(list_segments(&dir).unwrap_or_default().len(), 1);
        assert!(crate::verify::verify(&dir, Some(KEY)).is_ok());
        // The writer continues the chain after a restart.
        log(&dir, 3);
        let v = crate::verify::verify(&dir, Some(KEY)).unwrap();
        assert_eq!(v.head_seq, 63);
        // A forged anchor (no key) is refused.
        let a = anchor_path(&dir);
        let text = std::fs::read_to_string(&a).unwrap_or_default();
        let _ = std::fs::write(&a, text.replace("\"mac\":\"", "\"mac\":\"00"));
        assert!(crate::verify::verify(&dir, Some(KEY)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn removes_by_age_only_what_is_old() {
        let dir =
            std::env::temp_dir().join(format!("toolgate-retention-age-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        log(&dir, 30);
        let n = list_segments(&dir).unwrap_or_default().len();
        let policy = Policy {
            max_age: Some(Duration::from_secs(3600)),
            max_bytes: None,
        };
        let s = sweep(&dir, &policy, &[], KEY, SystemTime::now());
        assert_eq!(
            s.ok().map(|s| s.segments),
            Some(0),
            "nothing is an hour old yet"
        );
        let later = SystemTime::now() + Duration::from_secs(7200);
        let s = sweep(&dir, &policy, &[], KEY, later);
        assert_eq!(s.ok().map(|s| s.segments), Some(n - 1));
        assert!(crate::verify::verify(&dir, Some(KEY)).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
