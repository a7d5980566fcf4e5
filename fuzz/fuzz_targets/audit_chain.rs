//! The audit log's hash chain as `audit verify` reads it. Any bytes as a
//! line: never a panic. A line chained by toolgate, then edited at one
//! byte: the edit is caught (the line no longer parses, or its stored hash
//! is not the hash of its bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolgate_sinks::chain::{chain_record, parse_link};

fuzz_target!(|data: &[u8]| {
    let _ = parse_link(data);
    if data.len() < 3 {
        return;
    }
    let (edit, text) = data.split_at(3);
    let mut line = b"{\"tool\":".to_vec();
    let text = String::from_utf8_lossy(text);
    line.extend_from_slice(
        serde_json::Value::String(text.into_owned())
            .to_string()
            .as_bytes(),
    );
    line.extend_from_slice(b"}\n");
    let prev = [0x5a; 32];
    let seq = u64::from(edit[0]);
    let Ok(hash) = chain_record(&mut line, 0, seq, &prev) else {
        panic!("a JSON object line did not chain");
    };
    line.pop();
    let link = match parse_link(&line) {
        Ok(l) => l,
        Err(e) => panic!("a chained line does not parse: {e:?}"),
    };
    assert_eq!(
        (link.hash, link.computed, link.prev, link.seq),
        (hash, hash, prev, seq)
    );
    let at = usize::from(u16::from_le_bytes([edit[1], edit[2]])) % line.len();
    let flip = edit[0] | 1;
    line[at] ^= flip;
    if let Ok(l) = parse_link(&line) {
        // Seq and back-link are inside the hashed bytes: any one-byte
        // edit leaves a line whose stored hash is not its own.
        assert_ne!(l.computed, l.hash, "an edit at byte {at} went unnoticed");
    }
});
