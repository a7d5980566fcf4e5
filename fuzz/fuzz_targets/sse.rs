//! SSE framing of upstream answers: the `message` events found in a body.
//! Invariants: never a panic; no event's data is longer than the body;
//! there are no more events than blank lines ending them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut events = 0usize;
    toolgate_upstream::sse::find_event(data, |d| {
        events += 1;
        assert!(d.len() <= data.len(), "an event longer than its body");
        false
    });
    let line_ends = data.iter().filter(|&&b| b == b'\n' || b == b'\r').count();
    assert!(events <= line_ends);
});
