//! MCP toward upstreams: toolgate as a client of each upstream server.

pub mod sse;
pub mod upstream;
