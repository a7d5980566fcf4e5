//! The chunked body decoder (requests from agents, answers from
//! upstreams). Invariants: never a panic; decoded bytes never exceed the
//! limit; the result does not depend on how the input is split across
//! reads (the first byte picks the split point).
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolgate_net::chunked::ChunkedDecoder;

const MAX: usize = 4096;

/// Feeds `parts` in order as successive reads; the decoded bytes, how the
/// body ended, and the bytes consumed.
fn decode(parts: &[&[u8]]) -> (Vec<u8>, Option<bool>, usize) {
    let mut d = ChunkedDecoder::new(MAX);
    let mut out = Vec::new();
    let mut consumed = 0;
    for part in parts {
        match d.feed(part, &mut out) {
            Ok(n) => {
                assert!(n <= part.len());
                consumed += n;
                if d.is_done() {
                    return (out, Some(true), consumed);
                }
                if n < part.len() {
                    return (out, Some(true), consumed);
                }
            }
            Err(_) => return (out, Some(false), consumed),
        }
    }
    (out, None, consumed)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    let at = usize::from(split).min(body.len());
    let (whole, whole_end, whole_used) = decode(&[body]);
    assert!(whole.len() <= MAX, "decoded past the limit");
    let (parts, parts_end, parts_used) = decode(&[&body[..at], &body[at..]]);
    assert_eq!(whole_end, parts_end, "the split changed how the body ended");
    if whole_end == Some(true) {
        assert_eq!(whole, parts, "the split changed the decoded body");
        assert_eq!(whole_used, parts_used);
    }
});
