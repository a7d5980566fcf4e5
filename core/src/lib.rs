//! toolgate-core: the shared vocabulary of the gateway.
//!
//! Every other crate speaks these types: the operator's configuration as
//! written ([`config`]), the zero-copy view of one MCP JSON-RPC request
//! ([`jsonrpc`]), the vocabulary of output rules ([`output`]), the MCP protocol constants ([`protocol`]), API-key identity
//! ([`identity`]), the keyed MAC ([`mac`]), the single refusal type and its mapping to the wire
//! ([`refusal`]) and the audit record ([`audit`]).
//!
//! This crate does no I/O: no sockets, no files, no clocks beyond what a
//! caller passes in. That keeps every rule here testable as a pure function.

pub mod audit;
pub mod config;
pub mod identity;
pub mod jsonrpc;
pub mod jwt;
pub mod mac;
pub mod output;
pub mod protocol;
pub mod refusal;
pub mod secret;
pub mod subtoken;
pub mod toolname;
pub mod upstream_url;
