//! The zero-copy JSON-RPC view of a request body, differentially against
//! serde_json: toolgate accepts no document serde_json refuses, and for a
//! `tools/call` it reads the same tool name serde_json does. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolgate_core::jsonrpc::{JsonParser, RpcRequest, ToolCall};

fuzz_target!(|data: &[u8]| {
    let mut parser = JsonParser::new();
    let Ok(tape) = parser.parse(data) else {
        return;
    };
    let reference: serde_json::Value = match serde_json::from_slice(data) {
        Ok(v) => v,
        Err(e) => panic!("toolgate accepted a document serde_json refuses: {e}"),
    };
    let Ok(req) = RpcRequest::from_tape(&tape) else {
        return;
    };
    let _ = req.meta();
    let _ = req.envelope_version();
    let _ = req.is_notification();
    if let Ok(call) = ToolCall::from_request(&req) {
        assert_eq!(
            Some(call.name),
            reference["params"]["name"].as_str(),
            "tool names differ"
        );
    }
});
