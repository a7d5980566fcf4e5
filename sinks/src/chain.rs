//! The hash chain over log records.
//!
//! Every line of the log is one JSON object that ends with three members the
//! audit thread appends to the record's own encoding, in this order:
//!
//! ```text
//! {…record fields…,"log_seq":N,"prev_hash":"<64 hex>","hash":"<64 hex>"}\n
//! ```
//!
//! `log_seq` counts records across the whole log from 1, gap-free.
//! `prev_hash` is the previous record's `hash` ([`GENESIS`], 64 zeros, for
//! record 1). `hash` is the SHA-256 of the line's *canonical bytes*: the line
//! without its trailing newline and without the `,"hash":"…"` member, i.e.
//! the exact bytes up to and including the closing quote of `prev_hash`,
//! followed by `}`. Hashing bytes rather than a re-serialisation means no
//! JSON canonicalisation rule can be disagreed on, and any edited byte,
//! removed line or swapped pair of lines breaks the chain at that point.

use std::io::Write;

use sha2::{Digest, Sha256};

/// `prev_hash` of the first record.
pub const GENESIS: [u8; 32] = [0; 32];

const HASH_KEY: &[u8] = b",\"hash\":\"";
const PREV_KEY: &[u8] = b",\"prev_hash\":\"";
const SEQ_KEY: &[u8] = b",\"log_seq\":";
/// Bytes of the `,"hash":"…"}` tail.
const HASH_TAIL: usize = HASH_KEY.len() + 64 + 2;

/// Why a line is not a well-formed chained record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The encoder did not produce a `{…}\n` object (a bug, never input).
    #[error("the record encoding does not end in `}}` and a newline")]
    NotAnObject,
    /// The chain members are missing or malformed.
    #[error("the line does not end with `log_seq`, `prev_hash` and `hash` members")]
    NoChainFields,
}

/// The chain members of one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// The record's `log_seq`.
    pub seq: u64,
    /// Its `prev_hash`.
    pub prev: [u8; 32],
    /// Its `hash` as written.
    pub hash: [u8; 32],
    /// SHA-256 of its canonical bytes: equals `hash` unless the line was altered.
    pub computed: [u8; 32],
}

/// Turns the record encoded at `buf[start..]` (a JSON object and a newline)
/// into a chained line with `seq` after `prev`; returns its hash.
pub fn chain_record(
    buf: &mut Vec<u8>,
    start: usize,
    seq: u64,
    prev: &[u8; 32],
) -> Result<[u8; 32], LineError> {
    if !buf[start..].ends_with(b"}\n") {
        return Err(LineError::NotAnObject);
    }
    buf.truncate(buf.len() - 2);
    buf.extend_from_slice(SEQ_KEY);
    let _ = write!(buf, "{seq}");
    buf.extend_from_slice(PREV_KEY);
    push_hex(buf, prev);
    buf.push(b'"');
    let hash = canonical_hash(&buf[start..]);
    buf.extend_from_slice(HASH_KEY);
    push_hex(buf, &hash);
    buf.extend_from_slice(b"\"}\n");
    Ok(hash)
}

fn push_hex(buf: &mut Vec<u8>, bytes: &[u8; 32]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        buf.push(HEX[(b >> 4) as usize]);
        buf.push(HEX[(b & 15) as usize]);
    }
}

/// SHA-256 of `body` followed by `}`: the canonical bytes of a line whose
/// `hash` member has been cut off.
fn canonical_hash(body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(body);
    h.update(b"}");
    h.finalize().into()
}

fn unhex(s: &[u8]) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Reads the chain members of `line` (without its newline) and recomputes
/// its hash.
pub fn parse_link(line: &[u8]) -> Result<Link, LineError> {
    let bad = LineError::NoChainFields;
    if line.len() < HASH_TAIL || !line.ends_with(b"\"}") {
        return Err(bad);
    }
    let cut = line.len() - HASH_TAIL;
    let (body, tail) = line.split_at(cut);
    if !tail.starts_with(HASH_KEY) {
        return Err(bad);
    }
    let hash = unhex(&tail[HASH_KEY.len()..HASH_KEY.len() + 64]).ok_or(bad.clone())?;
    // body = …,"log_seq":N,"prev_hash":"<64 hex>"
    if body.len() < PREV_KEY.len() + 65 || !body.ends_with(b"\"") {
        return Err(bad);
    }
    let prev_at = body.len() - 65 - PREV_KEY.len();
    if &body[prev_at..prev_at + PREV_KEY.len()] != PREV_KEY {
        return Err(bad);
    }
    let prev = unhex(&body[body.len() - 65..body.len() - 1]).ok_or(bad.clone())?;
    let before = &body[..prev_at];
    let digits = before
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 || digits > 20 || !before[..before.len() - digits].ends_with(SEQ_KEY) {
        return Err(bad);
    }
    let seq = std::str::from_utf8(&before[before.len() - digits..])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or(bad)?;
    Ok(Link {
        seq,
        prev,
        hash,
        computed: canonical_hash(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chained(records: &[&str]) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut prev = GENESIS;
        for (i, r) in records.iter().enumerate() {
            let start = buf.len();
            buf.extend_from_slice(r.as_bytes());
            buf.push(b'\n');
            prev = chain_record(&mut buf, start, i as u64 + 1, &prev).unwrap();
        }
        buf
    }

    #[test]
    fn chained_lines_are_json_and_link_up() {
        let buf = chained(&[r#"{"a":1}"#, r#"{"tool":"x\"}"}"#]);
        let lines: Vec<&[u8]> = buf
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 2);
        let l1 = parse_link(lines[0]).unwrap();
        let l2 = parse_link(lines[1]).unwrap();
        assert_eq!((l1.seq, l1.prev), (1, GENESIS));
        assert_eq!(l1.hash, l1.computed);
        assert_eq!((l2.seq, l2.prev), (2, l1.hash));
        assert_eq!(l2.hash, l2.computed);
        let v: serde_json::Value = serde_json::from_slice(lines[1]).unwrap_or_default();
        assert_eq!(v["tool"], "x\"}");
        assert_eq!(v["log_seq"], 2);
        assert_eq!(v["hash"], hex::encode(l2.hash));
    }

    #[test]
    fn canonical_bytes_are_the_line_without_its_hash_member() {
        let buf = chained(&[r#"{"a":1}"#]);
        let line = &buf[..buf.len() - 1];
        let text = String::from_utf8_lossy(line);
        let cut = text.find(",\"hash\":").unwrap();
        let canonical = format!("{}}}", &text[..cut]);
        let link = parse_link(line).unwrap();
        assert_eq!(
            link.hash.to_vec(),
            Sha256::digest(canonical.as_bytes()).to_vec()
        );
    }

    #[test]
    fn an_edited_byte_changes_the_computed_hash() {
        let buf = chained(&[r#"{"decision":"deny"}"#]);
        let edited = String::from_utf8_lossy(&buf[..buf.len() - 1]).replace("deny", "allo");
        let link = parse_link(edited.as_bytes()).unwrap();
        assert_ne!(link.hash, link.computed);
    }

    #[test]
    fn lines_without_chain_members_are_rejected() {
        assert_eq!(parse_link(b"{\"a\":1}"), Err(LineError::NoChainFields));
        let mut buf = b"{\"a\":1}".to_vec();
        assert_eq!(
            chain_record(&mut buf, 0, 1, &GENESIS),
            Err(LineError::NotAnObject)
        );
    }
}
