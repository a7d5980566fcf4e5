//! HTTP/1.1 on both sides of the gateway: the agent-facing server loop and
//! the upstream client, sharing head parsing, chunked decoding and response
//! writing.

pub mod chunked;
pub mod client;
pub mod conn;
pub mod head;
pub mod queued;
pub mod response;
pub mod server;
