//! The log's write end: chains records, appends them to the open segment,
//! rotates and seals segments, and recovers the chain's head at start.
//!
//! Used by the audit thread only; nothing here is shared.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use toolgate_core::audit::AuditRecord;

use crate::chain::{self, GENESIS};
use crate::segment::{list_segments, segment_name, write_atomically, Seal, Segment};

/// Why the log could not be opened at start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Reading or repairing the directory failed.
    #[error("cannot open the audit log in `{dir}`: {source}")]
    Io {
        /// The audit directory.
        dir: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The last record on disk is not a chained record.
    #[error("the last line of `{path}` is not a chained audit record: run `toolgate audit verify` on the directory")]
    Unreadable {
        /// The segment.
        path: PathBuf,
    },
}

/// The open log.
pub struct Appender {
    dir: PathBuf,
    key: Vec<u8>,
    segment_bytes: u64,
    /// Seal the open segment once its first record is this old (off: `None`).
    max_age: Option<Duration>,
    /// When the open segment was started.
    opened: Option<Instant>,
    file: Option<File>,
    /// First `log_seq` of the open segment.
    seg_first: u64,
    /// Bytes of the open segment known to be whole records.
    seg_len: u64,
    /// A write failed after `seg_len`: cut the file back before the next one.
    dirty: bool,
    /// Last record on disk.
    written_seq: u64,
    written_hash: [u8; 32],
    /// Chain head including records encoded but not yet written.
    next_seq: u64,
    prev_hash: [u8; 32],
}

impl Appender {
    /// Opens the log in `dir`: seals a segment a previous run left open (after
    /// cutting off a torn last line) and continues the chain after it. The
    /// next record starts a new segment.
    pub fn open(dir: &Path, key: Vec<u8>, segment_bytes: u64) -> Result<Self, OpenError> {
        let io = |source| OpenError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut segs = list_segments(dir).map_err(io)?;
        let mut head = (0u64, GENESIS);
        while let Some(seg) = segs.pop() {
            match recover_segment(&seg, &key).map_err(io)? {
                Recovered::Empty => continue,
                Recovered::Head(seq, hash) => {
                    head = (seq, hash);
                    break;
                }
                Recovered::Unreadable => return Err(OpenError::Unreadable { path: seg.path }),
            }
        }
        if head.0 == 0 {
            // Every segment removed by retention (it keeps the newest sealed
            // one, so only by hand): continue from the anchor, not genesis.
            if let Some(Ok(a)) = crate::retention::read_anchor(dir, Some(&key)).map_err(io)? {
                head = (a.last_seq, a.last_hash);
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            key,
            segment_bytes,
            max_age: None,
            opened: None,
            file: None,
            seg_first: head.0 + 1,
            seg_len: 0,
            dirty: false,
            written_seq: head.0,
            written_hash: head.1,
            next_seq: head.0 + 1,
            prev_hash: head.1,
        })
    }

    /// Also seals a segment once it has been open for `age` (with at least
    /// one record), so a quiet log still gets sealed, and so shipped and
    /// retained, within a bounded time. `None` (the default): by size only.
    pub fn set_max_age(&mut self, age: Option<Duration>) {
        self.max_age = age;
    }

    /// `log_seq` the next encoded record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Encodes `rec` as the next chained line at the end of `buf`. Returns
    /// false (and leaves `buf` as it was) only if the record encoder broke
    /// its contract, which would be a bug.
    pub fn encode(&mut self, rec: &AuditRecord, buf: &mut Vec<u8>) -> bool {
        let start = buf.len();
        rec.encode_json(buf);
        match chain::chain_record(buf, start, self.next_seq, &self.prev_hash) {
            Ok(h) => {
                self.prev_hash = h;
                self.next_seq += 1;
                true
            }
            Err(e) => {
                buf.truncate(start);
                tracing::error!(error = %e, "audit record encoding is broken");
                false
            }
        }
    }

    /// Appends `buf`, which holds every record encoded since the last
    /// successful append. On failure nothing counts as written and the next
    /// call cuts the segment back to its last whole record first.
    pub fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                self.seg_first = self.written_seq + 1;
                let path = self.dir.join(segment_name(self.seg_first));
                let f = OpenOptions::new().create(true).append(true).open(&path)?;
                self.seg_len = f.metadata()?.len();
                self.dirty = self.seg_len > 0;
                self.seg_len = 0;
                self.opened = Some(Instant::now());
                self.file.insert(f)
            }
        };
        if self.dirty {
            file.set_len(self.seg_len)?;
            self.dirty = false;
        }
        if let Err(e) = file.write_all(buf) {
            self.dirty = true;
            return Err(e);
        }
        self.seg_len += buf.len() as u64;
        self.written_seq = self.next_seq - 1;
        self.written_hash = self.prev_hash;
        Ok(())
    }

    /// Whether the next append only writes: a segment is open, not full,
    /// and no failed write has to be cut back first (what a shard may do
    /// without waiting on the file system's metadata).
    pub fn ready_for_append(&self) -> bool {
        self.file.is_some() && !self.dirty && !self.full()
    }

    /// fdatasyncs the open segment.
    pub fn sync(&mut self) -> std::io::Result<()> {
        match &self.file {
            Some(f) => f.sync_data(),
            None => Ok(()),
        }
    }

    /// A second handle on the open segment, for syncing it from another thread.
    pub fn sync_handle(&self) -> Option<std::io::Result<File>> {
        self.file.as_ref().map(File::try_clone)
    }

    /// Whether the open segment reached its size, or its age limit.
    pub fn full(&self) -> bool {
        let old = || {
            self.seg_len > 0
                && self
                    .max_age
                    .zip(self.opened)
                    .is_some_and(|(age, opened)| opened.elapsed() >= age)
        };
        self.file.is_some() && (self.seg_len >= self.segment_bytes || old())
    }

    /// Syncs and seals the open segment; the next append starts a new one.
    pub fn seal(&mut self) -> std::io::Result<()> {
        let Some(f) = &self.file else { return Ok(()) };
        f.sync_data()?;
        if self.written_seq >= self.seg_first {
            let seg = Segment {
                first_seq: self.seg_first,
                path: self.dir.join(segment_name(self.seg_first)),
            };
            let seal = Seal {
                segment: seg.name(),
                first_seq: self.seg_first,
                last_seq: self.written_seq,
                last_hash: self.written_hash,
            };
            write_atomically(&seg.seal_path(), &seal.encode(&self.key))?;
        }
        self.file = None;
        Ok(())
    }
}

enum Recovered {
    Empty,
    Head(u64, [u8; 32]),
    Unreadable,
}

/// Reads the last whole record of a segment a previous run wrote; cuts a
/// torn last line (a write that never completed, so never acknowledged in
/// `batch` durability unless the machine lost power) and seals the segment
/// if it is not sealed yet.
fn recover_segment(seg: &Segment, key: &[u8]) -> std::io::Result<Recovered> {
    let mut f = OpenOptions::new().read(true).write(true).open(&seg.path)?;
    let len = f.metadata()?.len();
    // Lines are short (a few hundred bytes); a 64 KiB tail holds the last one.
    let from = len.saturating_sub(64 * 1024);
    f.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail)?;
    let whole = tail.iter().rposition(|&b| b == b'\n').map(|p| p + 1);
    let good_len = match whole {
        Some(p) => from + p as u64,
        None if from == 0 => 0,
        None => return Ok(Recovered::Unreadable),
    };
    if good_len < len {
        tracing::warn!(
            segment = %seg.path.display(),
            bytes = len - good_len,
            "cutting a torn last line off the audit log (a write that never completed)"
        );
        f.set_len(good_len)?;
        f.sync_all()?;
    }
    if good_len == 0 {
        drop(f);
        std::fs::remove_file(&seg.path)?;
        let _ = std::fs::remove_file(seg.seal_path());
        return Ok(Recovered::Empty);
    }
    let body = &tail[..(good_len - from) as usize - 1];
    let last = body
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(body, |p| &body[p + 1..]);
    let Ok(link) = chain::parse_link(last) else {
        return Ok(Recovered::Unreadable);
    };
    if !seg.seal_path().exists() {
        let seal = Seal {
            segment: seg.name(),
            first_seq: seg.first_seq,
            last_seq: link.seq,
            last_hash: link.hash,
        };
        write_atomically(&seg.seal_path(), &seal.encode(key))?;
        tracing::info!(segment = %seg.path.display(), last_seq = link.seq, "sealed the audit segment a previous run left open");
    }
    Ok(Recovered::Head(link.seq, link.hash))
}
