//! SSE framing of upstream answers: the `message` events found in a body,
//! whole and as it streams in. Invariants: never a panic; no event's data
//! is longer than the body; there are no more events than blank lines
//! ending them; the events are the same however the body is cut into
//! pieces on its way in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolgate_upstream::sse::{find_event, Events};

fuzz_target!(|data: &[u8]| {
    let mut whole: Vec<Vec<u8>> = Vec::new();
    find_event(data, |d| {
        assert!(d.len() <= data.len(), "an event longer than its body");
        whole.push(d.to_vec());
        false
    });
    let line_ends = data.iter().filter(|&&b| b == b'\n' || b == b'\r').count();
    assert!(whole.len() <= line_ends);

    // The first byte picks the size of the pieces.
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut streamed: Vec<Vec<u8>> = Vec::new();
    let mut events = Events::default();
    for piece in data.chunks(step) {
        events.feed(piece, |d| {
            streamed.push(d.to_vec());
            false
        });
    }
    assert_eq!(streamed, whole, "cut into pieces of {step}");
});
