//! Matching an upstream's answer to its request by the `id` a scan of the
//! top-level members finds, differentially against serde_json: on every
//! document both accept as a JSON-RPC reply (an object with `result` or
//! `error`, no repeated key), the scan finds the id serde_json reads, or
//! none when that id is not an unsigned integer. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolgate_core::jsonrpc::JsonParser;
use toolgate_core::reply_id::reply_id;

fuzz_target!(|data: &[u8]| {
    let found = reply_id(data);
    // What the answer path keeps is parsed in full: only documents the
    // strict parser accepts (valid JSON, no repeated key) are compared.
    if JsonParser::new().parse(data).is_err() {
        return;
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Some(obj) = v.as_object() else {
        assert_eq!(found, None, "not an object");
        return;
    };
    let is_reply = obj.contains_key("result") || obj.contains_key("error");
    let expected = if is_reply {
        obj.get("id").and_then(serde_json::Value::as_u64)
    } else {
        None
    };
    // An escaped key ("i\u0064") is not read as `id`: the scan may miss an
    // id serde_json finds, never find a different one.
    match (found, expected) {
        (Some(f), Some(e)) => assert_eq!(f, e, "ids differ"),
        (Some(f), None) => panic!("the scan found id {f} where there is none"),
        (None, _) => {}
    }
});
