//! Reading the log forward from a position: the one reader behind sinks,
//! `audit query` and `audit tail`.
//!
//! A reader sees only whole lines (a line still being written is left for
//! the next read) and follows the log into the next segment once it has
//! read the current one to its end.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::chain::parse_link;
use crate::segment::list_segments;

/// Where a reader stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// `log_seq` of the next record wanted.
    pub next_seq: u64,
    /// First `log_seq` of the segment being read (0: find it from `next_seq`).
    pub segment: u64,
    /// Byte offset in that segment after the last record read.
    pub offset: u64,
}

impl Position {
    /// The start of the log.
    pub const START: Position = Position {
        next_seq: 1,
        segment: 0,
        offset: 0,
    };
}

/// One record read from the log.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its `log_seq`.
    pub seq: u64,
    /// The JSON line, without its newline.
    pub line: Vec<u8>,
    /// Position just after it.
    pub after: Position,
}

/// A forward reader of the log in one directory.
#[derive(Debug)]
pub struct LogReader {
    dir: PathBuf,
    pos: Position,
    skipped: u64,
}

impl LogReader {
    /// A reader of `dir` from `pos`.
    pub fn new(dir: &Path, pos: Position) -> Self {
        Self {
            dir: dir.to_path_buf(),
            pos,
            skipped: 0,
        }
    }

    /// Where the next read starts.
    pub fn position(&self) -> Position {
        self.pos
    }

    /// Lines skipped because they were not chained records.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Appends up to `max` records available now to `out` (none when the
    /// reader has caught up with the writer).
    pub fn read(&mut self, max: usize, out: &mut Vec<Entry>) -> std::io::Result<()> {
        // Listing before reading matters: a segment that has a successor in
        // this listing was complete before it, so reading it to its end
        // misses nothing.
        let segs = list_segments(&self.dir)?;
        if segs.is_empty() {
            return Ok(());
        }
        let mut idx = match segs.iter().position(|s| s.first_seq == self.pos.segment) {
            Some(i) => i,
            None => {
                let i = segs
                    .iter()
                    .rposition(|s| s.first_seq <= self.pos.next_seq)
                    .unwrap_or(0);
                self.pos.segment = segs[i].first_seq;
                self.pos.offset = 0;
                i
            }
        };
        let start = out.len();
        loop {
            self.read_segment(&segs[idx].path, max, out)?;
            if out.len() > start || idx + 1 >= segs.len() {
                return Ok(());
            }
            idx += 1;
            self.pos.segment = segs[idx].first_seq;
            self.pos.offset = 0;
        }
    }

    fn read_segment(
        &mut self,
        path: &Path,
        max: usize,
        out: &mut Vec<Entry>,
    ) -> std::io::Result<()> {
        let mut f = match File::open(path) {
            Ok(f) => f,
            // Removed under us (retention, or an empty segment cut at restart).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        f.seek(SeekFrom::Start(self.pos.offset))?;
        let mut r = BufReader::with_capacity(256 * 1024, f);
        let mut line = Vec::with_capacity(1024);
        let mut taken = 0;
        while taken < max {
            line.clear();
            let n = r.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break; // end, or a line still being written
            }
            self.pos.offset += n as u64;
            line.pop();
            let seq = match parse_link(&line) {
                Ok(link) => link.seq,
                Err(_) => {
                    self.skipped += 1;
                    tracing::warn!(segment = %path.display(), offset = self.pos.offset - n as u64, "skipping a log line that is not a chained record (see `toolgate audit verify`)");
                    continue;
                }
            };
            if seq < self.pos.next_seq {
                continue;
            }
            self.pos.next_seq = seq + 1;
            out.push(Entry {
                seq,
                line: line.clone(),
                after: self.pos,
            });
            taken += 1;
        }
        Ok(())
    }
}
