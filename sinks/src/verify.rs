//! `toolgate audit verify`: proves the log is whole and unaltered.
//!
//! Walks every segment in order and checks, for each line: it is a whole
//! line, it carries the chain members, its `hash` is the SHA-256 of its
//! canonical bytes (an edited line fails here), its `log_seq` is the one
//! expected (a deleted or moved line fails here), and its `prev_hash` is the
//! previous record's `hash`. Each sealed segment's seal must match its last
//! record and, given the key, its MAC. Every segment but the last must be
//! sealed. The first problem is reported with its segment, line and record.
//!
//! A log whose oldest segments retention removed starts at its anchor
//! ([`crate::retention`]): the first kept segment must continue exactly
//! where the anchor (a MACed seal of the last removed segment) ends.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::chain::{parse_link, GENESIS};
use crate::retention::{anchor_path, read_anchor};
use crate::segment::{list_segments, Seal};

/// What a passing verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Segments read.
    pub segments: usize,
    /// Records checked.
    pub records: u64,
    /// Seals whose MAC was checked with the key.
    pub seals_checked: usize,
    /// Seals present but not MAC-checked (no key given).
    pub seals_unchecked: usize,
    /// The last segment, when it is still open (unsealed).
    pub open_segment: Option<String>,
    /// `hash` of the last record.
    pub head: [u8; 32],
    /// `log_seq` of the last record.
    pub head_seq: u64,
    /// Records `1..=N` were removed by retention; the kept log continues
    /// its anchor.
    pub retained_through: Option<u64>,
}

/// Where the log stops being trustworthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The segment file.
    pub segment: PathBuf,
    /// 1-based line in it (0: the seal or the segment as a whole).
    pub line: u64,
    /// The record expected there.
    pub expected_seq: u64,
    /// What is wrong.
    pub problem: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "`{}` line {} (record {}): {}",
                self.segment.display(),
                self.line,
                self.expected_seq,
                self.problem
            )
        } else {
            write!(f, "`{}`: {}", self.segment.display(), self.problem)
        }
    }
}

/// Verification could not run, or found the log broken.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The log could not be read.
    #[error("cannot read the audit log in `{dir}`: {source}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The chain or a seal is broken.
    #[error("audit log broken at {0}")]
    Broken(Broken),
}

/// Verifies the log in `dir`; checks seal MACs when `key` is given.
pub fn verify(dir: &Path, key: Option<&[u8]>) -> Result<Verified, VerifyError> {
    let io = |source| VerifyError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    if !dir.is_dir() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such directory",
        )));
    }
    let segs = list_segments(dir).map_err(io)?;
    let mut out = Verified {
        segments: segs.len(),
        records: 0,
        seals_checked: 0,
        seals_unchecked: 0,
        open_segment: None,
        head: GENESIS,
        head_seq: 0,
        retained_through: None,
    };
    let mut expected = 1u64;
    let mut start = 0;
    if segs.first().is_some_and(|s| s.first_seq > 1) {
        if let Some(anchor) = read_anchor(dir, key).map_err(io)? {
            let anchor = anchor.map_err(|e| {
                VerifyError::Broken(Broken {
                    segment: anchor_path(dir),
                    line: 0,
                    expected_seq: 1,
                    problem: format!("the retention anchor does not check out: {e}"),
                })
            })?;
            // Segments the anchor already covers: a removal a crash
            // interrupted (the next sweep finishes it).
            while start + 1 < segs.len() && segs[start + 1].first_seq <= anchor.last_seq + 1 {
                start += 1;
            }
            if segs[start].first_seq == anchor.last_seq + 1 {
                expected = anchor.last_seq + 1;
                out.head = anchor.last_hash;
                out.retained_through = Some(anchor.last_seq);
                out.segments = segs.len() - start;
            }
        }
    }
    for (i, seg) in segs.iter().enumerate().skip(start) {
        let broken = |line: u64, expected_seq: u64, problem: String| {
            VerifyError::Broken(Broken {
                segment: seg.path.clone(),
                line,
                expected_seq,
                problem,
            })
        };
        if seg.first_seq != expected {
            let problem = if seg.first_seq > expected {
                format!(
                    "records {expected}..{} are missing: the segment starts at record {}",
                    seg.first_seq - 1,
                    seg.first_seq
                )
            } else {
                format!(
                    "the segment starts at record {}, which an earlier segment already holds",
                    seg.first_seq
                )
            };
            return Err(broken(0, expected, problem));
        }
        let file = std::fs::File::open(&seg.path).map_err(io)?;
        let mut r = BufReader::new(file);
        let mut line = Vec::new();
        let mut n = 0u64;
        loop {
            line.clear();
            if r.read_until(b'\n', &mut line).map_err(io)? == 0 {
                break;
            }
            n += 1;
            if line.pop() != Some(b'\n') {
                return Err(broken(
                    n,
                    expected,
                    "the line is incomplete (no newline): a torn write".into(),
                ));
            }
            let link = parse_link(&line).map_err(|e| broken(n, expected, e.to_string()))?;
            if serde_json::from_slice::<serde_json::Value>(&line).is_err() {
                return Err(broken(n, expected, "the line is not valid JSON".into()));
            }
            if link.hash != link.computed {
                return Err(broken(
                    n,
                    expected,
                    format!(
                    "the record was altered: its content hashes to {}, not to its recorded hash",
                    hex::encode(link.computed)
                ),
                ));
            }
            if link.seq != expected {
                let problem = if link.seq > expected {
                    format!(
                        "record {expected} is missing or out of order: found record {} here",
                        link.seq
                    )
                } else {
                    format!(
                        "record {} appears again or out of order (expected record {expected})",
                        link.seq
                    )
                };
                return Err(broken(n, expected, problem));
            }
            if link.prev != out.head {
                return Err(broken(
                    n,
                    expected,
                    "the record does not follow the previous one (prev_hash differs)".into(),
                ));
            }
            out.head = link.hash;
            out.head_seq = link.seq;
            out.records += 1;
            expected += 1;
        }
        let last = i + 1 == segs.len();
        match std::fs::read(seg.seal_path()) {
            Ok(text) => {
                let seal =
                    Seal::decode(&text, key).map_err(|e| broken(0, expected, e.to_string()))?;
                if seal.first_seq != seg.first_seq
                    || seal.last_seq + 1 != expected
                    || seal.last_hash != out.head
                {
                    return Err(broken(0, expected, format!(
                        "the seal covers records {}..{} ending in hash {}, but the segment holds records {}..{} ending in {}",
                        seal.first_seq, seal.last_seq, hex::encode(seal.last_hash),
                        seg.first_seq, expected - 1, hex::encode(out.head)
                    )));
                }
                if key.is_some() {
                    out.seals_checked += 1;
                } else {
                    out.seals_unchecked += 1;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !last {
                    return Err(broken(
                        0,
                        expected,
                        "the segment is not sealed, yet a later segment exists".into(),
                    ));
                }
                out.open_segment = Some(seg.name());
            }
            Err(e) => return Err(io(e)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::appender::Appender;
    use crate::writer::tests_support::record;

    const KEY: &[u8] = b"verify-key-0123456789";

    fn log_with(dir: &Path, n: usize, segment_bytes: u64) {
        let _ = std::fs::remove_dir_all(dir);
        let mut log = Appender::open(dir, KEY.to_vec(), segment_bytes).unwrap();
        for i in 0..n {
            let mut buf = Vec::new();
            log.encode(&record(&format!("tool{i}")), &mut buf);
            assert!(log.append(&buf).is_ok());
            if log.full() {
                assert!(log.seal().is_ok());
            }
        }
        assert!(log.seal().is_ok());
    }

    fn first_segment(dir: &Path) -> PathBuf {
        list_segments(dir).unwrap_or_default()[0].path.clone()
    }

    fn edit(path: &Path, f: impl FnOnce(&mut Vec<String>)) {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        f(&mut lines);
        let _ = std::fs::write(path, lines.join("\n") + "\n");
    }

    fn broken_at(dir: &Path) -> Option<Broken> {
        match verify(dir, Some(KEY)) {
            Err(VerifyError::Broken(b)) => Some(b),
            _ => None,
        }
    }

    fn dir(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("toolgate-verify-{tag}-{}", std::process::id()))
    }

    #[test]
    fn intact_log_verifies_with_its_seals() {
        let d = dir("ok");
        log_with(&d, 30, 1500);
        let v = verify(&d, Some(KEY)).unwrap();
        assert_eq!(v.records, 30);
        assert!(v.segments > 1);
        assert_eq!(v.seals_checked, v.segments);
        assert!(matches!(
            verify(&d, Some(b"another-key-0123456789")),
            Err(VerifyError::Broken(_))
        ));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn edited_line_is_pointed_at() {
        let d = dir("edit");
        log_with(&d, 5, 1 << 20);
        edit(&first_segment(&d), |l| {
            l[2] = l[2].replace("tool2", "tool9")
        });
        let b = broken_at(&d).unwrap();
        assert_eq!((b.line, b.expected_seq), (3, 3));
        assert!(b.problem.contains("altered"), "{}", b.problem);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn deleted_line_is_pointed_at() {
        let d = dir("delete");
        log_with(&d, 5, 1 << 20);
        edit(&first_segment(&d), |l| {
            l.remove(1);
        });
        let b = broken_at(&d).unwrap();
        assert_eq!((b.line, b.expected_seq), (2, 2));
        assert!(b.problem.contains("record 2 is missing"), "{}", b.problem);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn reordered_lines_are_pointed_at() {
        let d = dir("reorder");
        log_with(&d, 5, 1 << 20);
        edit(&first_segment(&d), |l| l.swap(3, 4));
        let b = broken_at(&d).unwrap();
        assert_eq!((b.line, b.expected_seq), (4, 4));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn truncated_sealed_segment_fails_its_seal() {
        let d = dir("truncate");
        log_with(&d, 5, 1 << 20);
        edit(&first_segment(&d), |l| {
            l.pop();
        });
        let b = broken_at(&d).unwrap();
        assert_eq!(b.line, 0);
        assert!(
            b.problem.contains("seal covers records 1..5"),
            "{}",
            b.problem
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn removed_middle_segment_is_reported() {
        let d = dir("gap");
        log_with(&d, 30, 1500);
        let segs = list_segments(&d).unwrap_or_default();
        let _ = std::fs::remove_file(&segs[1].path);
        let b = broken_at(&d).unwrap();
        assert_eq!(b.segment, segs[2].path);
        assert!(b.problem.contains("missing"), "{}", b.problem);
        let _ = std::fs::remove_dir_all(&d);
    }
}
