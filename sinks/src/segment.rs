//! Segment files and their seals (keyed checkpoints).
//!
//! The log is a directory of segments, `audit-<first log_seq, 20 digits>.jsonl`,
//! whose names sort in log order. When a segment is closed (it reached
//! `segment_bytes`, or toolgate restarted) the audit thread writes its seal,
//! `audit-<same digits>.seal`: one JSON line
//!
//! ```text
//! {"segment":"audit-….jsonl","first_seq":F,"last_seq":L,"last_hash":"<hex>","key_id":"<hex>","mac":"<hex>"}
//! ```
//!
//! where `mac` is HMAC-SHA256, under the checkpoint key, of the line's bytes
//! up to (not including) `,"mac":` followed by `}` — the same cut-off rule as
//! record hashes. `key_id` is the first 8 bytes of SHA-256 of the key, to tell
//! which key sealed it. Anyone can recompute the hash chain; only a holder of
//! the key can seal a rewritten one, so a seal pins the segment's content.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use toolgate_core::mac::{constant_time_eq, hmac_sha256};

const PREFIX: &str = "audit-";
const LOG_EXT: &str = ".jsonl";

/// One segment file of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// `log_seq` of its first record (from its name).
    pub first_seq: u64,
    /// Its path.
    pub path: PathBuf,
}

impl Segment {
    /// Path of this segment's seal.
    pub fn seal_path(&self) -> PathBuf {
        self.path.with_extension("seal")
    }

    /// File name of the segment.
    pub fn name(&self) -> String {
        segment_name(self.first_seq)
    }
}

/// File name of the segment starting at `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("{PREFIX}{first_seq:020}{LOG_EXT}")
}

/// The segments in `dir`, in log order. A missing directory has none.
pub fn list_segments(dir: &Path) -> std::io::Result<Vec<Segment>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(digits) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_suffix(LOG_EXT))
        else {
            continue;
        };
        if digits.len() == 20 {
            if let Ok(first_seq) = digits.parse::<u64>() {
                out.push(Segment {
                    first_seq,
                    path: entry.path(),
                });
            }
        }
    }
    out.sort_by_key(|s| s.first_seq);
    Ok(out)
}

/// A segment's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seal {
    /// Segment file name.
    pub segment: String,
    /// First record's `log_seq`.
    pub first_seq: u64,
    /// Last record's `log_seq`.
    pub last_seq: u64,
    /// Last record's `hash`.
    pub last_hash: [u8; 32],
}

/// Why a seal does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not the JSON line a seal is.
    #[error("the seal is malformed")]
    Malformed,
    /// Made with another key.
    #[error("the seal was made with another key (key id `{0}`)")]
    OtherKey(String),
    /// The MAC does not match: the seal was edited or forged.
    #[error("the seal's MAC does not match: the seal was edited or forged")]
    BadMac,
}

/// Identifies a key without revealing it.
pub fn key_id(key: &[u8]) -> String {
    hex::encode(&Sha256::digest(key)[..8])
}

impl Seal {
    /// The seal as one JSON line (with newline), MACed under `key`.
    pub fn encode(&self, key: &[u8]) -> Vec<u8> {
        let mut body = format!(
            "{{\"segment\":\"{}\",\"first_seq\":{},\"last_seq\":{},\"last_hash\":\"{}\",\"key_id\":\"{}\"",
            self.segment,
            self.first_seq,
            self.last_seq,
            hex::encode(self.last_hash),
            key_id(key)
        )
        .into_bytes();
        let mac = mac_of(key, &body);
        body.extend_from_slice(b",\"mac\":\"");
        body.extend_from_slice(hex::encode(mac).as_bytes());
        body.extend_from_slice(b"\"}\n");
        body
    }

    /// Reads a seal; with `key`, also checks its MAC.
    pub fn decode(text: &[u8], key: Option<&[u8]>) -> Result<Seal, SealError> {
        let text = text.strip_suffix(b"\n").unwrap_or(text);
        let v: serde_json::Value =
            serde_json::from_slice(text).map_err(|_| SealError::Malformed)?;
        let seal = (|| {
            let mut last_hash = [0u8; 32];
            hex::decode_to_slice(v["last_hash"].as_str()?, &mut last_hash).ok()?;
            Some(Seal {
                segment: v["segment"].as_str()?.to_owned(),
                first_seq: v["first_seq"].as_u64()?,
                last_seq: v["last_seq"].as_u64()?,
                last_hash,
            })
        })()
        .ok_or(SealError::Malformed)?;
        if let Some(key) = key {
            let id = v["key_id"].as_str().unwrap_or("");
            if id != key_id(key) {
                return Err(SealError::OtherKey(id.to_owned()));
            }
            let cut = find(text, b",\"mac\":\"").ok_or(SealError::Malformed)?;
            let mut mac = [0u8; 32];
            hex::decode_to_slice(v["mac"].as_str().unwrap_or(""), &mut mac)
                .map_err(|_| SealError::Malformed)?;
            if !constant_time_eq(&mac, &mac_of(key, &text[..cut])) {
                return Err(SealError::BadMac);
            }
        }
        Ok(seal)
    }
}

fn mac_of(key: &[u8], body: &[u8]) -> [u8; 32] {
    hmac_sha256(key, |h| {
        h.update(body);
        h.update(b"}");
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or
/// the whole new one: a temporary file, fsynced, renamed over, and the
/// directory fsynced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        // Makes the rename itself durable; some filesystems refuse, harmlessly.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal() -> Seal {
        Seal {
            segment: segment_name(1),
            first_seq: 1,
            last_seq: 9,
            last_hash: [7; 32],
        }
    }

    #[test]
    fn seal_round_trips_and_checks_its_key() {
        let text = seal().encode(b"key-one-0123456789");
        assert_eq!(Seal::decode(&text, Some(b"key-one-0123456789")), Ok(seal()));
        assert!(matches!(
            Seal::decode(&text, Some(b"key-two-0123456789")),
            Err(SealError::OtherKey(_))
        ));
        assert_eq!(Seal::decode(&text, None), Ok(seal()));
    }

    #[test]
    fn edited_seal_fails_its_mac() {
        let text = String::from_utf8_lossy(&seal().encode(b"k"))
            .replace("\"last_seq\":9", "\"last_seq\":8");
        assert_eq!(
            Seal::decode(text.as_bytes(), Some(b"k")),
            Err(SealError::BadMac)
        );
    }

    #[test]
    fn segments_list_in_log_order() {
        let dir = std::env::temp_dir().join(format!("toolgate-seg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::create_dir_all(&dir);
        for n in [120u64, 3, 1] {
            let _ = std::fs::write(dir.join(segment_name(n)), b"");
        }
        let _ = std::fs::write(dir.join("audit-1.jsonl"), b"");
        let _ = std::fs::write(dir.join("checkpoint.key"), b"");
        let segs = list_segments(&dir).unwrap_or_default();
        let firsts: Vec<u64> = segs.iter().map(|s| s.first_seq).collect();
        assert_eq!(firsts, vec![1, 3, 120]);
        assert!(segs[0]
            .seal_path()
            .ends_with("audit-00000000000000000001.seal"));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(list_segments(&dir).map(|s| s.is_empty()).unwrap_or(false));
    }
}
