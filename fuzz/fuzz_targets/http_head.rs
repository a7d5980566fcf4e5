//! The agent listener's HTTP/1.1 head parser (request line, headers, body
//! framing: Content-Length, chunked, 100-continue). Invariants: never a
//! panic; a parsed head lies inside the buffer and within the limits, and
//! every offset it hands out points into the bytes it was parsed from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolgate_ingress::http::head::{parse_head, Limits};

const LIMITS: Limits = Limits {
    max_header_bytes: 8192,
    max_headers: 64,
    max_body_bytes: 1 << 20,
};

fuzz_target!(|data: &[u8]| {
    let Ok(Some(head)) = parse_head(data, &LIMITS) else {
        return;
    };
    assert!(head.len <= data.len(), "head longer than the input");
    assert!(head.len <= LIMITS.max_header_bytes, "head over the limit");
    assert!(head.headers.len() <= LIMITS.max_headers);
    assert!(head.path.end <= head.len);
    for (name, value) in &head.headers {
        assert!(name.end <= head.len && value.end <= head.len);
    }
    let _ = head.path(data);
    let _ = head.header(data, "content-length");
    let _ = head.count(data, "transfer-encoding");
});
