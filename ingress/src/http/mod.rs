//! HTTP/1.1 toward agents: head parsing, the connection loop and response
//! writing. (Chunked decoding, queued reads and the upstream client pool
//! are `toolgate-net`'s, shared with the upstream side.)

pub mod conn;
pub mod early;
pub mod head;
pub mod response;
pub mod server;
